"""Labelling throughput of the multiple-choice scorer (`cai_repro.feedback.multiple_choice_probs`).

Measured in one run, on the same items:
* the scorer: one prompt encoding shared by all options, LM head only at the option tokens;
* the naive baseline: one full forward per option with the LM head at every position (`naive_continuation_logprob`);
* the ceiling: tokens/s of the model body alone (`model.get_decoder()`, no LM head) at batch 8 x 256 tokens.

Reported: comparisons/s and prompt tokens/s of both, the speed-up over naive, and the scorer's fraction of the ceiling
(targets from the issue, on gemma-3-270m: >= 3x naive and >= 0.7 of the ceiling). Items are the HHH dev slice when
Anthropic's reference data is on the machine, else synthetic two-option prompts of similar length.

    python benchmarks/labeling.py [--model gemma-3-270m] [--dtype auto] [--items N] [--quick] [--json]

With --json the last line of stdout is one JSON object. The functions are importable (benchmarks/run.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch


def load_items(n: int, seed: int = 0) -> tuple[list[str], list[list[str]], str]:
    "`n` two-option prompts and their options: the HHH dev slice if present, else synthetic ones."
    from cai_repro.artifacts import anthropic_data_dir
    from cai_repro.feedback import eval_path, load_eval
    if anthropic_data_dir() is not None:
        try:
            items = load_eval(eval_path("hhh-dev"))
            items = (items * (n // len(items) + 1))[:n]
            return [it.prompt for it in items], [it.options for it in items], "hhh-dev"
        except Exception:
            pass
    rng = np.random.default_rng(seed)
    words = "the a reply person help question answer kind safe harm people would could because".split()
    prompts = []
    for i in range(n):
        body = lambda k: " ".join(rng.choice(words, k))
        prompts.append(f"\n\nConsider the following conversation:\n\nHuman: {body(30)}\n\nWhich reply is better? Options:\n"
                       f" (A) [[[{body(int(rng.integers(40, 160)))}]]]\n (B) [[[{body(int(rng.integers(40, 160)))}]]]\n\nThe answer is:")
    return prompts, [[" (A)", " (B)"]] * n, "synthetic"


def _timed(fn, repeats: int) -> tuple[float, object]:
    "The median wall time of `repeats` calls (after one untimed warm-up call), and the last result."
    fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure_scorer(model, tok, prompts, options, repeats: int = 1) -> dict:
    "Throughput of `multiple_choice_probs` on the items."
    from cai_repro.feedback import multiple_choice_probs
    n_tok = sum(len(tok(p).input_ids) for p in prompts)
    with torch.inference_mode():
        sec, probs = _timed(lambda: multiple_choice_probs(model, tok, prompts, options), repeats)
    return {"seconds": sec, "comparisons_per_s": len(prompts) / sec, "prompt_tokens_per_s": n_tok / sec,
            "probs": [p.tolist() for p in probs]}


def measure_naive(model, tok, prompts, options, repeats: int = 1) -> dict:
    "Throughput of one full forward per option, LM head at every position, softmaxed over the options."
    from cai_repro.feedback import normalise_logprobs
    from cai_repro.models import naive_continuation_logprob
    n_tok = sum(len(tok(p).input_ids) for p in prompts)
    def go():
        return [normalise_logprobs([naive_continuation_logprob(model, tok, p, o) for o in opts])
                for p, opts in zip(prompts, options)]
    with torch.inference_mode():
        sec, probs = _timed(go, repeats)
    return {"seconds": sec, "comparisons_per_s": len(prompts) / sec, "prompt_tokens_per_s": n_tok / sec,
            "probs": [p.tolist() for p in probs]}


def measure_ceiling(model, batch: int = 8, seq: int = 256, repeats: int = 3, seed: int = 0) -> dict:
    "Tokens/s of the model body alone (no LM head) on random tokens at `batch` x `seq`."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, min(model.config.vocab_size, 30000), (batch, seq), generator=g).to(model.device)
    decoder = model.get_decoder()
    with torch.inference_mode():
        sec, _ = _timed(lambda: decoder(input_ids=ids, use_cache=False), repeats)
    return {"seconds": sec, "tokens_per_s": batch * seq / sec, "batch": batch, "seq": seq}


def _peak_rss_mb() -> float:
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # ru_maxrss is in KiB on Linux


def run(model_spec: str = "gemma-3-270m", dtype: str = "auto", n_items: int | None = None, quick: bool = False) -> dict:
    "The whole benchmark: scorer, naive and ceiling on one loaded model, in one process."
    from cai_repro.models import load_model, resolve_dtype
    n_items = n_items or (8 if quick else 32)
    model, tok = load_model(model_spec, dtype=dtype)
    prompts, options, source = load_items(n_items)
    ceiling_before = measure_ceiling(model, repeats=2 if quick else 3)
    scorer = measure_scorer(model, tok, prompts, options, repeats=1 if quick else 2)
    naive = measure_naive(model, tok, prompts, options, repeats=1)
    ceiling_after = measure_ceiling(model, repeats=2 if quick else 3)
    ceiling = (ceiling_before["tokens_per_s"] + ceiling_after["tokens_per_s"]) / 2
    diff = max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(scorer["probs"], naive["probs"]))
    return {"benchmark": "labeling", "model": model_spec, "dtype": str(resolve_dtype(dtype)).replace("torch.", ""),
            "threads": torch.get_num_threads(), "items": n_items, "items_source": source,
            "prompt_tokens": sum(len(tok(p).input_ids) for p in prompts),
            "scorer": {k: v for k, v in scorer.items() if k != "probs"}, "naive": {k: v for k, v in naive.items() if k != "probs"},
            "ceiling_tokens_per_s": ceiling, "ceiling_runs": [ceiling_before["tokens_per_s"], ceiling_after["tokens_per_s"]],
            "speedup_vs_naive": naive["seconds"] / scorer["seconds"],
            "fraction_of_ceiling": scorer["prompt_tokens_per_s"] / ceiling,
            "max_prob_diff_vs_naive": diff,
            "targets": {"speedup_vs_naive": 3.0, "fraction_of_ceiling": 0.7},
            # flat keys read by benchmarks/run.py
            "ceiling_prefill_tok_s": ceiling, "labeling_speedup_vs_naive": naive["seconds"] / scorer["seconds"],
            "labeling_fraction_of_ceiling": scorer["prompt_tokens_per_s"] / ceiling,
            "labeling_comparisons_per_s": scorer["comparisons_per_s"], "peak_rss_mb": _peak_rss_mb()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--items", type=int, help="comparisons to score (default 32; 8 with --quick)")
    ap.add_argument("--quick", action="store_true", help="fewer items and repeats")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)
    r = run(args.model, args.dtype, args.items, args.quick)
    print(f"labelling {r['items']} {r['items_source']} comparisons ({r['prompt_tokens']} prompt tokens) with {r['model']} "
          f"({r['dtype']}, {r['threads']} threads)", file=sys.stderr if args.json else sys.stdout)
    lines = [f"  scorer: {r['scorer']['comparisons_per_s']:.2f} comparisons/s, {r['scorer']['prompt_tokens_per_s']:.0f} prompt tokens/s",
             f"  naive:  {r['naive']['comparisons_per_s']:.2f} comparisons/s, {r['naive']['prompt_tokens_per_s']:.0f} prompt tokens/s",
             f"  ceiling (body alone, 8x256): {r['ceiling_tokens_per_s']:.0f} tokens/s",
             f"  speed-up vs naive: {r['speedup_vs_naive']:.2f}x (target >= 3); fraction of ceiling: "
             f"{r['fraction_of_ceiling']:.2f} (target >= 0.7); max |p - p_naive| = {r['max_prob_diff_vs_naive']:.2g}"]
    print("\n".join(lines), file=sys.stderr if args.json else sys.stdout)
    if args.json: print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
