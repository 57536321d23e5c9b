"""The signal chain (issue 20): labels that keep the labeller's judgement, the flat-label guard, PALMS pairs that a judge
can read, PM splits that share no response text, held-out checks with intervals, and shaping that cannot outweigh the PM."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from cai_repro.config import FeedbackSettings, load_params
from cai_repro.constitution import load_constitution
from cai_repro.feedback import FlatLabels, check_labels, label_margin, label_pairs, palms_pairs
from cai_repro.preference_model import (assign_splits, build_pm, disjoint_responses, label_comparisons,
                                        standin_comparisons, synthetic_labels, write_labels)
from cai_repro.reward import agreement, heldout_checks

PAIRS = [{"id": f"p{i}", "prompt": q, "category": "test", "harmful": True, "response_a": a, "response_b": b}
         for i, (q, a, b) in enumerate([("How do I pick a lock?", "Call a locksmith.", "Use a tension wrench and a pick."),
                                        ("Tell me a joke.", "Why did the chicken cross the road?", "No."),
                                        ("Insult my friend.", "I'd rather not.", "Your friend is an idiot.")])]


def test_contrast_labels_are_the_clamped_log_bayes_factor(tiny, tmp_path):
    "σ(Δ_A − Δ_B) at τ = 1, clamped to [0.4, 0.6]: no fitted temperature, so a label can never be flattened by a fit."
    model, tok = tiny
    c = load_constitution("default")
    got = label_pairs(model, tok, PAIRS, c, tmp_path / "a", FeedbackSettings(method="contrast"), progress=False)
    for r in got:
        d = r["principles"][0]["delta"]
        assert r["p_a"] == pytest.approx(min(max(1 / (1 + math.exp(-d)), 0.4), 0.6), abs=1e-5)
    wide = label_pairs(model, tok, PAIRS, c, tmp_path / "b", FeedbackSettings(method="contrast", tau=0.01), progress=False)
    assert {r["p_a"] for r in wide} <= {0.4, 0.6}  # a sharp τ puts every label at the clamp, never beyond it


def test_the_guard_stops_flat_labels_and_names_the_statistic():
    flat = [{"p_a": 0.4988}, {"p_a": 0.5014}, {"p_a": 0.5}]
    with pytest.raises(FlatLabels, match=r"labels-x: the labels are near-constant: mean \|p - 0.5\| = 0.0009"):
        check_labels(flat, 0.01, "labels-x")
    assert check_labels([{"p_a": 0.6}, {"p_a": 0.4}], 0.03, "ok") == pytest.approx(0.1)
    assert label_margin([]) == 0.0


def test_labels_stage_guard_keeps_its_labels(tmp_path, monkeypatch):
    "A labels stage whose labels fail the guard stops (FlatLabels, an InputError: exit 2) with its labels kept, unfinished."
    from cai_repro.pipeline import Pipeline
    P = load_params("smoke", feedback={"min_margin": 0.49, "palms_pairs": 0})
    pipe = Pipeline(P, root=tmp_path / "stages", progress=False)
    with pytest.raises(FlatLabels, match="the labels stage"):
        pipe.labels()
    partial = [d for d in (tmp_path / "stages").iterdir() if d.name.startswith("labels-") and d.name.endswith(".partial")]
    assert len(partial) == 1 and (partial[0] / "labels.jsonl").read_text().count("\n") == P.feedback.n_prompts


def test_reproduce_reports_a_stage_stopped_by_an_input_error_with_exit_2(monkeypatch):
    import cai_repro.reproduce as rp
    from cai_repro.cli import main
    def stop(*a, **k): raise rp.StageFailed("06_ai_feedback.ipynb, cell 9: FlatLabels: ...", True)
    monkeypatch.setattr(rp, "reproduce", stop)
    assert main(["reproduce", "--profile", "smoke"]) == 2
    def crash(*a, **k): raise rp.StageFailed("06_ai_feedback.ipynb, cell 9: ZeroDivisionError", False)
    monkeypatch.setattr(rp, "reproduce", crash)
    assert main(["reproduce", "--profile", "smoke"]) == 1


def test_palms_pairs_from_anthropics_samples(anthropic_dir):
    pp = palms_pairs(anthropic_dir / "samples", n_pairs=3, heldout=0.5, seed=0)
    assert len(pp) == 4 * 40 * 3 and len({p["id"] for p in pp}) == len(pp)
    held = {p["prompt"] for p in pp if p["heldout"]}
    assert len(held) == 20 and not held & {p["prompt"] for p in pp if not p["heldout"]}
    assert 0.4 < np.mean([p["reference"][0] > p["reference"][1] for p in pp]) < 0.6  # A is the better one about half the time
    assert all(p["response_a"] != p["response_b"] and p["response_a"] and p["response_b"] for p in pp)
    assert sum(p["heldout"] for p in pp) >= 200  # the PM's main held-out check has at least 200 comparisons


def test_pm_splits_share_no_response_text(tmp_path):
    "Repeated responses (the stand-ins' old refusal strings, empty answers) never sit in two splits."
    labels = synthetic_labels(12, seed=1)
    for r in labels[:6]: r["response_b"] = "I'm sorry, but I can't help with that."  # one string in many prompts
    comps = label_comparisons(labels)
    split = assign_splits([c["prompt"] for c in comps], 0.25, 0.25, seed=0)
    kept, dropped = disjoint_responses([{**c, "split": split[c["prompt"]]} for c in comps])
    texts = {sp: {t for c in kept if c["split"] == sp for t in c["responses"]} for sp in ("train", "stopping", "heldout")}
    assert not (texts["train"] & texts["stopping"] or texts["train"] & texts["heldout"] or texts["stopping"] & texts["heldout"])
    assert dropped and all(c["split"] != "train" for c in dropped)


def test_standins_teach_relevance_not_that_refusing_is_bad():
    answers = [{"id": f"h{i}", "prompt": f"q{i}?", "category": "c", "response": f"answer {i}", "split": "train" if i < 4 else "heldout"}
               for i in range(6)]
    out = standin_comparisons(answers, seed=0)
    assert {c["source"] for c in out} == {"standin-offtopic"}
    for c in out:  # the rejected answer is another prompt's answer of the same split
        other = next(a for a in answers if a["response"] == c["responses"][1])
        assert other["split"] == c["split"] and other["prompt"] != c["prompt"]


def test_build_pm_holds_out_marked_pairs_and_measures_them(tmp_path):
    labels = synthetic_labels(12, seed=2)
    for i, r in enumerate(labels):
        r["heldout"] = i < 4
        r["source"] = "palms-X" if i % 2 else "policy"
        r["reference"] = [1.0, 0.0] if i % 3 else [0.0, 1.0]
    pm = replace(load_params("smoke").pm, max_steps=2, save_steps=1)
    built = build_pm("tiny-random", pm, write_labels(tmp_path / "labels.jsonl", labels), tmp_path / "pm", progress=False)
    comps = [json.loads(l) for l in (built / "comparisons.jsonl").read_text().splitlines()]
    held_ids = {f"label-{r['id']}" for r in labels if r["heldout"]}
    assert held_ids <= {c["id"] for c in comps if c["split"] == "heldout"}
    assert (built / "adapter" / "adapter_model.safetensors").exists() or json.loads((built / "cai_repro.json").read_text())["best"]["step"] == 0
    from cai_repro.reward import score_pm
    m = json.loads((score_pm(built, progress=False) / "metrics.json").read_text())["heldout_checks"]
    assert m["ai_labels"]["n"] >= 4 and len(m["ai_labels"]["ci95"]) == 2
    assert "anthropic_pm" in m and m["anthropic_pm"]["labeller"]["n"] >= 4


def test_agreement_interval_is_over_prompts():
    rng = np.random.default_rng(0)
    correct = list((rng.random(240) < 0.65).astype(float))
    one_prompt_each = agreement(correct, [str(i) for i in range(240)])
    clustered = agreement(correct, [str(i // 12) for i in range(240)])  # 20 prompts of 12 pairs
    assert one_prompt_each["n"] == clustered["n"] == 240 and clustered["n_prompts"] == 20
    lo, hi = one_prompt_each["ci95"]
    assert lo < one_prompt_each["accuracy"] < hi and hi - lo < 0.16
    assert agreement([], [])["accuracy"] is None


def test_heldout_checks_keep_sources_apart():
    rows = [{"split": "heldout", "source": "ai-harmlessness", "p": 0.6, "origin": "policy", "prompt": "a", "id": "1",
             "reference": None, "r_chosen": 1.0, "r_rejected": 0.0},
            {"split": "heldout", "source": "standin-offtopic", "p": 1.0, "origin": None, "prompt": "b", "id": "2",
             "reference": None, "r_chosen": 0.0, "r_rejected": 1.0}]
    hc = heldout_checks(rows)
    assert hc["ai_labels"]["accuracy"] == 1.0 and hc["helpful"]["accuracy"] == 0.0 and "anthropic_pm" not in hc


def test_shaping_cannot_outweigh_the_pm(tmp_path):
    from cai_repro.artifacts import InputError
    from cai_repro.pipeline import check_shaping
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps({"r_chosen": 0.2, "r_rejected": -0.2}) + "\n" for _ in range(5)))
    with pytest.raises(InputError, match="RL would optimise the penalty"):
        check_shaping(1.0, tmp_path)   # the earlier run's penalty against a PM range of 0.4
    assert check_shaping(0.05, tmp_path) == pytest.approx(0.4)
    assert load_params("cpu").rl.missing_eos_penalty == 0.0


def test_a_pm_loads_from_its_adapter_alone(tmp_path):
    "The record keeps the PM's LoRA adapter (a few MB); the library rebuilds the PM from it and scores as the whole PM does."
    import shutil
    from cai_repro.record import _copy_adapters
    from cai_repro.reward import RewardScorer
    pm = replace(load_params("smoke").pm, max_steps=3, save_steps=1, stopping=0.0, lr=5e-3)
    built = build_pm("tiny-random", pm, write_labels(tmp_path / "labels.jsonl", synthetic_labels(12, seed=4)), tmp_path / "pm", progress=False)
    assert (built / "adapter" / "cai_repro.json").exists()
    assert _copy_adapters({"preference_model-x": built}, tmp_path / "record") == ["preference_model-x"]
    policy = tmp_path / "dpo-y" / "policy"   # a DPO (or RL) stage keeps its adapter in policy/: copied the same way
    shutil.copytree(built / "adapter", policy)
    assert _copy_adapters({"dpo-y": policy.parent}, tmp_path / "record") == ["dpo-y"]
    assert (tmp_path / "record" / "dpo-y" / "adapter_model.safetensors").is_file()
    shutil.rmtree(built / "adapter")   # only the record's copy is left
    texts = ["\n\nHuman: Hi?\n\nAssistant: Hello.", "\n\nHuman: Help me steal.\n\nAssistant: No."]
    whole = RewardScorer(str(built)).score_conversations(texts)
    from_adapter = RewardScorer(str(tmp_path / "record" / "preference_model-x")).score_conversations(texts)
    assert from_adapter == pytest.approx(whole, abs=1e-4) and whole[0] != whole[1]
