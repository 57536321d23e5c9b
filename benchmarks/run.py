"""The performance suite: every benchmark in its own process, one JSON object on the last line.

    python benchmarks/run.py [--quick] [--json] [--model gemma-3-270m]

Each part measures its stage against a baseline *in the same run* (these machines are noisy), and reports its own
peak memory:

| key | what |
|---|---|
| `scoring_prefix_speedup` | notebook 05's scorer-control workload with prompts that open alike sharing one encoding of the opening, against re-encoding every prompt whole (`scoring.py`) |
| `scoring_prefix_speedup_mc` | the same on the multiple-choice labeller's prompts (few-shot demonstrations + question) |
| `ceiling_prefill_tok_s` | tokens/s of the model body alone (no LM head) at batch 8 x 256: the most any prefill-bound stage can reach |
| `labeling_speedup_vs_naive` | the multiple-choice labeller against one full forward per option with the LM head at every position |
| `labeling_fraction_of_ceiling` | the labeller's prompt tokens/s over the ceiling: the median of rounds, each comparing a labeller run with the ceiling timed just before and after it |
| `generation_speedup_vs_naive` | the critique -> revision loop against batch-1 `generate` re-encoding the few-shot prefix every call (float32) |
| `generation_speedup_vs_naive_profile_dtype` | the same in the dtype the profiles sample in (`auto`: bfloat16 on CPUs that run it natively) |
| `sft_fraction_of_plain`, `pm_fraction_of_plain` | training tokens/s of the SFT and PM trainers over a plain forward+backward loop |
| `sft_loop_fraction_of_plain`, `sft_overhead_s` | the same for SFT's training loop alone (the trainer's `train_runtime`), and its seconds outside the loop (loading, dataset, saving) |
| `engine_speedup_vs_local` | critique -> revision tokens/s through llama.cpp's server (`cai-repro serve --no-scoring`) over the in-process engine, same prompts and settings (embedded model only) |
| `peak_rss_mb` | peak resident memory of each part's process |
| `commit`, `clean` | the checkout measured: its git commit and whether its tree was clean |
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = {  # name -> (script, extra args); each prints one JSON object on its last line with --json
    "scoring": ("scoring.py", []),
    "labeling": ("labeling.py", ["--dtype", "float32"]),
    "generation": ("generation.py", ["--dtype", "float32"]),
    "generation_profile_dtype": ("generation.py", ["--dtype", "auto"]),
    "sft": ("sft_training.py", []),
    "pm": ("pm_training.py", ["--dtype", "float32"]),
    "engines": ("engines.py", []),
}


def run_part(name: str, model: str, quick: bool) -> dict:
    script, extra = PARTS[name]
    cmd = [sys.executable, str(HERE / script), "--json", "--model", model, *extra, *(["--quick"] if quick else [])]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines()
        print(f"[bench] {name} failed (exit {p.returncode}):", *lines[-25:], sep="\n", file=sys.stderr, flush=True)
        return {"error": lines[-1] if lines else f"exit {p.returncode}"}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def checkout() -> dict:
    "The commit this suite measured and whether the tree was clean (None outside a git checkout)."
    from cai_repro.reproduce import checkout_state
    st = checkout_state(HERE.parent)
    return {"commit": st["commit"], "clean": st["clean"]}


def pick(d: dict, *keys):
    for k in keys:
        if k in d: return d[k]
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="cai-repro performance suite")
    ap.add_argument("--quick", action="store_true", help="fewer items in every part (a few minutes in all)")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--only", nargs="+", choices=list(PARTS))
    ap.add_argument("--out", help="also write the summary to this JSON file (`make bench` writes report/bench.json, the record the README's numbers come from)")
    a = ap.parse_args(argv)
    parts = {}
    for name in a.only or PARTS:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        parts[name] = run_part(name, a.model, a.quick)
        print(f"[bench] {name}: {parts[name]}", file=sys.stderr, flush=True)
    lab, gen, gen_auto, sft, pm, eng, sco = (parts.get(k, {}) for k in ("labeling", "generation", "generation_profile_dtype", "sft", "pm", "engines", "scoring"))
    summary = {
        "model": a.model, "quick": a.quick, **checkout(),
        "scoring_prefix_speedup": pick(sco, "scoring_prefix_speedup"),
        "scoring_prefix_speedup_mc": pick(sco, "scoring_prefix_speedup_mc"),
        "ceiling_prefill_tok_s": pick(lab, "ceiling_prefill_tok_s"),
        "labeling_speedup_vs_naive": pick(lab, "labeling_speedup_vs_naive"),
        "labeling_fraction_of_ceiling": pick(lab, "labeling_fraction_of_ceiling"),
        "labeling_comparisons_per_s": pick(lab, "labeling_comparisons_per_s", "comparisons_per_s"),
        "generation_speedup_vs_naive": pick(gen, "generation_speedup_vs_naive"),
        "generation_tok_s": pick(gen, "generation_tok_s"),
        "generation_speedup_vs_naive_profile_dtype": pick(gen_auto, "generation_speedup_vs_naive"),
        "generation_profile_dtype": pick(gen_auto, "generation_dtype"),
        "sft_fraction_of_plain": pick(sft, "sft_fraction_of_plain"),
        "sft_loop_fraction_of_plain": pick(sft, "sft_loop_fraction_of_plain"),
        "sft_overhead_s": pick(sft, "sft_overhead_s"),
        "pm_fraction_of_plain": pick(pm, "pm_fraction_of_plain", "fraction_of_plain"),
        "engine_speedup_vs_local": pick(eng, "engine_speedup_vs_local"),
        "peak_rss_mb": {k: pick(v, "peak_rss_mb", f"{k}_peak_rss_mb", "generation_peak_rss_mb", "sft_peak_rss_mb", "engine_peak_rss_mb") for k, v in parts.items()},
        "parts": parts,
    }
    if not a.json:
        for k, v in summary.items():
            if k != "parts": print(f"{k}: {v}")
    summary["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    print(json.dumps(summary))
    if a.out: Path(a.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if any("error" in v for v in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
