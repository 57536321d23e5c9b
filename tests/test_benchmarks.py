"The performance suite runs end to end and reports the keys issue 6 asks for (on the tiny random model: seconds)."
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ["scoring_prefix_speedup", "scoring_prefix_speedup_mc", "ceiling_prefill_tok_s", "labeling_speedup_vs_naive", "labeling_fraction_of_ceiling",
            "generation_speedup_vs_naive", "generation_speedup_vs_naive_profile_dtype",
            "sft_fraction_of_plain", "sft_loop_fraction_of_plain", "pm_fraction_of_plain"]


def test_benchmark_suite_reports_every_ratio_and_peak_memory():
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", "--model", "tiny-random"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for key in REQUIRED:
        assert isinstance(out[key], (int, float)) and out[key] > 0, (key, out[key])
    assert set(out["peak_rss_mb"]) == set(out["parts"]) and all(v and v > 0 for v in out["peak_rss_mb"].values())
    assert out["commit"] and len(out["commit"]) == 40 and out["clean"] in (True, False)  # the code measured
    sco = out["parts"]["scoring"]  # both paths scored the same texts, and the speed-up is their time ratio
    assert sco["controls_max_abs_diff"] < 1e-2 and sco["mc_max_abs_diff"] < 1e-4
    ratios = sorted(w / s for w, s in zip(sco["mc_whole_s"], sco["mc_shared_s"]))
    assert len(ratios) == 3 and out["scoring_prefix_speedup_mc"] == round(ratios[1], 3)  # the median of the rounds
    assert out["sft_overhead_s"] >= 0 and out["sft_loop_fraction_of_plain"] >= out["sft_fraction_of_plain"]  # the loop alone, and the rest
    gen = out["parts"]["generation"]
    assert gen["generation_dtype"] == "float32" and gen["generation_batch"] == 8  # --quick: 8 prompts fill one batch
    lab = out["parts"]["labeling"]  # --quick: 3 scorer runs between 4 ceiling samples, the fraction is the rounds' median
    assert lab["rounds"] == len(lab["fraction_of_ceiling_rounds"]) == 3 and len(lab["ceiling_runs"]) == 4
    assert out["labeling_fraction_of_ceiling"] == sorted(lab["fraction_of_ceiling_rounds"])[1]
