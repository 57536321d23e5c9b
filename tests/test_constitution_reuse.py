"""The constitution workbench's reuse (issue 22): a chain or a label is identified by what it depends on, so editing one
principle recomputes exactly the chains and labels that used it; `reproduce --plan --json` says how many; any valid
constitution fits the profile or stops before anything runs."""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from cai_repro.config import load_params
from cai_repro.constitution import load_constitution, resolve_constitution
from conftest import cli


def reworded_copy(src: Path, dst: Path, principle_id: str) -> Path:
    "A copy of a YAML constitution with one critique principle's revision request reworded (nothing else changes)."
    doc = yaml.safe_load(src.read_text())
    for p in doc["critique_revision"]:
        if p["id"] == principle_id: p["revision_request"] = p["revision_request"].rstrip(".") + ", and keep it short."
    dst.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


@pytest.fixture
def built(tmp_path, monkeypatch):
    "The smoke profile's main critique → revision run, built under a copy of the default constitution."
    from cai_repro.pipeline import Pipeline
    original = tmp_path / "original.yaml"
    original.write_text(resolve_constitution("default").read_text())
    root = tmp_path / "stages"
    monkeypatch.setenv("CAI_REPRO_STAGES", str(root))
    P = replace(load_params("smoke"), run=replace(load_params("smoke").run, constitution=str(original)))
    records = [json.loads(l) for l in (Pipeline(P, root=root, progress=False).critique_revision() / "records.jsonl").open()]
    drawn = {}  # principle id -> the chains (prompt ids) that drew it
    for r in records:
        for st in r["steps"]: drawn.setdefault(st["principle_id"], set()).add(r["id"])
    return P, root, original, records, drawn


def pick(drawn: dict, n: int) -> str:
    "A principle drawn by some chains but not by all of them."
    return next(pid for pid, ids in sorted(drawn.items()) if 0 < len(ids) < n)


def test_editing_one_principle_recomputes_exactly_the_chains_that_drew_it(built, tmp_path, monkeypatch):
    import cai_repro.critique_revision as cr
    from cai_repro.pipeline import Pipeline
    P, root, original, records, drawn = built
    pid = pick(drawn, len(records))
    copy = reworded_copy(original, tmp_path / "copy.yaml", pid)
    P2 = replace(P, run=replace(P.run, constitution=str(copy)))
    sampled = set()
    real = cr.make_sampler
    def spy(*a, **k):
        s = real(*a, **k)
        submit = s.submit
        def counting(key, *a2, **k2): sampled.add(key[0]); return submit(key, *a2, **k2)
        s.submit = counting
        return s
    monkeypatch.setattr(cr, "make_sampler", spy)
    again = [json.loads(l) for l in (Pipeline(P2, root=root, progress=False).critique_revision() / "records.jsonl").open()]
    assert sampled == drawn[pid]  # the chains that drew the reworded principle, and no other, were sampled again
    same = {r["id"] for r, a in zip(records, again) if r == a}
    assert same == {r["id"] for r in records} - drawn[pid]  # the rest are the cached records, unchanged
    # the same constitution again: the stage itself is cached, nothing is sampled
    sampled.clear()
    Pipeline(P2, root=root, progress=False).critique_revision()
    assert sampled == set()


def test_plan_json_counts_reused_and_recomputed_chains(built, tmp_path):
    P, root, original, records, drawn = built
    pid = pick(drawn, len(records))
    copy = reworded_copy(original, tmp_path / "copy.yaml", pid)
    env = {"CAI_REPRO_STAGES": str(root), "CAI_REPRO_ANTHROPIC_DATA": str(tmp_path / "none")}  # as on CI: stdout stays JSON
    code, out, err = cli("reproduce", "--profile", "smoke", "--constitution", str(copy), "--plan", "--json", env=env)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["constitution"] == str(copy)
    main = next(s for s in plan["stages"] if s["stage"] == "critique_revision" and s["what"] == "main run")
    assert (main["recomputed"], main["reused"], main["unit"]) == (len(drawn[pid]), len(records) - len(drawn[pid]), "chains")
    assert all({"reused", "recomputed"} <= set(s) for s in plan["stages"])
    same = json.loads(cli("reproduce", "--profile", "smoke", "--constitution", str(original), "--plan", "--json", env=env)[1])
    main0 = next(s for s in same["stages"] if s["stage"] == "critique_revision" and s["what"] == "main run")
    assert (main0["status"], main0["reused"], main0["recomputed"]) == ("cached", len(records), 0)
    text = cli("reproduce", "--profile", "smoke", "--constitution", str(copy), "--plan", env=env)[1]
    assert f"{len(records) - len(drawn[pid])} reused / {len(drawn[pid])} to compute (chains)" in text


def test_a_feedback_edit_reuses_every_chain(built, tmp_path):
    "The critique → revision stage reads no feedback principle: editing one leaves the stage (and SL-CAI after it) cached."
    from cai_repro.pipeline import Pipeline
    P, root, original, records, drawn = built
    doc = yaml.safe_load(original.read_text())
    doc["feedback"][3]["principle"] += " Be strict."
    (tmp_path / "fb.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    P2 = replace(P, run=replace(P.run, constitution=str(tmp_path / "fb.yaml")))
    pipe = Pipeline(P2, root=root, plan=True)
    pipe.critique_revision()
    assert (pipe.planned[0]["status"], pipe.planned[0]["reused"]) == ("cached", len(records))


def three_principles(tmp_path, preamble: str | None = None) -> Path:
    lines = ["name: three", "critique_revision:"]
    lines += [f"  - {{id: c{i}, critique_request: 'Critique {i}.', revision_request: 'Revise {i}.'}}" for i in range(3)]
    lines += ["feedback:"] + [f"  - {{id: f{i}, principle: 'Which is better, {i}?'}}" for i in range(3)]
    if preamble: lines += [f"contrast_preamble: {preamble}"]
    path = tmp_path / "three.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_three_principle_constitution_plans_or_stops_before_running(tmp_path):
    three = three_principles(tmp_path)
    code, out, err = cli("reproduce", "--profile", "cpu", "--constitution", str(three), "--plan",
                         env={"CAI_REPRO_STAGES": str(tmp_path / "s")})
    assert code == 2 and "three.yaml" in err and "contrast_preamble" in err  # the cpu profile labels by contrast
    with_text = three_principles(tmp_path, "'The assistant below is careful and kind.'")
    code, out, err = cli("reproduce", "--profile", "cpu", "--constitution", str(with_text), "--plan", "--json",
                         env={"CAI_REPRO_STAGES": str(tmp_path / "s")})
    assert code == 0, err
    whats = [s["what"] for s in json.loads(out)["stages"] if s["stage"] == "critique_revision"]
    assert not any("principles=16" in w for w in whats) and any("principles=1" in w for w in whats)  # K sized to 3 principles
    assert load_constitution(with_text).principle_counts(load_params("cpu").analysis.principle_counts) == (1, 3)
