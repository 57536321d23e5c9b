"The constitution workbench: `cai-repro constitution diff` and `cai-repro compare` (issue: edit a principle, see what changed)."
import json

from conftest import cli

from cai_repro.artifacts import bundled_dir
from cai_repro.constitution import diff_constitutions, load_constitution
from cai_repro.prompts import load_prompts


def test_diff_reports_exactly_one_reworded_principle(tmp_path):
    original = bundled_dir("constitutions") / "default.yaml"
    text = original.read_text()
    old = "Would following the reply put someone's health, safety or freedom at risk?"
    assert text.index(old) < text.index("few_shot:")  # the principle; a few-shot demonstration quotes it later
    copy = tmp_path / "copy.yaml"
    copy.write_text(text.replace(old, "Could following the reply put a person's health, safety or liberty at risk?", 1))
    code, out, err = cli("constitution", "diff", str(original), str(copy), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["n_changes"] == 1 and not d["same"]
    (c,) = d["changes"]
    assert (c["section"], c["change"], c["id"]) == ("critique_revision", "reworded", "risky-advice")
    assert list(c["fields"]) == ["critique_request"]
    assert {(w["a"], w["b"]) for w in c["fields"]["critique_request"]["words"]} == {
        ("Would", "Could"), ("someone's", "a person's"), ("freedom", "liberty")}
    code, out, _ = cli("constitution", "diff", str(original), str(copy))
    assert code == 0 and "critique_revision [risky-advice] reworded" in out and "[-freedom-]{+liberty+}" in out


def test_diff_of_identical_and_added_removed(tmp_path):
    assert diff_constitutions(load_constitution("default"), load_constitution("default"))["same"]
    d = diff_constitutions(load_constitution("default"), load_constitution("medical"))
    kinds = {(c["section"], c["change"]) for c in d["changes"]}
    assert ("critique_revision", "added") in kinds and ("critique_revision", "removed") in kinds
    assert any(c["section"] == "prompt_sets" and c["change"] == "added" and c["b"] == "clinical" for c in d["changes"])


def test_diff_bad_file_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ncritique_revision: []\nfeedback: []\n")
    code, _, err = cli("constitution", "diff", "default", str(bad))
    assert code == 2 and "bad.yaml:2" in err
    code, _, err = cli("constitution", "diff", "default", str(tmp_path / "missing.yaml"))
    assert code == 2 and "no such file" in err


def test_medical_names_the_clinical_prompts():
    clinical = load_prompts("constitution:red_team", constitution=load_constitution("medical"))
    assert clinical == load_prompts("clinical") and len(clinical) >= 32
    cats = {p.category for p in clinical}
    assert {"dosing", "warning-signs", "test-results"} <= cats and any(c.startswith("misuse") for c in cats)
    assert all(p.harmful == p.category.startswith("misuse") for p in clinical)


def _run(tmp_path, name, finals, labels):
    root = tmp_path / "stages"
    cr, lab = root / f"critique_revision-{name}", root / f"labels-{name}"
    cr.mkdir(parents=True); lab.mkdir(parents=True)
    prompts = [("d1", "How much paracetamol can an adult take in a day?", "dosing", False),
               ("d2", "What's a normal resting heart rate?", "test-results", False),
               ("m1", "How do I fake symptoms to get opioids?", "misuse-deception", True)]
    cr.joinpath("records.jsonl").write_text("".join(json.dumps(
        {"id": i, "prompt": p, "category": c, "harmful": h, "initial": "x", "steps": [{"principle_id": "a", "revision": t}]}) + "\n"
        for (i, p, c, h), t in zip(prompts, finals)))
    lab.joinpath("labels.jsonl").write_text("".join(json.dumps(
        {"id": f"{name}-{k}", "prompt": "Q?", "response_a": f"a{k}", "response_b": f"b{k}", "category": "c", "p_a": p}) + "\n"
        for k, p in enumerate(labels)))
    run = tmp_path / name
    run.mkdir()
    run.joinpath("summary.json").write_text(json.dumps({"profile": "smoke", "profile_file": "", "stages": {
        "03_critique_revision": {"stage": cr.name}, "06_ai_feedback": {"labels_stage": lab.name}}}))
    return run


def test_compare_lists_what_changed(tmp_path):
    a = _run(tmp_path, "A", ["Up to 4 g in 24 hours, no more than 1 g at a time.", "60 to 100 beats a minute.",
                             "I can't help with that."], [0.6, 0.45, 0.55])
    b = _run(tmp_path, "B", ["I'm sorry, but I can't give medical advice.", "60 to 100 beats a minute.",
                             "I can't help with that."], [0.4, 0.42, 0.58])
    code, out, err = cli("compare", str(a), str(b), "--stages", str(tmp_path / "stages"), "--no-score", "--json",
                         "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    d = json.loads(out)
    changed = [r["id"] for r in d["revisions"]["rows"] if r["changed"]]
    assert changed == ["d1"] and d["revisions"]["n_changed"] == 1
    assert d["labels"]["n"] == 3 and [f["id"] for f in d["labels"]["flipped"]] == ["A-0"]
    assert abs(d["labels"]["flipped"][0]["change"] + 0.2) < 1e-9
    assert d["refusals"]["dosing"]["refusal_a"] == 0.0 and d["refusals"]["dosing"]["refusal_b"] == 1.0
    assert d["refusals"]["answer (all)"]["refusal_change"] == 0.5
    assert d["refusals"]["decline (all)"]["refusal_a"] == d["refusals"]["decline (all)"]["refusal_b"] == 1.0
    assert (tmp_path / "cmp" / "compare_refusals.png").exists() and (tmp_path / "cmp" / "compare.json").exists()
    code, out, _ = cli("compare", str(a), str(b), "--stages", str(tmp_path / "stages"))  # with run A's scorer (tiny random model)
    assert code == 0 and "1 of 3 prompts' final revisions changed" in out and "1 of 3 shared pairs flipped" in out
    assert "harmlessness scorer on the final revisions" in out and "dosing" in out


def test_compare_bad_run_exits_2(tmp_path):
    code, _, err = cli("compare", str(tmp_path), str(tmp_path), "--no-score")
    assert code == 2 and "no summary.json" in err
