"""The OpenAI-compatible engine against a real server: llama.cpp's (`cai-repro serve`) on the embedded Gemma 3 270M.

`make test` installs `llama-cpp-python[server]`; without it these tests skip."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, cli

pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed (make test installs it)")

from cai_repro.engines import free_port, serve_command, wait_until_up  # noqa: E402

MARGIN = 0.3  # nats: items whose in-process log-odds between the two answers is smaller are near-ties
# (measured: the served and in-process log-odds differ by at most 0.25 nats on the first 16 HHH dev items)


def start_server(port, log, scoring=False):
    proc = subprocess.Popen(serve_command(port, scoring=scoring), stdout=log, stderr=subprocess.STDOUT)
    wait_until_up(f"http://127.0.0.1:{port}/v1", proc=proc)
    return proc


def stop(proc):
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()


@pytest.fixture
def scoring_server(tmp_path):
    "`cai-repro serve`: with the prompt logits that log-probs need."
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = start_server(port, log, scoring=True)
    yield f"http://127.0.0.1:{port}/v1"
    stop(proc)
    log.close()


def engine_flags(url, *extra):
    return ["--model", "gemma-3-270m", "--engine", "openai", "--base-url", url, *extra]


def test_eval_mc_through_the_server_agrees_with_float32_in_process(scoring_server, tmp_path, anthropic_dir):
    """Same weights, different arithmetic (llama.cpp's 4-bit kernels vs float32 on the de-quantised weights): the
    preferred answer must agree on every item whose in-process log-odds exceeds MARGIN."""
    args = ["--data", "hhh-dev", "--limit", 16]
    code, _, err = cli("eval", "mc", *engine_flags(scoring_server), *args, "--out", tmp_path / "served.json", timeout=900)
    assert code == 0, err[-2000:]
    code, _, err = cli("eval", "mc", "--model", "gemma-3-270m", "--dtype", "float32", *args, "--out", tmp_path / "local.json",
                       timeout=900)
    assert code == 0, err[-2000:]
    served, local = (json.loads((tmp_path / f).read_text()) for f in ("served.json", "local.json"))
    assert served["n"] == local["n"] == 16
    odds = lambda r: np.array([np.log(i["probs"][0] / i["probs"][1]) for i in r["items"]])
    s_odds, l_odds = odds(served), odds(local)
    clear = np.abs(l_odds) > MARGIN
    assert clear.sum() >= 4, f"only {clear.sum()} items beyond the margin: the check says little"
    assert (np.sign(s_odds) == np.sign(l_odds))[clear].all(), list(zip(l_odds.round(3), s_odds.round(3)))
    assert np.corrcoef(s_odds, l_odds)[0, 1] > 0.8, list(zip(l_odds.round(3), s_odds.round(3)))


def test_critique_revise_through_the_server_survives_its_death(tmp_path):
    """4 prompts x 2 revisions through `cai-repro serve --no-scoring`. The server is killed once the first record is
    written: the run exits 2 naming the server, every line written is a whole record, and after a restart the same
    command finishes the rest without redoing what was done."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = open(tmp_path / "server.log", "w")
    proc = start_server(port, log)
    out = tmp_path / "cr"
    flags = ["critique-revise", *engine_flags(url, "--retries", 1), "--limit", 4, "--revisions", 2, "--max-new-tokens", 8,
             "--batch-size", 1, "--out", out]
    exe = ROOT / ".venv/bin/cai-repro"
    run = subprocess.Popen([str(exe) if exe.exists() else "cai-repro", *map(str, flags)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = out / "records.jsonl"
    t0 = time.time()
    while not (records.exists() and records.read_text().count("\n") >= 1):
        assert run.poll() is None, run.stderr.read()[-2000:]
        assert time.time() - t0 < 600, "no record after 10 minutes"
        time.sleep(0.2)
    stop(proc)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 2, err[-2000:]
    assert url in err and "rerun the same command to resume" in err, err[-2000:]
    before = [json.loads(l) for l in records.read_text().splitlines()]  # every line a whole record
    assert 1 <= len(before) < 4
    proc = start_server(port, log)
    try:
        code, _, err = cli(*flags, timeout=900)
    finally:
        stop(proc)
        log.close()
    assert code == 0, err[-2000:]
    after = [json.loads(l) for l in records.read_text().splitlines()]
    assert len(after) == 4 and len({r["id"] for r in after}) == 4
    assert after[:len(before)] == before  # the finished records were kept, not redone
    for r in after:
        assert len(r["steps"]) == 2 and all(isinstance(st["critique"], str) and isinstance(st["revision"], str) for st in r["steps"])
        assert all("\n\nHuman:" not in st["revision"] for st in r["steps"])  # stop strings reached the server, or were cut
