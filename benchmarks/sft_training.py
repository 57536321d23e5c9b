"""SL-CAI training throughput: `train_sft` (TRL SFTTrainer + LoRA) as a fraction of a plain forward+backward loop.

Both process the same tokenized examples in the same batches on the same LoRA-wrapped model, in the same run. The
plain loop does forward, backward and an optimizer step and nothing else; the ratio is what the trainer's data
pipeline, logging and checkpointing cost. The trainer's wall time is split into its training loop (`train_runtime`,
from the trainer's own log) and the rest (loading the model, preparing the dataset, saving the adapter), so that
`sft_loop_fraction_of_plain` says how the loop itself compares and `sft_overhead_s` how much is fixed cost, which
a benchmark of a few dozen examples magnifies and a run of hundreds does not.

    python benchmarks/sft_training.py [--quick] [--json] [--model gemma-3-270m]
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

from cai_repro.config import SFTSettings
from cai_repro.dialogue import PAPER
from cai_repro.models import load_model
from cai_repro.prompts import bundled_prompts
from cai_repro.sl_cai import train_sft


def examples(n: int) -> list[dict]:
    ps = bundled_prompts("helpful")[:n]
    return [{"prompt": PAPER.human_turn(p.text), "completion": f" Here is a careful answer to '{p.text}' with some detail. " * 2}
            for p in ps]


def plain_loop_tok_s(model_spec, exs, batch_size, lora_r) -> float:
    from peft import LoraConfig, get_peft_model
    model, tok = load_model(model_spec)
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    texts = [e["prompt"] + e["completion"] + tok.eos_token for e in exs]
    tok.padding_side = "right"
    n_tok, t0 = 0, time.perf_counter()
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True).to(model.device)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward(); opt.step(); opt.zero_grad()
        n_tok += int(enc.attention_mask.sum())
    return n_tok / (time.perf_counter() - t0)


def trainer_tok_s(model_spec, exs, batch_size, lora_r) -> tuple[float, float, float]:
    "Tokens/s of `train_sft` end to end and of its training loop alone, and its seconds outside the loop."
    import json
    from cai_repro.models import load_model as lm
    _, tok = lm(model_spec)
    n_tok = sum(len(tok(e["prompt"] + e["completion"]).input_ids) + 1 for e in exs)
    d = Path(tempfile.mkdtemp())
    try:
        t0 = time.perf_counter()
        out = train_sft(model_spec, exs, d / "m", SFTSettings(epochs=1, lr=1e-4, batch_size=batch_size, lora_r=lora_r,
                                                              lora_alpha=2 * lora_r, full=False, max_length=512), work_dir=d / "ck")
        wall = time.perf_counter() - t0
        loop = next(e["train_runtime"] for e in json.loads((Path(out) / "train_log.json").read_text()) if "train_runtime" in e)
        return n_tok / wall, n_tok / loop, wall - loop
    finally:
        shutil.rmtree(d)


def measure(model_spec="gemma-3-270m", n=32, batch_size=4, lora_r=8) -> dict:
    exs = examples(n)
    plain = plain_loop_tok_s(model_spec, exs, batch_size, lora_r)
    trainer, loop, overhead = trainer_tok_s(model_spec, exs, batch_size, lora_r)
    return {"sft_train_tok_s": round(trainer, 1), "sft_plain_fwd_bwd_tok_s": round(plain, 1),
            "sft_fraction_of_plain": round(trainer / plain, 3), "sft_loop_fraction_of_plain": round(loop / plain, 3),
            "sft_overhead_s": round(overhead, 2),
            "sft_settings": f"{model_spec} float32, LoRA r={lora_r} on attention, {n} examples, batch {batch_size}, 1 epoch",
            "sft_peak_rss_mb": round(peak_rss_mb())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 examples")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default="gemma-3-270m")
    a = ap.parse_args(argv)
    emit({**measure(a.model, n=16 if a.quick else 32), "machine": machine()}, a.json)


if __name__ == "__main__":
    main()
