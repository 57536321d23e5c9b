"How a run becomes a record (issue 20): the run's commit, relative paths, top-level figures, adapters, readable numbers."
import json
import os
import re
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

import cai_repro.reproduce as reproduce_mod
from cai_repro.artifacts import InputError
from cai_repro.record import (MAX_ADAPTER, format_value, is_reading, record_run, relative_paths, render_reading,
                              reused_stages)
from cai_repro.reproduce import checkout_state, reproduce

ROOT = Path(__file__).resolve().parent.parent


def fake_run(tmp_path: Path, run_entry: dict | None, stage_values: dict | None = None) -> tuple[Path, Path]:
    "A finished run (one figure, one executed notebook) and its stage cache; returns (run, stages)."
    run, stages = tmp_path / "run", tmp_path / "stages"
    (run / "figures").mkdir(parents=True)
    stages.mkdir()
    (run / "figures" / "fig5.png").write_bytes(b"png")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Hi")]), run / "01_x.ipynb")
    summary = {"profile": "cpu", "stages": {"01_x": {"wall_s": 2.0, **(stage_values or {})}}}
    if run_entry is not None: summary["run"] = run_entry
    (run / "summary.json").write_text(json.dumps(summary))
    return run, stages


def make_stage(stages: Path, name: str, adapter_bytes: int | None = None, age_s: float = 0.0) -> Path:
    d = stages / name
    (d / "model").mkdir(parents=True)
    (d / "STAGE.json").write_text(json.dumps({"name": name.rsplit("-", 1)[0], "key": name.rsplit("-", 1)[1]}))
    if age_s: os.utime(d / "STAGE.json", (time.time() - age_s,) * 2)
    if adapter_bytes is not None:
        (d / "adapter").mkdir()
        (d / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * adapter_bytes)
        (d / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "gemma-3-270m", "r": 8}')
    return d


# --- reproduce writes which code ran ---------------------------------------------------------------------------------

def one_notebook(nbs: Path):
    nbs.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("profile = 'smoke'\nrun_dir = None", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from cai_repro.artifacts import write_summary\nwrite_summary(run_dir, '00_ok', {'x': 1})")]
    nbformat.write(nb, nbs / "00_ok.ipynb")


def test_reproduce_writes_the_commit_and_a_resume_after_a_change_is_marked(tmp_path, monkeypatch):
    one_notebook(tmp_path / "nbs")
    out = tmp_path / "run"
    s = reproduce("smoke", out=out, nbs_dir=tmp_path / "nbs", record=False)
    state = checkout_state()
    assert s["run"]["commit"] == state["commit"] and s["run"]["clean"] in (True, False, None)
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        assert s["run"]["commit"] == head
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["run"]["started_s"] == s["run"]["started_s"] and on_disk["stages"]["00_ok"]["x"] == 1
    # resumed with the same commit: the entry is kept (one more session)
    s2 = reproduce("smoke", out=out, nbs_dir=tmp_path / "nbs", record=False)
    assert (s2["run"]["commit"], s2["run"]["started_s"], len(s2["run"]["sessions"])) == (s["run"]["commit"], s["run"]["started_s"], 2)
    assert "commits" not in s2["run"]
    # resumed after the code changed: both commits, not clean, and no record without force
    monkeypatch.setattr(reproduce_mod, "checkout_state", lambda root=None: {**state, "commit": "f" * 40, "clean": True})
    s3 = reproduce("smoke", out=out, nbs_dir=tmp_path / "nbs", record=False)
    assert s3["run"]["commits"] == [state["commit"], "f" * 40] and s3["run"]["commit"] is None and s3["run"]["clean"] is False
    with pytest.raises(InputError, match="the run mixes commits"):
        record_run(out, tmp_path / "report", stages_root=tmp_path / "stages")
    assert not (tmp_path / "report").exists() and not (tmp_path / "figures").exists()


def test_a_run_from_before_runs_were_stamped_counts_as_unknown_code(tmp_path, monkeypatch):
    one_notebook(tmp_path / "nbs")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"profile": "smoke", "stages": {"00_old": {"wall_s": 1.0}}}))
    monkeypatch.setattr(reproduce_mod, "checkout_state", lambda root=None: {"checkout": None, "commit": "a" * 40, "clean": True})
    s = reproduce("smoke", out=tmp_path / "run", nbs_dir=tmp_path / "nbs", record=False)
    assert s["run"]["commits"] == [None, "a" * 40] and s["run"]["clean"] is False


