"Faults that must be detected rather than trained on: two writers, a stale lock, duplicate records, a damaged cache, a NaN."
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai_repro.artifacts import InputError, RecordStore, Stage, read_records

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "cai-repro"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start(*args, cwd=ROOT) -> subprocess.Popen:
    return subprocess.Popen([str(EXE), *map(str, args)], cwd=cwd, env={**os.environ, **ONE_THREAD},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def critique_revise(out, limit=40) -> list[str]:
    return ["critique-revise", "--model", "tiny-random", "--prompts", "red-team", "--limit", limit, "--revisions", 2,
            "--max-new-tokens", 24, "--batch-size", 4, "--out", out]


def wait_for(cond, timeout=120.0):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout: raise TimeoutError("condition not met")
        time.sleep(0.2)


def lock_holder(out: Path) -> str:
    lock = out.parent / f".{out.name}.lock"
    return lock.read_text().strip() if lock.exists() else ""


def record_ids(out: Path) -> list[str]:
    f = out / "records.jsonl"
    return [json.loads(l)["id"] for l in f.read_text().splitlines() if l.strip()] if f.exists() else []


def test_a_second_writer_is_refused_and_the_first_finishes_alone(tmp_path):
    out = tmp_path / "cr"
    first = start(*critique_revise(out))
    wait_for(lambda: lock_holder(out) == str(first.pid))
    t0 = time.time()
    second = subprocess.run([str(EXE), *map(str, critique_revise(out))], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **ONE_THREAD})
    assert second.returncode == 2, second.stderr
    assert time.time() - t0 < 60  # at once, not after the first finished
    assert str(out) in second.stderr and f"PID {first.pid}" in second.stderr, second.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read()
    ids = record_ids(out)
    assert len(ids) == 40 and len(set(ids)) == 40  # one record per prompt


def test_a_killed_writer_leaves_no_lock_that_blocks_the_rerun(tmp_path):
    out = tmp_path / "cr"
    first = start(*critique_revise(out))
    wait_for(lambda: len(record_ids(out)) >= 4)
    first.send_signal(signal.SIGKILL); first.wait()
    assert lock_holder(out) == str(first.pid)  # the file is still there, naming a dead process
    done_before = len(record_ids(out))
    p = subprocess.run([str(EXE), *map(str, critique_revise(out))], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **ONE_THREAD})
    assert p.returncode == 0, p.stderr
    ids = record_ids(out)
    assert done_before < 40 and len(ids) == 40 and len(set(ids)) == 40


def test_duplicate_keys_are_an_error_on_every_read(tmp_path):
    line = json.dumps({"id": "p1", "prompt": "q", "category": "c", "harmful": True, "initial": "a", "steps": []})
    f = tmp_path / "records.jsonl"
    f.write_text(line + "\n" + line.replace('"p1"', '"p2"') + "\n" + line + "\n")
    with pytest.raises(InputError, match=r"records.jsonl:3: duplicate id 'p1' \(first on line 1\)"): read_records(f)
    with pytest.raises(InputError, match="records.jsonl:3: duplicate id 'p1'"): RecordStore(f)
    p = subprocess.run([str(EXE), *map(str, ["sft", "--model", "tiny-random", "--records", f, "--out", tmp_path / "m", "--n-helpful", 0])],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "records.jsonl:3: duplicate id 'p1'" in p.stderr, p.stderr
    store = RecordStore(tmp_path / "new.jsonl"); store.append({"id": "x"})
    with pytest.raises(KeyError, match="already stored"): store.append({"id": "x"})


def test_a_truncated_safetensors_file_in_the_cache_is_detected_and_rebuilt(tmp_path):
    from cai_repro.models import load_model, load_tiny_random
    builds = []
    def build(work):
        builds.append(work)
        model, tok = load_tiny_random(0)
        model.save_pretrained(work / "model"); tok.save_pretrained(work / "model")
    stage = Stage("model_copy", {"seed": 0}, root=tmp_path / "stages")
    d = stage.run(build, verbose=False)
    weights = d / "model" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="model.safetensors: has .* bytes, .* when it was written"):
        load_model(str(d / "model"))
    assert stage.run(build, verbose=False) == d and len(builds) == 2  # set aside and rebuilt
    load_model(str(d / "model"))
    assert list((tmp_path / "stages").glob(".model_copy-*.damaged-*"))  # the damaged copy is kept for inspection


@pytest.fixture
def records(tmp_path) -> Path:
    rows = [{"id": f"p{i}", "prompt": f"question {i}?", "category": "c", "harmful": True, "initial": "a",
             "steps": [{"revision": f"A careful answer number {i}, with some detail."}]} for i in range(8)]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "records.jsonl"


def test_a_nan_in_sft_stops_the_run_with_exit_2_and_keeps_the_last_checkpoint(tmp_path, records):
    args = [str(EXE), *map(str, ["sft", "--model", "tiny-random", "--records", records, "--out", tmp_path / "m", "--n-helpful", 0,
                                 "--lr", "1e30", "--batch-size", 4, "--epochs", 3])]
    p = subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, **ONE_THREAD})
    assert p.returncode == 2 and "step" in p.stderr and "not finite" in p.stderr, p.stderr
    ckpts = sorted((tmp_path / "m.checkpoints").glob("checkpoint-*"))
    assert ckpts and not (tmp_path / "m").exists()  # no model written from NaN weights; the checkpoint is kept
    mtimes = {c: c.stat().st_mtime_ns for c in ckpts}
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, **ONE_THREAD})
    assert again.returncode == 2, again.stderr
    assert all(c.stat().st_mtime_ns == t for c, t in mtimes.items())  # resumed from it, not rewritten from scratch


def test_a_nan_in_pm_training_stops_the_run_with_exit_2(tmp_path):
    from cai_repro.preference_model import synthetic_labels, write_labels
    labels = write_labels(tmp_path / "labels.jsonl", synthetic_labels(8, 0))
    p = subprocess.run([str(EXE), *map(str, ["pm", "train", "--model", "tiny-random", "--labels", labels, "--out", tmp_path / "pm",
                                             "--helpful", "none", "--lr", "1e30", "--max-steps", 6, "--batch-size", 2, "--save-steps", 1])],
                       capture_output=True, text=True, timeout=600, env={**os.environ, **ONE_THREAD})
    assert p.returncode == 2 and "not finite" in p.stderr and "step" in p.stderr, p.stderr
    assert not (tmp_path / "pm").exists() and any((tmp_path / "pm.partial" / "checkpoints").glob("checkpoint-*"))
