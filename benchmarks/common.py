"""Shared pieces of the performance suite: the hardware ceiling, timing, peak memory.

Every figure the suite reports is a ratio measured side by side in the same process, because the machines this
project runs on are noisy (2 shared cores). Absolute numbers are printed too, with the machine they came from.
"""
from __future__ import annotations

import json
import platform
import resource
import sys
import time
from contextlib import contextmanager

import torch


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


@contextmanager
def timer(out: dict, key: str):
    t0 = time.perf_counter()
    yield
    out[key] = time.perf_counter() - t0


def peak_rss_mb() -> float:
    "Peak resident memory of this process so far, in MiB (Linux reports KiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def ceiling_prefill_tok_s(model, batch: int = 8, length: int = 256, repeats: int = 3, seed: int = 0) -> float:
    "Tokens/s of the model body alone (hidden states, no LM head) at batch × length: what prefill-bound work can reach."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 1000, (batch, length), generator=g).to(model.device)
    body = model.get_decoder()
    body(input_ids=ids)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); body(input_ids=ids); best = min(best, time.perf_counter() - t0)
    return batch * length / best


@torch.no_grad()
def full_forward_tok_s(model, batch: int = 8, length: int = 256, repeats: int = 2, seed: int = 0) -> float:
    "Tokens/s of a full forward with the LM head at every position (the naive way to get log-probs)."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 1000, (batch, length), generator=g).to(model.device)
    model(input_ids=ids)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); model(input_ids=ids); best = min(best, time.perf_counter() - t0)
    return batch * length / best


def emit(result: dict, as_json: bool):
    "Print a readable summary, and with --json one JSON object on the last line."
    if not as_json:
        for k, v in result.items(): print(f"{k}: {v}")
    print(json.dumps(result) if as_json else "", file=sys.stdout)