# --- record_run -----------------------------------------------------------------------------------------------------

def test_the_record_takes_the_runs_commit_not_the_recording_checkouts(tmp_path):
    run, stages = fake_run(tmp_path, {"commit": "1234abcd" * 5, "clean": False, "started_s": time.time()})
    out = record_run(run, tmp_path / "report", stages_root=stages)
    rec = json.loads((out / "summary.json").read_text())["record"]
    assert (rec["commit"], rec["clean"]) == ("1234abcd" * 5, False)
    assert {"commit", "clean", "date", "wall_s", "reused_stages"} <= set(rec) and rec["wall_s"] == 2.0


@pytest.mark.parametrize("entry", [None, {"commit": None, "clean": None}])
def test_a_run_without_a_commit_is_refused_unless_forced(tmp_path, entry):
    run, stages = fake_run(tmp_path, entry)
    with pytest.raises(InputError, match="has no commit"):
        record_run(run, tmp_path / "report", stages_root=stages)
    rec = json.loads((record_run(run, tmp_path / "report", stages_root=stages, force=True) / "summary.json").read_text())["record"]
    assert rec["commit"] is None and "has no commit" in rec["forced"]


def test_the_cli_exits_2_on_a_run_without_a_commit(tmp_path):
    from cai_repro.cli import main
    run, _ = fake_run(tmp_path, None)
    assert main(["record", str(run), "--to", str(tmp_path / "report")]) == 2
    assert not (tmp_path / "report").exists()


def test_the_record_keeps_no_path_of_the_machine(tmp_path):
    stages_root = tmp_path / "stages"
    sl = f"{stages_root}/sl_cai-0123456789ab/model"
    run, stages = fake_run(tmp_path, {"commit": "c" * 40, "clean": True, "started_s": time.time(), "checkout": str(tmp_path)},
                           {"sl_cai_dir": sl, "nested": {"pm": [f"{stages_root}/preference_model-0123456789ab"]},
                            "figure": f"{tmp_path}/run/figures/fig5.png"})
    make_stage(stages, "sl_cai-0123456789ab")
    out = record_run(run, tmp_path / "report", stages_root=stages)
    text = (out / "summary.json").read_text()
    assert str(tmp_path) not in text
    summary = json.loads(text)
    x = summary["stages"]["01_x"]
    assert x["sl_cai_dir"] == "<stages>/sl_cai-0123456789ab/model" and x["nested"]["pm"] == ["<stages>/preference_model-0123456789ab"]
    assert x["figure"] == "<run>/figures/fig5.png" and summary["run"]["checkout"] == "<checkout>"
    assert summary["record"]["run_dir"] == "run"   # relative to the checkout the run executed from


def test_relative_paths_prefers_the_deepest_root_and_leaves_lookalikes():
    s = {"a": "/co/runs/cpu/x.png", "b": "/co/profiles/cpu.yaml", "c": "/co/runs/cpu2/y", "d": "/cold/x", "e": 3,
         "f": ["/st/labels-1/labels.jsonl"]}
    assert relative_paths(s, "/co/runs/cpu", "/st", "/co") == {
        "a": "<run>/x.png", "b": "<checkout>/profiles/cpu.yaml", "c": "<checkout>/runs/cpu2/y", "d": "/cold/x", "e": 3,
        "f": ["<stages>/labels-1/labels.jsonl"]}


