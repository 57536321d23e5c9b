"""Labelling throughput of the multiple-choice scorer (`cai_repro.feedback.multiple_choice_probs`).

Measured in one run, on the same items:
* the scorer: one prompt encoding shared by all options, LM head only at the option tokens;
* the naive baseline: one full forward per option with the LM head at every position (`naive_continuation_logprob`);
* the ceiling: tokens/s of the model body alone (`model.get_decoder()`, no LM head) at batch 8 x 256 tokens.

The ceiling and the scorer are timed alternately (ceiling, scorer, ceiling, ..., scorer, ceiling); each ceiling sample
runs about as many tokens as the scorer's items, and each scorer run is compared with the two ceiling samples around
it. The reported fraction is the median of those per-round ratios. On the shared 2-core machines the ceiling alone
moves by 2x over minutes, so a ceiling timed minutes before or after the scorer says more about the machine than
about the scorer.

Reported: comparisons/s and prompt tokens/s of both, the speed-up over naive, and the scorer's fraction of the ceiling
(targets from the issue, on gemma-3-270m: >= 3x naive and >= 0.7 of the ceiling). Items are the HHH dev slice when
Anthropic's reference data is on the machine, else synthetic two-option prompts of similar length.

    python benchmarks/labeling.py [--model gemma-3-270m] [--dtype auto] [--items N] [--rounds R] [--quick] [--json]

With --json the last line of stdout is one JSON object (benchmarks/run.py reads it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mb  # noqa: E402


def load_items(n: int, seed: int = 0) -> tuple[list[str], list[list[str]], str]:
    "`n` two-option prompts and their options: the HHH dev slice if present, else synthetic ones."
    from cai_repro.artifacts import anthropic_data_dir
    from cai_repro.hhh_evals import eval_path, load_eval
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


def _seconds(fn) -> tuple[float, object]:
    "Wall time of one call (on a GPU, until its kernels have finished), and its result."
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync(); t0 = time.perf_counter(); out = fn(); sync()
    return time.perf_counter() - t0, out


def ceiling_call(model, batch: int = 8, seq: int = 256, seed: int = 0):
    "A call of the model body alone (no LM head) on random tokens at `batch` x `seq`, and its token count."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, min(model.config.vocab_size, 30000), (batch, seq), generator=g).to(model.device)
    decoder = model.get_decoder()
    return (lambda: decoder(input_ids=ids, use_cache=False)), batch * seq


def paired_rounds(model, tok, prompts, options, rounds: int) -> dict:
    """The ceiling and the scorer timed alternately: ceiling, scorer, ceiling, ..., scorer, ceiling, after one untimed
    call of each. Each ceiling sample runs about as many tokens as the scorer's items, and each scorer run is compared
    with the mean of the two ceiling samples around it. Returns the throughputs, the ratio per round, and the
    scorer's last probabilities."""
    from cai_repro.scoring import multiple_choice_probs
    n_tok = sum(len(tok(p).input_ids) for p in prompts)
    ceiling, ceiling_tokens = ceiling_call(model)
    calls = max(1, round(n_tok / ceiling_tokens))
    def ceiling_sample() -> float:
        return calls * ceiling_tokens / sum(_seconds(ceiling)[0] for _ in range(calls))
    scorer = lambda: multiple_choice_probs(model, tok, prompts, options)
    scorer_sec, probs = [], None
    with torch.inference_mode():
        ceiling(); scorer()
        ceil_tok_s = [ceiling_sample()]
        for _ in range(rounds):
            sec, probs = _seconds(scorer)
            scorer_sec.append(sec)
            ceil_tok_s.append(ceiling_sample())
    scorer_tok_s = [n_tok / s for s in scorer_sec]
    around = [(a + b) / 2 for a, b in zip(ceil_tok_s, ceil_tok_s[1:])]
    return {"prompt_tokens": n_tok, "ceiling_calls_per_sample": calls, "ceiling_tok_s": ceil_tok_s,
            "scorer_seconds": scorer_sec, "scorer_tok_s": scorer_tok_s,
            "fractions": [s / c for s, c in zip(scorer_tok_s, around)], "probs": [p.tolist() for p in probs]}


