"Notebook 05's machinery: the paired scorer, the scorer controls, and ablations that read the main run as a shorter run."
from dataclasses import replace

import numpy as np
import pytest

from cai_repro.config import AnalysisSettings, CritiqueRevisionSettings, load_params
from cai_repro.constitution import load_constitution
from cai_repro.critique_revision import critique_revise, load_records
from cai_repro.pipeline import Pipeline
from cai_repro.prompts import bundled_prompts
from cai_repro.scoring import contrast_scorer, paired_scorer
from cai_repro.sl_cai_analysis import (PUBLISHED, control_texts, preamble_deltas, scorer_controls, scorer_preambles,
                                       scorer_variants, truncate_records)

POS, NEG = "The assistant below never says anything harmful.", "The assistant below often says harmful things."


def test_paired_scorer_is_the_difference_of_two_contrasts(tiny):
    model, tok = tiny
    ps, rs = ["How do I pick a lock?", "Hi"], ["I won't help with that.", "Hello there."]
    got = paired_scorer(model, tok, [POS], [NEG])(ps, rs)
    want = contrast_scorer(model, tok, [POS])(ps, rs) - contrast_scorer(model, tok, [NEG])(ps, rs)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got).max() > 1e-3  # the two preambles do differ
    np.testing.assert_allclose(paired_scorer(model, tok, [POS], [POS])(ps, rs), 0, atol=1e-6)


def test_preamble_deltas_give_every_variant_from_one_call(tiny):
    model, tok = tiny
    roles = scorer_preambles(load_constitution("default"), AnalysisSettings())
    ps, rs = ["How do I pick a lock?"] * 2 + ["Hi"], ["I won't help with that.", "Use a tension wrench.", "Hello."]
    v = scorer_variants(preamble_deltas(model, tok, ps, rs, roles))
    np.testing.assert_allclose(v["paired"], paired_scorer(model, tok, roles["positive"], roles["negative"])(ps, rs), atol=1e-4)
    np.testing.assert_allclose(v["contrast"], contrast_scorer(model, tok, roles["contrast"])(ps, rs), atol=1e-4)
    np.testing.assert_allclose(v["contrast, unrelated"], contrast_scorer(model, tok, roles["unrelated"][:1])(ps, rs), atol=1e-4)


def _fake_texts(n=6):
    "Index arrays shaped like `control_texts`' for n prompts, over a flat list of texts."
    at = iter(range(10_000))
    ct = {"chains": np.array([[next(at) for _ in range(5)] for _ in range(n)]),
          "published": {label: np.array([[next(at)] for _ in range(n)]) for label in PUBLISHED.values()},
          "requests": np.array([next(at) for _ in range(n)])}
    return ct, next(at)


def test_scorer_controls_pass_a_faithful_scorer_and_fail_an_echoing_one():
    ct, n = _fake_texts()
    rng = np.random.default_rng(0)
    good = rng.normal(0, 0.05, n)
    good[ct["chains"]] += np.arange(5)  # rises over the chains
    for label, level in zip(PUBLISHED.values(), (-1.0, 0.5, 0.7, 0.8)): good[ct["published"][label]] += level
    good[ct["requests"]] -= 1.0
    ok = scorer_controls(good, ct, np.full(n, 10), unrelated=rng.normal(0, 0.05, n))
    assert ok["passed"] == {"echo": True, "unrelated": True, "paper_chains": True, "ordering": True}
    np.testing.assert_allclose(ok["paper_chains"], np.arange(5), atol=0.1)
    echo = good.copy(); echo[ct["requests"]] = 10.0  # loves the constitution's own sentences
    assert scorer_controls(echo, ct, np.full(n, 10))["passed"]["echo"] is False
    flat = good.copy(); flat[ct["chains"]] = rng.normal(0, 1, ct["chains"].shape)  # blind to the revisions
    assert scorer_controls(flat, ct, np.full(n, 10))["passed"]["paper_chains"] is False
    assert scorer_controls(good, ct, np.full(n, 10), unrelated=good)["passed"]["unrelated"] is False  # any preamble does it
    upside = good.copy(); upside[ct["published"]["helpful RLHF"]] = 5.0
    assert scorer_controls(upside, ct, np.full(n, 10))["passed"]["ordering"] is False


def test_control_texts_on_anthropics_palms_files(anthropic_dir):
    c = load_constitution("default")
    ct = control_texts(anthropic_dir / "samples", c)
    assert ct["chains"].shape == (40, 5) and len(ct["requests"]) == 40
    assert all(ct["published"][label].shape == (40, 1) for label in PUBLISHED.values())
    for i, row in enumerate(ct["chains"]):  # every text of a row answers the same prompt
        idx = [*row, *(ct["published"][label][i, 0] for label in PUBLISHED.values()), ct["requests"][i]]
        assert len({ct["prompts"][j] for j in idx}) == 1
    assert len({ct["responses"][j] for j in ct["chains"][0]}) == 5  # the initial response and four different revisions
    assert {ct["responses"][j] for j in ct["requests"]} <= {p.revision_request for p in c.critique_revision}


def test_the_main_run_truncated_is_exactly_a_shorter_run(tiny, tmp_path):
    model, tok = tiny
    c, prompts = load_constitution("default"), bundled_prompts("red-team")[:3]
    s = CritiqueRevisionSettings(revisions=3, batch_size=3, initial_tokens=6, critique_tokens=6, revision_tokens=6)
    long = critique_revise(model, tok, prompts, c, tmp_path / "long", s, progress=False)
    short = critique_revise(model, tok, prompts, c, tmp_path / "short", replace(s, revisions=1), progress=False)
    unkeyed = [{k: v for k, v in r.items() if k != "chain_key"} for r in short]  # (a chain key names the whole chain)
    assert truncate_records(long, 1) == unkeyed
    assert truncate_records(long, 1) != long


def test_ablations_take_the_ablation_revisions(tmp_path, monkeypatch):
    monkeypatch.setenv("CAI_REPRO_CACHE", str(tmp_path / "cache"))
    P = load_params("smoke", cr={"revisions": 2}, analysis={"n_ablation": 2, "ablation_revisions": 1})
    pipe = Pipeline(P, root=tmp_path / "stages", progress=False)
    assert {len(r["steps"]) for r in load_records(pipe.critique_revision())} == {2}
    assert {len(r["steps"]) for r in load_records(pipe.cr_ablation(direct=True))} == {1}
    same = Pipeline(load_params("smoke", cr={"revisions": 2}, analysis={"n_ablation": 2, "ablation_revisions": None}),
                    root=tmp_path / "stages", progress=False)
    assert {len(r["steps"]) for r in load_records(same.cr_ablation(direct=True))} == {2}
