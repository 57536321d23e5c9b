"DPO (cai_repro.dpo, `cai-repro dpo`): the pairs from soft labels, a run on the tiny model that saves an adapter, and resume after a kill."
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai_repro.config import DPOSettings
from cai_repro.dpo import dpo_pairs, train_dpo
from cai_repro.preference_model import synthetic_labels, write_labels

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "cai-repro"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TINY = DPOSettings(steps=2, batch_size=2, max_length=96, save_steps=1, heldout=0.25, min_margin=0.0)


def test_pairs_keep_the_soft_label_and_never_train_on_held_out_pairs():
    labels = synthetic_labels(16, 0)
    labels[0] = {**labels[0], "heldout": True}
    labels[1] = {**labels[1], "p_a": 0.49}  # a near-tie, preferring B
    train, held, counts = dpo_pairs(labels, DPOSettings(min_margin=0.05, heldout=0.25))
    ids = {r["id"] for r in train}
    assert "synthetic-0" not in ids and "synthetic-0" in {r["id"] for r in held}
    assert "synthetic-1" not in ids and counts["near_ties_dropped"] >= 1
    assert not ids & {r["id"] for r in held}
    assert all(r["p"] >= 0.55 for r in train)
    # with no margin the near-tie trains, with B as chosen and p = 0.51
    train0, _, _ = dpo_pairs(labels, DPOSettings(min_margin=0.0, heldout=0.25))
    row = next(r for r in train0 if r["id"] == "synthetic-1")
    assert row["p"] == 0.51 and row["chosen"].strip() == labels[1]["response_b"].strip()


def test_train_dpo_saves_a_loadable_adapter(tmp_path):
    from cai_repro.models import load_model
    train, held, _ = dpo_pairs(synthetic_labels(12, 0), TINY)
    out = train_dpo("tiny-random", train, held, tmp_path / "policy", TINY, progress=False)
    assert (out / "adapter_model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert json.loads((out / "cai_repro.json").read_text())["kind"] == "dpo"
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_steps"] == 2 and m["heldout_pairs"] == len(held) and 0 <= m["heldout"]["rewards/accuracies"] <= 1
    model, _ = load_model(str(out))
    assert model.config.model_type == "gemma3_text"


def dpo_args(labels, out, steps=12):
    return ["dpo", "--policy", "tiny-random", "--labels", labels, "--out", out, "--steps", steps, "--save-steps", 1,
            "--batch-size", 2, "--max-length", 96, "--min-margin", 0.0, "--seed", 3]


def test_a_killed_dpo_run_resumes_from_its_last_checkpoint(tmp_path):
    labels = write_labels(tmp_path / "labels.jsonl", synthetic_labels(16, 0))
    out = tmp_path / "killed"
    ckpts = tmp_path / "killed.checkpoints"
    proc = subprocess.Popen([str(EXE), *map(str, dpo_args(labels, out))], cwd=ROOT, env={**os.environ, **ONE_THREAD},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    done = lambda: [c for c in ckpts.glob("checkpoint-*") if (c / "trainer_state.json").is_file()]
    while time.time() < deadline and proc.poll() is None and not done(): time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.returncode} {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert not out.exists()
    (ck,) = done()  # save_total_limit=1: the last finished checkpoint
    k = int(ck.name.split("-")[1])
    assert 1 <= k < 12
    # mark the checkpoint's log: a rerun that resumes from it carries the mark into the final log; a restart would not
    state = json.loads((ck / "trainer_state.json").read_text())
    state["log_history"][0]["resumed_mark"] = True
    (ck / "trainer_state.json").write_text(json.dumps(state))
    p = subprocess.run([str(EXE), *map(str, dpo_args(labels, out))], cwd=ROOT, env={**os.environ, **ONE_THREAD},
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    log = json.loads((out / "train_log.json").read_text())
    assert log[0].get("resumed_mark") is True
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == list(range(1, 13))
    # and the losses are those of an uninterrupted run
    p = subprocess.run([str(EXE), *map(str, dpo_args(labels, tmp_path / "full"))], cwd=ROOT, env={**os.environ, **ONE_THREAD},
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    full = [r["loss"] for r in json.loads((tmp_path / "full" / "train_log.json").read_text()) if "loss" in r]
    assert [r["loss"] for r in log if "loss" in r] == pytest.approx(full, abs=1e-5)
