import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny():
    from cai_repro.models import load_tiny_random
    return load_tiny_random(0)


@pytest.fixture(scope="session")
def anthropic_dir():
    "Anthropic's reference files; tests that need them skip when this machine has none."
    from cai_repro.artifacts import anthropic_data_dir
    d = anthropic_data_dir()
    if d is None: pytest.skip("Anthropic's reference data (../shared/anthropic-cai) is not on this machine")
    return d


def cli(*args, env=None, timeout=300):
    "Run the installed `cai-repro` console script; return (exit code, stdout, stderr)."
    exe = Path(sys.executable).parent / "cai-repro"
    p = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})}, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr
