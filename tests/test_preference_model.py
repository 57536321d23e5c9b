"The preference model: soft Bradley–Terry loss, the RewardTrainer subclass, training, saving, scoring (cai_repro.reward), the pipeline stage, and the CLI."
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import cli

from cai_repro.artifacts import InputError
from cai_repro.config import PMSettings, load_params, settings_from
from cai_repro.dialogue import PAPER
from cai_repro.pipeline import Pipeline
from cai_repro.preference_model import (SoftPreferenceCollator, SoftRewardTrainer, label_comparisons, load_pm_base,
                                        pm_dataset, read_labels, save_pm, soft_bt_loss, split_heldout, synthetic_labels,
                                        train_pm, write_labels)
from cai_repro.reward import RewardScorer, load_reward_model

conversation = PAPER.conversation


def _sigmoid(x): return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("delta,p", [(0.0, 0.5), (2.0, 0.9), (-1.0, 0.8), (3.5, 0.0), (-0.3, 1.0), (1e-3, 0.25)])
def test_soft_loss_matches_hand_computation(delta, p):
    want = -(p * math.log(_sigmoid(delta)) + (1 - p) * math.log(_sigmoid(-delta)))
    got = soft_bt_loss(torch.tensor([delta], dtype=torch.float64), torch.tensor([p], dtype=torch.float64)).item()
    assert got == pytest.approx(want, rel=1e-9)


def test_soft_loss_minimum_is_at_sigma_delta_equals_p():
    deltas = torch.linspace(-4, 4, 8001, dtype=torch.float64)
    for p in (0.2, 0.6, 0.95):
        best = deltas[soft_bt_loss(deltas, torch.full_like(deltas, p), reduction="none").argmin()]
        assert _sigmoid(best.item()) == pytest.approx(p, abs=2e-3)


def _toy_comparisons(n=16, p=1.0):
    return [{"id": f"t{i}", "source": "ai-harmlessness", "category": f"c{i % 3}", "prompt": f"question {i}?",
             "chosen": conversation(f"question {i}?", "Sure, happy to help with that."),
             "rejected": conversation(f"question {i}?", "Go away."), "p": p} for i in range(n)]


def _config(tmp_path, **kw):
    from trl import RewardConfig
    return RewardConfig(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to="none", max_length=None,
                        gradient_checkpointing=False, **kw)


def test_p1_soft_loss_equals_stock_trl_hard_loss(tmp_path):
    from trl import RewardTrainer
    model, tok = load_pm_base("tiny-random", seed=1)
    with torch.no_grad(): model.score.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))  # the head starts at 0: Δ = 0
    ds, _ = pm_dataset(_toy_comparisons(4), tok, 128)
    soft = SoftRewardTrainer(model=model, args=_config(tmp_path), train_dataset=ds, processing_class=tok)
    stock = RewardTrainer(model=model, args=_config(tmp_path), train_dataset=ds.remove_columns("p"), processing_class=tok)
    rows = [ds[i] for i in range(4)]
    with torch.no_grad():
        l_soft = soft.compute_loss(model, soft.data_collator(rows))
        l_stock = stock.compute_loss(model, stock.data_collator([{k: r[k] for k in ("chosen_ids", "rejected_ids")} for r in rows]))
        l_half = soft.compute_loss(model, soft.data_collator([{**r, "p": 0.7} for r in rows]))
    assert l_soft.item() == pytest.approx(l_stock.item(), abs=1e-6)
    assert abs(l_half.item() - l_stock.item()) > 1e-4  # a soft target changes the loss


def test_collator_checks_every_row_not_only_the_first():
    c = SoftPreferenceCollator(pad_token_id=0)
    rows = [{"chosen_ids": [2, 3], "rejected_ids": [2, 4], "p": 1.0}, {"chosen_ids": [2, 5], "rejected_ids": [2]}]
    with pytest.raises(ValueError, match="example 1 .* no soft target"):
        c(rows)
    with pytest.raises(ValueError, match="margins are not supported"):
        c([rows[0], {**rows[1], "p": 0.6, "margin": 1.0}])  # a margin on a later row is noticed too (trl #5539)


def test_training_reduces_loss_and_separates_a_toy_set(tmp_path):
    comps = _toy_comparisons(16)
    before_model, tok = load_pm_base("tiny-random", seed=0)
    before = RewardScorer((before_model, tok))
    def gap(scorer):
        r = scorer.score_conversations([t for c in comps for t in (c["chosen"], c["rejected"])])
        return sum(a - b for a, b in zip(r[0::2], r[1::2])) / len(comps)
    gap0 = gap(before)
    model, tok, log = train_pm("tiny-random", comps, tmp_path / "ckpt", PMSettings(full=True, lr=3e-3, max_steps=12, batch_size=8,
                                                                                max_length=128, save_steps=100), seed=0, progress=False)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    gap1 = gap(RewardScorer((model, tok)))
    assert gap1 > gap0 and gap1 > 0
    d = torch.tensor([gap1])
    assert soft_bt_loss(d, torch.ones(1)).item() < math.log(2)


@pytest.fixture(scope="module")
def trained_pm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pm")
    comps = label_comparisons(synthetic_labels(8, seed=3))
    # 4 steps: the head starts at 0, so the LoRA body gets its first gradient only once the head has moved
    model, tok, _ = train_pm("tiny-random", comps, tmp / "ckpt", PMSettings(max_steps=4, batch_size=4, lr=1e-2, max_length=128),
                             seed=0, progress=False)
    d = save_pm(model, tok, tmp / "pm", {"base_model": "tiny-random", "max_length": 128})
    return model, tok, d, comps


def test_lora_pm_trains_the_head_and_merges(trained_pm):
    model, _, _, _ = trained_pm
    base, _ = load_pm_base("tiny-random", seed=0)
    assert type(model).__name__ == "Gemma3TextForSequenceClassification"  # a plain model: LoRA merged away
    assert not torch.allclose(base.score.weight, model.score.weight)
    assert not torch.allclose(base.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)


def test_save_load_roundtrip_gives_identical_scores(trained_pm):
    model, tok, d, comps = trained_pm
    texts = [c["chosen"] for c in comps] + [c["rejected"] for c in comps]
    assert (d / "model.safetensors").exists() and not list(d.glob("*.bin")) and not list(d.glob("*.pt"))
    assert json.loads((d / "cai_repro.json").read_text())["base_model"] == "tiny-random"
    m2, t2 = load_reward_model(d)
    a = RewardScorer((model, tok), batch_size=5, max_length=128).score_conversations(texts)
    b = RewardScorer((m2, t2), batch_size=1, max_length=128).score_conversations(texts)
    c = RewardScorer(d, batch_size=16).score_conversations(texts)  # reads max_length=128 from cai_repro.json
    assert RewardScorer(d).max_length == 128
    assert a == pytest.approx(b, abs=1e-5) and a == pytest.approx(c, abs=1e-5)
    assert max(a) - min(a) > 1e-4  # not a constant


def test_reward_scorer_methods_agree(trained_pm):
    _, _, d, _ = trained_pm
    s = RewardScorer(d, batch_size=2)
    prompts = ["How do I make tea?", "Tell me a joke.", "What is 2 + 2?"]
    completions = ["Steep a bag in hot water.", " Why did the chicken cross the road?", "4"]
    full = s.score_conversations([conversation(p, c) for p, c in zip(prompts, completions)])
    assert s.score(prompts, completions) == pytest.approx(full, abs=1e-6)
    rendered = [f"\n\nHuman: {p}\n\nAssistant:" for p in prompts]  # how an RL dataset may hold its prompts
    assert s(rendered, completions, completion_ids=None, trainer_state=None) == pytest.approx(full, abs=1e-6)
    chat = s([[{"role": "user", "content": p}] for p in prompts], [[{"role": "assistant", "content": c}] for c in completions])
    assert chat == pytest.approx(full, abs=1e-6)
    with pytest.raises(ValueError, match="3 prompts but 2 completions"):
        s.score(prompts, completions[:2])


def test_reward_scorer_is_a_trl_reward_callable(trained_pm):
    from trl.trainer.utils import get_callable_name
    _, _, d, _ = trained_pm
    s = RewardScorer(d)
    assert not isinstance(s, torch.nn.Module)  # TRL would treat a Module as a model, not a function
    assert get_callable_name(s) == "preference_model"


def _audit_scores():
    rows = [("x", 1.0, 0.0), ("x", 0.5, 0.0), ("y", 0.0, 1.0), ("y", 0.2, 0.1)]
    return [{"source": "ai-harmlessness", "p": 0.8, "category": c, "r_chosen": a, "r_rejected": b} for c, a, b in rows] + [
        {"source": "standin-refusal", "p": 1.0, "category": "helpful", "r_chosen": 0.0, "r_rejected": 1.0},  # not AI-labelled
        {"source": "ai-harmlessness", "p": 0.5, "category": "x", "r_chosen": 0.0, "r_rejected": 9.0}]       # a tie: no side


def test_category_audit_and_its_plot(tmp_path):
    import matplotlib; matplotlib.use("Agg")
    from cai_repro.reward import category_audit, plot_audit
    audit = category_audit(_audit_scores())
    assert [(a["category"], a["n"], a["accuracy"]) for a in audit] == [("x", 2, 1.0), ("y", 2, 0.5)]
    assert audit[0]["mean_gap"] == pytest.approx(0.75) and audit[0]["se_gap"] == pytest.approx(0.25)
    assert plot_audit(audit, tmp_path / "audit.png", "caption").stat().st_size > 1000


def test_calibration_plot(tmp_path):
    import matplotlib; matplotlib.use("Agg")
    from cai_repro.reward import plot_calibration
    from cai_repro.stats import calibration_bins
    bins = calibration_bins([0.1, 0.6, 0.9, 0.8], [0, 1, 1, 0])
    assert plot_calibration({"toy": bins, "empty": []}, tmp_path / "cal.png", "caption").stat().st_size > 1000


def test_read_labels_errors_name_file_and_line(tmp_path):
    good = synthetic_labels(3, seed=0)
    f = write_labels(tmp_path / "labels.jsonl", good)
    assert len(read_labels(tmp_path)) == 3
    lines = f.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n\n" + json.dumps({**good[1], "p_a": 1.5}) + "\n")
    with pytest.raises(Exception, match=r"bad.jsonl:3: p_a must be a probability"):
        read_labels(bad)
    bad.write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(Exception, match=r"bad.jsonl:2: duplicate id"):
        read_labels(bad)
    with pytest.raises(Exception, match="no such file"):
        read_labels(tmp_path / "missing.jsonl")
    bad.write_text(lines[0] + "\n" + json.dumps({**good[1], "prompt": "  "}) + "\n")
    with pytest.raises(Exception, match=r"bad.jsonl:2: empty prompt"):
        read_labels(bad)


def test_an_empty_response_is_a_label_not_an_error(tmp_path):
    "A policy that says nothing is evasive, not malformed: the PM trains on it (the cpu run sampled one)."
    rows = synthetic_labels(2, seed=0)
    rows[1] = {**rows[1], "response_a": "", "p_a": 0.2}
    got = read_labels(write_labels(tmp_path / "labels.jsonl", rows))
    chosen = label_comparisons(got)[1]
    assert chosen["chosen_is"] == "b" and chosen["rejected"].rstrip().endswith("Assistant:")


def test_label_orientation_and_heldout_split():
    labels = synthetic_labels(12, seed=5)
    comps = label_comparisons(labels)
    for r, c in zip(labels, comps):
        assert c["p"] == pytest.approx(max(r["p_a"], 1 - r["p_a"]))
        assert c["chosen"].endswith(r["response_a"] if r["p_a"] >= 0.5 else r["response_b"])
    train, held = split_heldout(comps, 0.25, seed=0)
    assert held and train and not {c["prompt"] for c in train} & {c["prompt"] for c in held}
    assert split_heldout(comps, 0.25, seed=0) == (train, held)


def test_pm_settings_reject_unknown_keys():
    assert settings_from(PMSettings, {"lr": 1e-3}).lr == 1e-3
    with pytest.raises(InputError, match=r"unknown key 'lrr' \(did you mean 'lr'\?"):
        settings_from(PMSettings, {"lrr": 1})


def test_pm_stage_is_cached(tmp_path, monkeypatch):
    "`Pipeline.preference_model`: trained once on the labels stage, then read from the cache; other settings, another stage."
    monkeypatch.setenv("CAI_REPRO_CACHE", str(tmp_path / "cache"))
    labels = write_labels(tmp_path / "labels.jsonl", synthetic_labels(8, seed=0))
    pm = dict(helpful="none", max_steps=1, batch_size=4, max_length=128, heldout=0.25)

    def pipeline(**overrides):
        p = Pipeline(load_params("smoke", pm={**pm, **overrides}), root=tmp_path / "stages", progress=False)
        p.labels = lambda: labels  # the labels stage, given: no SL-CAI policy to sample pairs from
        return p

    d = pipeline().preference_model()
    assert d.parent == tmp_path / "stages" and (d / "STAGE.json").exists()
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["train_steps"] == 1 and metrics["heldout"]["n"] == 2
    assert len((d / "scores.jsonl").read_text().splitlines()) == 8
    assert pipeline().preference_model() == d
    assert pipeline(lr=5e-3).preference_model() != d  # the smoke profile trains at 1e-3


def test_cli_train_then_eval(tmp_path):
    labels = write_labels(tmp_path / "labels.jsonl", synthetic_labels(8, seed=0))
    code, out, err = cli("pm", "train", "--labels", labels, "--out", tmp_path / "pm", "--model", "tiny-random",
                         "--helpful", "none", "--max-steps", "2", "--batch-size", "4", "--max-length", "128")
    assert code == 0, err
    assert "preference model saved" in out and (tmp_path / "pm" / "model.safetensors").exists()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"text_correct": conversation(f"q{i}", "Happy to help."),
                                         "text_incorrect": conversation(f"q{i}", "No.")}) + "\n" for i in range(5)))
    code, out, err = cli("pm", "eval", "--pm", tmp_path / "pm", "--data", pairs, "--out", tmp_path / "res.json")
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n"] == 5 and 0 <= res["accuracy"] <= 1
    assert json.loads((tmp_path / "res.json").read_text()) == res


def test_cli_errors_exit_2(tmp_path, capsys):
    "In-process (`cai_repro.cli.main`, as the console script calls it) to keep the test fast."
    from cai_repro.cli import main
    def run(*args):
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err
    labels = write_labels(tmp_path / "labels.jsonl", synthetic_labels(3, seed=0))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(labels.read_text().splitlines()[0] + "\n{\"id\": \"x\", \"prompt\": \"hi\"\n")
    code, err = run("pm", "train", "--labels", bad, "--out", tmp_path / "pm", "--model", "tiny-random")
    assert code == 2 and f"{bad}:2: invalid JSON" in err
    assert not (tmp_path / "pm").exists() and not (tmp_path / "pm.partial").exists()
    code, err = run("pm", "train", "--labels", tmp_path / "nowhere", "--out", tmp_path / "pm", "--model", "tiny-random")
    assert code == 2 and "no such file or directory" in err
    code, err = run("pm", "eval", "--pm", tmp_path / "no-pm", "--data", bad)
    assert code == 2 and f"{bad}:" in err
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"chosen": "a", "rejected": "b"}\n')
    code, err = run("pm", "eval", "--pm", tmp_path / "no-pm", "--data", pairs)
    assert code == 2 and "not a preference-model directory" in err
    (tmp_path / "taken").mkdir(); (tmp_path / "taken" / "x.txt").write_text("mine")
    code, err = run("pm", "train", "--labels", labels, "--out", tmp_path / "taken", "--model", "tiny-random")
    assert code == 2 and "not a finished preference-model run" in err
    assert (tmp_path / "taken" / "x.txt").read_text() == "mine"  # the user's files are left alone


def test_hhh_dev_slice_loads(anthropic_dir):
    from cai_repro.reward import read_comparison_pairs
    pairs = read_comparison_pairs(anthropic_dir / "evals" / "438HHHEvaluations.dev-slice.jsonl")
    assert len(pairs) == 63 and all(a.startswith("\n\nHuman:") and a != b for a, b in pairs)


# ---- issue 14: a PM that is not worse than a constant ----

def test_untrained_pm_is_the_constant_predictor():
    "A zero-initialised head: every conversation scores 0, so the soft loss is log 2 whatever the targets."
    model, tok = load_pm_base("tiny-random", seed=7)
    comps = _toy_comparisons(6, p=0.8)
    r = RewardScorer((model, tok)).score_conversations([t for c in comps for t in (c["chosen"], c["rejected"])])
    assert all(x == 0.0 for x in r)
    assert soft_bt_loss(torch.tensor(r[0::2]) - torch.tensor(r[1::2]), torch.full((6,), 0.8)).item() == pytest.approx(math.log(2))


def test_label_entropy_is_the_floor_of_the_soft_loss():
    from cai_repro.preference_model import label_entropy
    p = torch.tensor([0.55, 0.7, 0.9, 1.0], dtype=torch.float64)
    deltas = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    for pi in p:
        best = soft_bt_loss(deltas, torch.full_like(deltas, pi), reduction="none").min().item()
        assert best >= label_entropy([pi.item()]) - 1e-9 and best == pytest.approx(label_entropy([pi.item()]), abs=1e-3)
    assert label_entropy([0.5, 0.5]) == pytest.approx(math.log(2))


def test_pm_trains_in_float32_on_cpu(tmp_path):
    from cai_repro.preference_model import pm_train_dtype
    if torch.cuda.is_available(): pytest.skip("on a GPU the run's dtype applies")
    assert pm_train_dtype("auto") == pm_train_dtype("bfloat16") == "float32"
    model, _, _ = train_pm("tiny-random", _toy_comparisons(4), tmp_path / "ckpt", PMSettings(max_steps=1, batch_size=4, max_length=64),
                           dtype="bfloat16", seed=0, progress=False)
    assert next(model.parameters()).dtype == torch.float32


def test_early_stopping_keeps_the_best_step_and_falls_back_to_the_constant(tmp_path):
    from cai_repro.preference_model import best_evaluation
    comps = _toy_comparisons(16, p=0.9)
    fit, stop = comps[:12], comps[12:]
    s = PMSettings(full=True, lr=3e-3, max_steps=5, batch_size=4, max_length=64, eval_steps=2, patience=3)
    model, tok, log = train_pm("tiny-random", fit, tmp_path / "a", s, seed=0, progress=False, stopping=stop)
    evals = [(r["step"], r["eval_loss"]) for r in log if "eval_loss" in r]
    assert [st for st, _ in evals] == [0, 2, 4, 5] and evals[0][1] == pytest.approx(math.log(2), abs=1e-6)
    best = best_evaluation(log)
    r = RewardScorer((model, tok), max_length=64).score_conversations([t for c in stop for t in (c["chosen"], c["rejected"])])
    kept = soft_bt_loss(torch.tensor(r[0::2]) - torch.tensor(r[1::2]), torch.full((4,), 0.9)).item()
    assert kept == pytest.approx(best["loss"], abs=1e-4) and kept <= math.log(2)
    # a learning rate of 0: no step beats the untrained PM, and the untrained PM (all scores 0) is what comes back
    model0, tok0, log0 = train_pm("tiny-random", fit, tmp_path / "b", PMSettings(**{**s.__dict__, "lr": 0.0}), seed=0, progress=False, stopping=stop)
    assert best_evaluation(log0)["step"] == 0 and model0.score.weight.abs().sum().item() == 0.0


def test_shuffled_targets_keep_pairs_and_targets_but_not_their_link():
    from cai_repro.preference_model import shuffle_targets
    comps = [{**c, "p": 0.5 + i / 100} for i, c in enumerate(_toy_comparisons(40))]
    sh = shuffle_targets(comps, seed=3)
    assert sorted(c["p"] for c in sh) == sorted(c["p"] for c in comps)
    assert [{c["chosen"], c["rejected"]} for c in sh] == [{c["chosen"], c["rejected"]} for c in comps]
    assert 10 < sum(a["chosen"] != b["chosen"] for a, b in zip(sh, comps)) < 30  # about half flipped
    assert sum(a["p"] == b["p"] for a, b in zip(sh, comps)) < 5  # targets moved to other pairs
    assert shuffle_targets(comps, seed=3) == sh and shuffle_targets(comps, seed=4) != sh


def test_pm_stage_splits_stopping_and_heldout_and_reports_entropy(tmp_path, monkeypatch):
    monkeypatch.setenv("CAI_REPRO_CACHE", str(tmp_path / "cache"))
    labels = write_labels(tmp_path / "labels.jsonl", synthetic_labels(12, seed=0))
    p = Pipeline(load_params("smoke", pm=dict(helpful="none", max_steps=2, batch_size=4, max_length=128, heldout=0.25, stopping=0.25)),
                 root=tmp_path / "stages", progress=False)
    p.labels = lambda: labels
    d = p.preference_model()
    m = json.loads((d / "metrics.json").read_text())
    assert m["heldout"]["n"] and m["stopping"]["n"] and m["train"]["n"]
    assert m["heldout"]["constant_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert 0 < m["heldout"]["entropy"] < math.log(2)  # synthetic labels are 0.55–0.98
    assert m["best"]["initial_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert m["stopping"]["soft_loss"] <= math.log(2) + 1e-4  # early stopping from a zero head, on its own set
    ctrl = p.preference_model(shuffle_labels=True)
    assert ctrl != d and json.loads((ctrl / "metrics.json").read_text())["shuffled_labels"] is True
    splits = lambda x: {(r["id"], r["split"]) for r in map(json.loads, (x / "comparisons.jsonl").read_text().splitlines())}
    assert splits(ctrl) == splits(d)  # the control trains on the same pairs, split the same way


def test_audit_intervals_are_student_t():
    from cai_repro.reward import category_audit
    audit = category_audit(_audit_scores())
    x = audit[0]  # gaps 1.0 and 0.5: mean 0.75, SE 0.25, 1 degree of freedom
    assert x["ci95"] == pytest.approx([0.75 - 12.7062 * 0.25, 0.75 + 12.7062 * 0.25], abs=1e-3)
