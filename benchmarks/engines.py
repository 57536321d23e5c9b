"""Critique → revision sampling through llama.cpp's server against the in-process engine, side by side in one run.

Both run `critique_revise` on the same prompts with the same settings; only the model argument differs: the embedded
Gemma 3 270M in this process (in the dtype the profiles sample in), or an `OpenAIEngine` on `cai-repro serve
--no-scoring` (llama.cpp's 4-bit kernels on the same GGUF; sampling only, since llama-cpp-python computes the head over
every prompt token when it returns log-probs). Throughput = generated tokens (counted with the model's tokenizer) /
wall seconds. The server starts before the local run and is warmed with one request, so neither side pays a cold start.

    python benchmarks/engines.py [--quick] [--json] [--model gemma-3-270m]

The server serves only the embedded GGUF: with another `--model` this part reports that it was skipped.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, peak_rss_mb  # noqa: E402

from cai_repro.config import CritiqueRevisionSettings, load_params
from cai_repro.constitution import load_constitution
from cai_repro.critique_revision import critique_revise
from cai_repro.engines import OpenAIEngine, llama_server
from cai_repro.models import EMBEDDED_SPEC, load_model
from cai_repro.prompts import bundled_prompts, sample_prompts


def texts_of(records) -> list[str]:
    return [x for r in records for x in [r["initial"], *[v for st in r["steps"] for v in (st["critique"], st["revision"])]]]


def timed_run(model, tok, prompts, s, out) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    recs = critique_revise(model, tok, prompts, load_constitution("default"), out, s, 0, progress=False)
    return time.perf_counter() - t0, recs


def measure(n_prompts: int, tokens: int, dtype: str = "auto") -> dict:
    P = load_params("cpu")
    s = CritiqueRevisionSettings(revisions=1, batch_size=n_prompts, initial_tokens=tokens, critique_tokens=tokens,
                                 revision_tokens=tokens)
    prompts = sample_prompts(bundled_prompts("red-team"), n_prompts, seed=0)
    model, tok = load_model(EMBEDDED_SPEC, dtype=dtype)
    count = lambda recs: sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts_of(recs))
    work = Path(tempfile.mkdtemp())
    try:
        with llama_server(scoring=False) as url:
            engine = OpenAIEngine(replace(P.engine, engine="openai", base_url=url), EMBEDDED_SPEC, tok)
            engine.generate(["Hello"], max_new_tokens=1, row_seeds=[0])  # warm: the model is loaded and answering
            local_s, local = timed_run(model, tok, prompts, s, work / "local")
            served_s, served = timed_run(engine, tok, prompts, s, work / "served")
    finally:
        shutil.rmtree(work)
    local_tps, served_tps = count(local) / local_s, count(served) / served_s
    return {"engine_tok_s": round(served_tps, 1), "local_tok_s": round(local_tps, 1),
            "engine_speedup_vs_local": round(served_tps / local_tps, 2),
            "engine_settings": f"{EMBEDDED_SPEC}: llama.cpp server (Q4_K_M, sampling only) vs in-process "
                               f"{str(model.dtype).replace('torch.', '')} batch {n_prompts}; {n_prompts} prompts x 1 revision, "
                               f"<= {tokens} new tokens per call, T=1",
            "engine_peak_rss_mb": round(peak_rss_mb())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 prompts, 16 tokens per call")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default=EMBEDDED_SPEC)
    ap.add_argument("--dtype", default="auto", help="the in-process side's dtype (default: the profiles' choice)")
    a = ap.parse_args(argv)
    if a.model != EMBEDDED_SPEC:
        emit({"engine_skipped": f"the llama.cpp server serves the embedded GGUF only (--model {EMBEDDED_SPEC})",
              "engine_peak_rss_mb": round(peak_rss_mb())}, a.json)
        return
    r = measure(4 if a.quick else load_params("cpu").cr.batch_size, 16 if a.quick else 48, a.dtype)
    emit({**r, "machine": machine()}, a.json)


if __name__ == "__main__":
    main()
