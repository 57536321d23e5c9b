"""Prefix-shared scoring against re-encoding every prompt whole: the same texts, the same process, timed alternately.

Two workloads, each scored with `share_prefix=32` (the default: prompts that open with the same tokens share one
encoding of them) and with `share_prefix=0` (every prompt encoded whole):
* **05 controls**: notebook 05's scorer controls (`preamble_deltas` over `control_texts`): each PALMS prompt's
  critique -> revision chain, published answers and revision request, under no preamble and under each of the scorer
  preambles. Without Anthropic's files: synthetic texts of the same shape.
* **mc labeller**: the multiple-choice labeller's prompts, the constitution's few-shot demonstrations before each
  question, on the 250-item HHH dev file (or synthetic questions).

Reported per workload: the median over rounds of (whole seconds / shared seconds), the largest score difference
between the two paths, and the share of prompt tokens that lie in a shared prefix (what sharing can save at most).

    python benchmarks/scoring.py [--model gemma-3-270m] [--quick] [--json]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine, peak_rss_mb  # noqa: E402

from cai_repro.artifacts import anthropic_data_dir
from cai_repro.config import AnalysisSettings
from cai_repro.constitution import load_constitution
from cai_repro.dialogue import PAPER, Turn
from cai_repro.feedback import OPTIONS, feedback_prefix, mc_prompt
from cai_repro.models import load_model
from cai_repro.scoring import contrast_logprobs, continuation_logprobs, shared_prefix_groups
from cai_repro.sl_cai_analysis import control_texts, scorer_preambles


WORDS = "the a reply person help question answer kind safe harm people would could because".split()  # synthetic texts


def controls_workload(n_prompts: int, seed: int = 0):
    "The texts and preambles of 05's scorer controls, as `contrast_logprobs` arguments, and where they came from."
    c = load_constitution("default")
    pre = [p for ps in scorer_preambles(c, AnalysisSettings()).values() for p in ps]
    d = anthropic_data_dir()
    if d is not None:
        ct = control_texts(d / "samples", c, n_prompts=n_prompts)
        by: dict = {}
        for p, r in zip(ct["prompts"], ct["responses"]): by.setdefault(p, []).append(r)
        source = "PALMS"
    else:
        rng = np.random.default_rng(seed)
        by = {f"Question {i}: " + " ".join(rng.choice(WORDS, 12)): [" ".join(rng.choice(WORDS, int(rng.integers(30, 120))))
                                                                     for _ in range(10)] for i in range(n_prompts)}
        source = "synthetic"
    return [[Turn("Human", p)] for p in by], list(by.values()), [pre] * len(by), source


def mc_workload(n_items: int, seed: int = 0):
    "Few-shot prefix + multiple-choice question, and the options, for `n_items` comparisons."
    prefix = feedback_prefix(load_constitution("default"))
    if anthropic_data_dir() is not None:
        from cai_repro.hhh_evals import eval_path, load_eval
        qs, source = [it.prompt for it in load_eval(eval_path("hhh-dev-large"))[:n_items]], "hhh-dev-large"
    else:
        rng = np.random.default_rng(seed)
        body = lambda k: " ".join(rng.choice(WORDS, k))
        qs = [f"\n\nConsider the following conversation:\n\nHuman: {body(30)}\n\nWhich reply is better? Options:\n"
              f" (A) [[[{body(int(rng.integers(40, 160)))}]]]\n (B) [[[{body(int(rng.integers(40, 160)))}]]]\n\nThe answer is:"
              for _ in range(n_items)]
        source = "synthetic"
    return [prefix + mc_prompt(q) for q in qs], [list(OPTIONS)] * len(qs), source


def alternate(shared, whole, rounds: int, warm: bool = True) -> dict:
    "Time `shared` and `whole` alternately (after one untimed call of each with `warm`); the median ratio and the results."
    if warm: shared(); whole()
    s_sec, w_sec, out = [], [], {}
    for _ in range(rounds):
        t0 = time.perf_counter(); out["shared"] = shared(); s_sec.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); out["whole"] = whole(); w_sec.append(time.perf_counter() - t0)
    return {"shared_s": s_sec, "whole_s": w_sec, "speedup": statistics.median(w / s for w, s in zip(w_sec, s_sec)), **out}


def measure(model_spec: str, quick: bool) -> dict:
    model, tok = load_model(model_spec, dtype="float32")
    rounds = 3  # the multiple-choice part: seconds a round
    convs, resps, pres, src05 = controls_workload(1 if quick else 4)  # minutes a call on Gemma: one round, no warm-up
    run05 = lambda share: contrast_logprobs(model, tok, convs, resps, pres, share_prefix=share)
    r05 = alternate(lambda: run05(32), lambda: run05(0), 1 if quick else 2, warm=False)
    pairs05 = [(a, b) for (ab, aw), (bb, bw) in zip(r05["shared"], r05["whole"]) for a, b in ((ab, bb), (aw, bw))]
    prompts, opts, src_mc = mc_workload(8 if quick else 24)
    runmc = lambda share: continuation_logprobs(model, tok, prompts, opts, share_prefix=share)
    rmc = alternate(lambda: runmc(32), lambda: runmc(0), rounds)
    diffmc = float(np.abs(np.array(rmc["shared"]) - np.array(rmc["whole"])).max())
    def prefix_share(ids, extra: int = 0) -> float:
        "The share of all tokens (prompts, plus `extra` continuation tokens) that a shared prefix saves."
        return sum((len(m) - 1) * L for m, L in shared_prefix_groups(ids)) / (sum(len(i) for i in ids) + extra)
    ids05 = [tok(PAPER.render([*([Turn("System", p)] if p else []), *c], open="Assistant")).input_ids
             for c, ps in zip(convs, pres) for p in [None, *ps]]
    n_cont05 = sum(len(tok(PAPER.response(r), add_special_tokens=False).input_ids) for rs in resps for r in rs) * (len(pres[0]) + 1)
    return {"benchmark": "scoring", "model": model_spec, "dtype": "float32", "rounds": rounds, **machine(),
            "controls_source": src05, "controls_prompts": len(convs), "controls_texts": sum(map(len, resps)),
            "controls_preambles": len(pres[0]),
            "controls_prefix_token_share": round(prefix_share(ids05, n_cont05), 4),
            "controls_shared_s": r05["shared_s"], "controls_whole_s": r05["whole_s"],
            "controls_max_abs_diff": max(float(np.abs(a - b).max()) for a, b in pairs05),
            "controls_max_rel_diff": max(float((np.abs(a - b) / np.maximum(np.abs(b), 1)).max()) for a, b in pairs05),
            "mc_source": src_mc, "mc_items": len(prompts), "mc_prefix_token_share": round(prefix_share([tok(p).input_ids for p in prompts]), 4),
            "mc_shared_s": rmc["shared_s"], "mc_whole_s": rmc["whole_s"], "mc_max_abs_diff": diffmc,
            # flat keys read by benchmarks/run.py
            "scoring_prefix_speedup": round(r05["speedup"], 3), "scoring_prefix_speedup_mc": round(rmc["speedup"], 3),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--quick", action="store_true", help="1 control prompt (one round) and 8 multiple-choice items")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    a = ap.parse_args(argv)
    emit(measure(a.model, a.quick), a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
