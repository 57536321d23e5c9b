"""Prefix-shared scoring (`cai_repro.scoring`): prompts that open with the same tokens share one encoding of them, and
score as if each were encoded whole."""
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import cai_repro.scoring as scoring
from cai_repro.models import byte_tokenizer
from cai_repro.scoring import continuation_logprobs, multiple_choice_probs, naive_continuation_logprob

FEW_SHOT = ("Q: Which is bigger, 2 or 3?\nA: (B)\n\nQ: Which of these is a fruit, a pear or a brick?\nA: (A)\n\n")
QUESTIONS = ["Q: Which is a colour, red or seven?\nA:", "Q: ?\nA:",
             "Q: A question that goes on far past the length of the whole few-shot prefix above, and then some more "
             "words, so that its row re-encodes all of that prefix in its batch.\nA:", "Q: Is ice cold?\nA:"]
CONTS = [[" (A)", " (B)"], [" (A)", ""], [" (B) because it is longer", " (A)"], [" yes, it is"]]


@pytest.fixture(scope="module")
def tiny_llama():
    "A second architecture: Llama at toy size, full attention only, built from a config."
    tok = byte_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=4096, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return AutoModelForCausalLM.from_config(cfg).eval(), tok


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_shared_prefix_scores_equal_re_encoding_and_the_naive_forward(arch, tiny, tiny_llama):
    model, tok = tiny if arch == "gemma3" else tiny_llama
    prompts = [FEW_SHOT + q for q in QUESTIONS] + ["Unrelated prompt:"]
    conts = CONTS + [[" x"]]
    for max_batch_tokens in (64, 4096):  # one suffix per batch, and all in one batch
        shared = continuation_logprobs(model, tok, prompts, conts, max_batch_tokens=max_batch_tokens)
        whole = continuation_logprobs(model, tok, prompts, conts, max_batch_tokens=max_batch_tokens, share_prefix=0)
        for p, cs, a, b in zip(prompts, conts, shared, whole):
            for c, x, y in zip(cs, a, b):
                ref = naive_continuation_logprob(model, tok, p, c) if c else 0.0
                assert abs(x - y) < 1e-4 and abs(x - ref) < 1e-4, (p, c, x, y, ref)


def test_the_prefix_is_encoded_once_and_the_decoder_sees_fewer_tokens(tiny, monkeypatch):
    model, tok = tiny
    prompts = [FEW_SHOT + q for q in QUESTIONS]
    calls, seen = [], []
    real = scoring.prefix_cache
    monkeypatch.setattr(scoring, "prefix_cache", lambda m, ids: calls.append(len(ids)) or real(m, ids))
    hook = model.get_decoder().register_forward_hook(lambda mod, args, kw, out: seen.append(kw["input_ids"].numel()), with_kwargs=True)
    try:
        continuation_logprobs(model, tok, prompts, CONTS)
        assert calls == [len(tok(FEW_SHOT + "Q: ").input_ids)]  # one group, its prefix encoded once
        shared_tokens, seen[:] = sum(seen), []
        continuation_logprobs(model, tok, prompts, CONTS, share_prefix=0)
        assert shared_tokens < 0.8 * sum(seen), (shared_tokens, sum(seen))
    finally:
        hook.remove()


def test_scoring_each_prompt_on_its_own_does_not_share(tiny, monkeypatch):
    "`max_rows=1` promises a score independent of the rest of the call, so it re-encodes every prompt whole."
    model, tok = tiny
    monkeypatch.setattr(scoring, "prefix_cache", lambda *a: pytest.fail("shared a prefix with max_rows=1"))
    continuation_logprobs(model, tok, [FEW_SHOT + q for q in QUESTIONS], CONTS, max_rows=1)


def test_multiple_choice_with_a_few_shot_prefix_matches_the_naive_probabilities(tiny):
    model, tok = tiny
    prompts = [FEW_SHOT + q for q in QUESTIONS[:3]]
    opts = [[" (A)", " (B)"]] * 3
    for p, o, got in zip(prompts, opts, multiple_choice_probs(model, tok, prompts, opts)):
        want = scoring.normalise_logprobs([naive_continuation_logprob(model, tok, p, x) for x in o])
        assert abs(got - want).max() < 1e-5