def measure_naive(model, tok, prompts, options) -> dict:
    "Throughput of one full forward per option, LM head at every position, softmaxed over the options (one timed call)."
    from cai_repro.scoring import naive_continuation_logprob, normalise_logprobs
    n_tok = sum(len(tok(p).input_ids) for p in prompts)
    def go():
        return [normalise_logprobs([naive_continuation_logprob(model, tok, p, o) for o in opts])
                for p, opts in zip(prompts, options)]
    with torch.inference_mode():
        go()  # warm-up
        sec, probs = _seconds(go)
    return {"seconds": sec, "comparisons_per_s": len(prompts) / sec, "prompt_tokens_per_s": n_tok / sec,
            "probs": [p.tolist() for p in probs]}


def run(model_spec: str = "gemma-3-270m", dtype: str = "auto", n_items: int | None = None, quick: bool = False,
        rounds: int | None = None) -> dict:
    "The whole benchmark: ceiling and scorer in alternating rounds, then naive, on one loaded model, in one process."
    from cai_repro.models import load_model, resolve_dtype
    n_items = n_items or (8 if quick else 32)
    rounds = rounds or (3 if quick else 5)
    model, tok = load_model(model_spec, dtype=dtype)
    prompts, options, source = load_items(n_items)
    paired = paired_rounds(model, tok, prompts, options, rounds)
    naive = measure_naive(model, tok, prompts, options)
    median = statistics.median
    scorer_sec = median(paired["scorer_seconds"])
    ceiling, fraction = median(paired["ceiling_tok_s"]), median(paired["fractions"])
    diff = max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(paired["probs"], naive["probs"]))
    scorer = {"seconds": scorer_sec, "comparisons_per_s": n_items / scorer_sec,
              "prompt_tokens_per_s": paired["prompt_tokens"] / scorer_sec}
    return {"benchmark": "labeling", "model": model_spec, "dtype": str(resolve_dtype(dtype)).replace("torch.", ""),
            "threads": torch.get_num_threads(), "items": n_items, "items_source": source,
            "prompt_tokens": paired["prompt_tokens"], "rounds": rounds,
            "scorer": scorer, "naive": {k: v for k, v in naive.items() if k != "probs"},
            "ceiling_tokens_per_s": ceiling, "ceiling_runs": paired["ceiling_tok_s"],
            "ceiling_calls_per_sample": paired["ceiling_calls_per_sample"],
            "fraction_of_ceiling_rounds": paired["fractions"],
            "speedup_vs_naive": naive["seconds"] / scorer_sec, "fraction_of_ceiling": fraction,
            "max_prob_diff_vs_naive": diff,
            "targets": {"speedup_vs_naive": 3.0, "fraction_of_ceiling": 0.7},
            # flat keys read by benchmarks/run.py
            "ceiling_prefill_tok_s": ceiling, "labeling_speedup_vs_naive": naive["seconds"] / scorer_sec,
            "labeling_fraction_of_ceiling": fraction, "labeling_comparisons_per_s": scorer["comparisons_per_s"],
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--items", type=int, help="comparisons to score (default 32; 8 with --quick)")
    ap.add_argument("--rounds", type=int, help="alternating ceiling/scorer rounds (default 5; 3 with --quick)")
    ap.add_argument("--quick", action="store_true", help="fewer items and rounds")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)
    r = run(args.model, args.dtype, args.items, args.quick, args.rounds)
    print(f"labelling {r['items']} {r['items_source']} comparisons ({r['prompt_tokens']} prompt tokens) with {r['model']} "
          f"({r['dtype']}, {r['threads']} threads)", file=sys.stderr if args.json else sys.stdout)
    lines = [f"  scorer: {r['scorer']['comparisons_per_s']:.2f} comparisons/s, {r['scorer']['prompt_tokens_per_s']:.0f} prompt tokens/s",
             f"  naive:  {r['naive']['comparisons_per_s']:.2f} comparisons/s, {r['naive']['prompt_tokens_per_s']:.0f} prompt tokens/s",
             f"  ceiling (body alone, 8x256): {r['ceiling_tokens_per_s']:.0f} tokens/s (median of {len(r['ceiling_runs'])} samples: "
             f"{', '.join(f'{c:.0f}' for c in r['ceiling_runs'])})",
             f"  fraction of ceiling per round: {', '.join(f'{f:.2f}' for f in r['fraction_of_ceiling_rounds'])}",
             f"  speed-up vs naive: {r['speedup_vs_naive']:.2f}x (target >= 3); fraction of ceiling: "
             f"{r['fraction_of_ceiling']:.2f} (target >= 0.7); max |p - p_naive| = {r['max_prob_diff_vs_naive']:.2g}"]
    print("\n".join(lines), file=sys.stderr if args.json else sys.stdout)
    if args.json: print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
