"""Shared pieces of the performance suite: timing, peak memory, the machine, output.

Every figure the suite reports is a ratio measured side by side in the same process, because the machines this
project runs on are noisy (2 shared cores). Absolute numbers are printed too, with the machine they came from.
"""
from __future__ import annotations

import json
import platform
import resource
import sys

import torch


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def peak_rss_mb() -> float:
    "Peak resident memory of this process so far, in MiB (Linux reports KiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict, as_json: bool):
    "Print a readable summary, and with --json one JSON object on the last line."
    if not as_json:
        for k, v in result.items(): print(f"{k}: {v}")
    print(json.dumps(result) if as_json else "", file=sys.stdout)
