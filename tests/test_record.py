"The committed record (report/) and the readings rendered from it (issue 14: no hand-typed number)."
import json
import math
import re
from pathlib import Path

import pytest

from cai_repro.artifacts import InputError
from cai_repro.record import is_reading, load_record, lookup, render_cell, render_readings

ROOT = Path(__file__).resolve().parent.parent
NBS = sorted((ROOT / "nbs").glob("*.ipynb"))


@pytest.fixture(scope="module")
def record():
    rec = load_record(ROOT / "report")
    if rec is None: pytest.fail("report/summary.json is missing: run `make reproduce` (a cpu run publishes its record)")
    return rec


def markdown_cells(nb: Path):
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown"]


def test_the_record_carries_the_keys_the_checks_read(record):
    assert record["profile"] == "cpu"
    pm = lookup(record, "07_preference_model")
    assert math.isfinite(pm["heldout_soft_loss"]) and math.isfinite(pm["heldout_entropy"])
    assert 0 <= pm["heldout_entropy"] <= pm["heldout_soft_loss"] + 1e-6  # a cross-entropy is never below the entropy
    chains = lookup(record, "05_sl_cai_analysis.paper_chains")
    assert len(chains) == 5 and all(math.isfinite(x) for x in chains)  # revisions 0-4 of the paper's chains
    assert lookup(record, "05_sl_cai_analysis.noise_sd") >= 0
    assert {"commit", "date", "wall_s"} <= set(record["record"])


def test_every_reading_renders_from_the_record(record):
    readings = [(nb.name, src) for nb in NBS for src in markdown_cells(nb) if is_reading(src)]
    assert len(readings) >= 10
    for name, src in readings:
        assert render_cell(src, record) == src, f"{name}: a reading differs from what the record renders (make readme)"


def test_no_placeholder_readings_left():
    for nb in NBS:
        for src in markdown_cells(nb):
            assert "TODO(lead)" not in src and "Reading (ours): the `cpu` run of" not in src, nb.name


def test_figures_the_readings_show_are_in_the_record():
    "The record's figures are the checkout's top-level figures/, committed with it (`record_run` puts them there)."
    shown = {m for nb in NBS for src in markdown_cells(nb) if is_reading(src)
             for m in re.findall(r"\]\(\.\./(figures/[^)]+)\)", src)}
    assert shown, "the readings show no figure"
    missing = sorted(f for f in shown if not (ROOT / f).is_file())
    assert not missing, missing
    stale = sorted(nb.name for nb in NBS for src in markdown_cells(nb) if "report/figures/" in src)
    assert not stale, f"figures are in figures/, not report/figures/: {stale}"


def test_a_changed_record_changes_the_reading(tmp_path, record):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "<!-- reading\nloss {07_preference_model.heldout_soft_loss:.4f}\n-->\n"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    assert render_readings(path, record)
    assert not render_readings(path, record)  # rendered once, it is in sync
    other = json.loads(json.dumps(record))
    other["stages"]["07_preference_model"]["heldout_soft_loss"] += 0.01
    assert render_readings(path, other)  # so `make test` (check_sync) catches a README or reading out of date


def test_a_reading_naming_a_missing_key_is_an_input_error(tmp_path, record):
    path = tmp_path / "y.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": "<!-- reading\n{no.such.key}\n-->"}],
                                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    with pytest.raises(InputError, match="y.ipynb.*no 'no.such.key' in the record"):
        render_readings(path, record)
