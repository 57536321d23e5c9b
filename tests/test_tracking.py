"Experiment tracking: `--report-to` (and a profile's `run.report_to`) reaches every trainer; `none` writes nothing; a missing backend is a clear error."
import json
from pathlib import Path
from unittest import mock

import pytest

from conftest import cli
from cai_repro.preference_model import synthetic_labels, write_labels

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def records(tmp_path):
    rows = [{"id": f"p{i}", "prompt": f"Question {i}?", "category": "test", "initial": "No.",
             "steps": [{"revision": f"A careful answer number {i}, with some detail."}]} for i in range(8)]
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "records.jsonl"


def events(d: Path) -> list[Path]:
    return sorted(Path(d).rglob("events.out.tfevents.*"))


def sft(records, out, *extra):
    return cli("sft", "--model", "tiny-random", "--records", records, "--out", out, "--n-helpful", 0, "--epochs", 1,
               "--batch-size", 4, "--max-length", 64, *extra, env=ONE_THREAD, timeout=600)


def test_sft_report_to_tensorboard_writes_event_files_and_none_writes_none(tmp_path, records):
    code, _, err = sft(records, tmp_path / "tb", "--report-to", "tensorboard")
    assert code == 0, err
    assert events(tmp_path / "tb.checkpoints" / "runs")
    code, _, err = sft(records, tmp_path / "quiet")  # the default: none
    assert code == 0, err
    assert not events(tmp_path / "quiet.checkpoints") and not events(tmp_path / "quiet")


def test_a_profiles_report_to_reaches_the_trainer(tmp_path, records):
    (tmp_path / "p.yaml").write_text("run: {model: tiny-random, report_to: tensorboard}\nsft: {n_helpful: 0, epochs: 1, batch_size: 4, max_length: 64}\n")
    code, _, err = cli("sft", "--profile", tmp_path / "p.yaml", "--records", records, "--out", tmp_path / "m", env=ONE_THREAD, timeout=600)
    assert code == 0, err
    assert events(tmp_path / "m.checkpoints" / "runs")


def test_pm_rl_and_dpo_report_to_tensorboard(tmp_path):
    labels = write_labels(tmp_path / "labels.jsonl", synthetic_labels(12, 0))
    code, _, err = cli("pm", "train", "--model", "tiny-random", "--labels", labels, "--out", tmp_path / "pm", "--max-steps", 2,
                       "--batch-size", 4, "--max-length", 64, "--helpful", "none", "--report-to", "tensorboard", env=ONE_THREAD, timeout=600)
    assert code == 0, err
    assert events(tmp_path / "pm" / "runs")  # kept when the PM's checkpoints are cleared
    code, _, err = cli("rl", "--policy", "tiny-random", "--pm", "tiny-random", "--steps", 2, "--batch-size", 2, "--minibatch-size", 2,
                       "--max-new-tokens", 4, "--n-prompts", 4, "--save-every", 2, "--out", tmp_path / "ppo", "--report-to", "tensorboard",
                       "--quiet", env=ONE_THREAD, timeout=600)
    assert code == 0, err
    assert events(tmp_path / "ppo" / "runs")  # our PPO loop's own logger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(events(tmp_path / "ppo" / "runs")[0].parent)); acc.Reload()
    assert [e.step for e in acc.Scalars("train/reward_mean")] == [1, 2]
    code, _, err = cli("dpo", "--policy", "tiny-random", "--labels", labels, "--out", tmp_path / "dpo", "--steps", 1, "--batch-size", 2,
                       "--max-length", 64, "--report-to", "tensorboard", "--quiet", env=ONE_THREAD, timeout=600)
    assert code == 0, err
    assert events(tmp_path / "dpo.checkpoints" / "runs")


def test_a_missing_backend_stops_before_training_with_what_to_install(tmp_path, records):
    import importlib.util
    from cai_repro.cli import main
    real = importlib.util.find_spec
    with mock.patch("importlib.util.find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a)):
        with mock.patch("sys.stderr") as err:
            code = main(["sft", "--model", "tiny-random", "--records", str(records), "--out", str(tmp_path / "m"), "--n-helpful", "0",
                         "--report-to", "tensorboard"])
    assert code == 2
    msg = "".join(str(c.args[0]) for c in err.write.call_args_list)
    assert "tensorboard is not installed: pip install 'cai-repro[tracking]'" in msg, msg
    assert not (tmp_path / "m").exists()
