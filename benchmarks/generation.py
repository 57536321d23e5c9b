"""Critique → revision generation throughput: the pipeline against a naive loop, on the same prompts, same run.

Pipeline: `critique_revise` (batched rows, the few-shot prefix encoded once and its KV cache shared), at the batch
size the `cpu` profile uses (16) with as many prompts as fill one batch.
Naive: the same calls one row at a time through `model.generate`, re-encoding the few-shot prefix every call.
Both sample with the same settings and stop strings; throughput = generated tokens / wall seconds.

    python benchmarks/generation.py [--quick] [--json] [--model gemma-3-270m] [--dtype float32] [--batch-size N]

`--quick` runs 8 prompts (so batch 8) with 32 tokens per call. `--dtype auto` measures in the profile's dtype
(bfloat16 where the CPU runs it natively); both sides always run in the same dtype.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, peak_rss_mb  # noqa: E402

from cai_repro.constitution import load_constitution
from cai_repro.config import CritiqueRevisionSettings, load_params
from cai_repro.critique_revision import (assistant_prefix, chain_turns, critique_prompt, critique_revise,
                                         critique_revision_prefix, revision_prompt)
from cai_repro.dialogue import PAPER, TURN_MARKERS
from cai_repro.models import StopOnStrings, cut_at_stops, load_model
from cai_repro.prompts import bundled_prompts, sample_prompts

PROFILE_BATCH = load_params("cpu").cr.batch_size  # what `make reproduce` samples with


def naive_critique_revise(model, tok, prompts, constitution, s: CritiqueRevisionSettings, seed: int = 0) -> list[str]:
    "The same loop, one row and one `model.generate` call at a time, re-encoding the whole prompt every call."
    from transformers import GenerationConfig, StoppingCriteriaList
    cfg = GenerationConfig(max_new_tokens=1, do_sample=True, temperature=s.temperature, top_k=0, top_p=1.0,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    a_prefix, cr_prefix = assistant_prefix(constitution), critique_revision_prefix(constitution)
    texts = []

    def gen(text, n):
        ids = tok(text, return_tensors="pt").input_ids.to(model.device)
        cfg.max_new_tokens = n
        out = model.generate(ids, generation_config=cfg, stopping_criteria=StoppingCriteriaList([StopOnStrings(tok, TURN_MARKERS, ids.shape[1])]))
        t = cut_at_stops(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), TURN_MARKERS).strip()
        texts.append(t)
        return t

    for i, p in enumerate(prompts):
        torch.manual_seed(i)
        initial = gen(a_prefix + PAPER.human_turn(p.text), s.initial_tokens)
        steps = []
        for principle in constitution.sample_critique_revision(s.revisions, seed, key=p.id):
            chain = chain_turns(p.text, initial, steps)
            c = gen(cr_prefix + critique_prompt(chain, principle.critique_request), s.critique_tokens)
            r = gen(cr_prefix + revision_prompt(chain, principle.critique_request, c, principle.revision_request), s.revision_tokens)
            steps.append({"critique_request": principle.critique_request, "critique": c,
                          "revision_request": principle.revision_request, "revision": r})
    return texts


def generated_tokens(tok, texts) -> int:
    return sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)


def measure(model_spec="gemma-3-270m", dtype="float32", n_prompts=PROFILE_BATCH, revisions=1, tokens=48,
            batch_size=PROFILE_BATCH, seed=0) -> dict:
    model, tok = load_model(model_spec, dtype=dtype)
    dtype = str(model.dtype).replace("torch.", "")
    constitution = load_constitution("default")
    prompts = sample_prompts(bundled_prompts("red-team"), n_prompts, seed=seed)
    s = CritiqueRevisionSettings(revisions=revisions, batch_size=batch_size, initial_tokens=tokens,
                                 critique_tokens=tokens, revision_tokens=tokens)
    out = tempfile.mkdtemp()
    try:
        t0 = time.perf_counter()
        recs = critique_revise(model, tok, prompts, constitution, Path(out) / "run", s, seed, progress=False)
        fast_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(out)
    fast_texts = [x for r in recs for x in [r["initial"], *[v for st in r["steps"] for v in (st["critique"], st["revision"])]]]
    t0 = time.perf_counter()
    naive_texts = naive_critique_revise(model, tok, prompts, constitution, s, seed)
    naive_s = time.perf_counter() - t0
    fast_tps = generated_tokens(tok, fast_texts) / fast_s
    naive_tps = generated_tokens(tok, naive_texts) / naive_s
    return {"generation_tok_s": round(fast_tps, 1), "generation_naive_tok_s": round(naive_tps, 1),
            "generation_speedup_vs_naive": round(fast_tps / naive_tps, 2),
            "generation_dtype": dtype, "generation_batch": min(batch_size, n_prompts),
            "generation_settings": f"{model_spec} {dtype}, {n_prompts} prompts x {revisions} revision(s), "
                                   f"<= {tokens} new tokens per call, batch {min(batch_size, n_prompts)}, T=1",
            "generation_peak_rss_mb": round(peak_rss_mb())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 prompts (batch 8), 32 tokens per call")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16, or auto (the profiles' choice)")
    ap.add_argument("--batch-size", type=int, default=PROFILE_BATCH, help="the pipeline's batch (default: the cpu profile's)")
    ap.add_argument("--prompts", type=int, help=f"prompts (default {PROFILE_BATCH}; 8 with --quick)")
    a = ap.parse_args(argv)
    r = measure(a.model, a.dtype, n_prompts=a.prompts or (8 if a.quick else PROFILE_BATCH), batch_size=a.batch_size,
                **(dict(tokens=32) if a.quick else {}))
    emit({**r, "machine": machine()}, a.json)


if __name__ == "__main__":
    main()