def test_figures_go_to_a_top_level_folder_and_replace_the_old_ones(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "figures").mkdir(parents=True)
    (checkout / "figures" / "stale.png").write_bytes(b"old")
    run, stages = fake_run(tmp_path, {"commit": "c" * 40, "clean": True, "started_s": time.time()})
    out = record_run(run, checkout / "report", stages_root=stages)
    assert out == checkout / "report" and not (out / "figures").exists()
    assert sorted(p.name for p in (checkout / "figures").iterdir()) == ["fig5.png", "where_the_time_goes.png"]  # stale.png gone
    assert sorted(p.name for p in checkout.iterdir()) == ["figures", "report"]   # no .partial or .old left
    record_run(run, checkout / "report", stages_root=stages, figures=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "fig5.png").is_file()


def test_small_adapters_are_copied_and_reused_stages_listed(tmp_path, monkeypatch):
    run, stages = fake_run(tmp_path, {"commit": "c" * 40, "clean": True, "started_s": time.time() - 10},
                           {"sl_cai_dir": f"{tmp_path}/stages/sl_cai-0123456789ab/model", "stage": "preference_model-0123456789ab",
                            "labels_stage": "labels-0123456789ab"})
    make_stage(stages, "sl_cai-0123456789ab", adapter_bytes=1000)
    make_stage(stages, "preference_model-0123456789ab", adapter_bytes=MAX_ADAPTER + 1)   # too big for the record
    make_stage(stages, "labels-0123456789ab", age_s=3600)                                # cached an hour before the run
    out = record_run(run, tmp_path / "report", stages_root=stages)
    got = sorted(str(p.relative_to(out / "adapters")) for p in (out / "adapters").rglob("*") if p.is_file())
    assert got == ["sl_cai-0123456789ab/adapter_config.json", "sl_cai-0123456789ab/adapter_model.safetensors"]
    rec = json.loads((out / "summary.json").read_text())["record"]
    assert rec["adapters"] == ["sl_cai-0123456789ab"] and rec["reused_stages"] == ["labels-0123456789ab"]
    out2 = record_run(run, tmp_path / "report2", stages_root=stages, figures=tmp_path / "f2", adapters=False)
    assert not (out2 / "adapters").exists()


def test_reused_stages_unknown_without_a_start(tmp_path):
    d = make_stage(tmp_path, "labels-0123456789ab", age_s=100)
    assert reused_stages({"labels-0123456789ab": d}, None) is None
    assert reused_stages({"labels-0123456789ab": d}, time.time()) == ["labels-0123456789ab"]
    assert reused_stages({"labels-0123456789ab": d}, time.time() - 1000) == []


# --- numbers as a reader expects them -------------------------------------------------------------------------------

def test_format_specs():
    assert format_value([-0.8359, 0.0381], "list") == "-0.836, 0.038"
    assert format_value([0.0469, 0.375], "pct") == "5%, 38%"
    assert format_value({"1": [0.5426, 0.0469, 1.0384]}, "ci") == "1: 0.543 (0.047 to 1.038)"
    assert format_value({"a": 13, "b": 3}, "table") == "| a | b |\n|---|---|\n| 13 | 3 |"
    assert format_value(0.12345, ".2f") == "0.12"
    s = {"stages": {"05": {"h": [0.1, 0.25], "ci": [[0.1, 0.0, 0.2]]}}}
    assert render_reading("{05.h:list:.1f}; {05.ci:ci:.1f}; {05.h.1:.0%}", s) == "0.1, 0.2; 0.1 (0.0 to 0.2); 25%"


RAW = re.compile(r"\{'|\[-?\d|\[\[")   # a Python dict or list as str() prints it
LEFT_FOR_THEIR_OWNERS: set = set()   # every reading uses the format specs


def test_readings_show_no_raw_python_lists_or_dicts():
    "The README's results (nbs/index.ipynb) and the readings show lists and dicts through the format specs."
    raw = []
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        if nb.name in LEFT_FOR_THEIR_OWNERS: continue
        for c in json.loads(nb.read_text())["cells"]:
            src = "".join(c["source"])
            if c["cell_type"] == "markdown" and is_reading(src) and RAW.search(src.split("-->", 1)[1]): raw.append(nb.name)
    assert not raw, f"readings that show a raw Python list or dict (use the specs list, ci, pct, table): {raw}"
