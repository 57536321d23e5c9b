"""Preference-model training throughput: `train_pm` (TRL RewardTrainer, soft-label subclass) as a fraction of a plain loop.

Both run the same model (the PM built from `model_spec`, with the same LoRA adapters or fully trainable) on the same
collated batches (the trainer's own dataloader, same seed), in the same run. The plain loop does forward, the soft
Bradley–Terry loss, backward and an AdamW step, and nothing else; the ratio is what the trainer adds (data pipeline,
per-step logging of reward statistics, scheduler, checkpointing). The first step of each is a warm-up and not
timed; the two alternate and the best of each counts (the machines are shared and noisy).

    python benchmarks/pm_training.py [--quick] [--json] [--model gemma-3-270m] [--full] [--dtype float32]
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

from cai_repro.config import PMSettings
from cai_repro.dialogue import PAPER
from cai_repro.preference_model import SoftRewardTrainer, load_pm_base, pm_dataset, soft_bt_loss, train_pm
from cai_repro.prompts import bundled_prompts


def comparisons(n: int) -> list[dict]:
    "Pairs of answers of similar length to bundled benign prompts, with soft targets."
    ps = bundled_prompts("helpful")
    return [{"id": f"b{i}", "source": "bench", "category": "bench", "prompt": ps[i % len(ps)].text,
             "chosen": PAPER.conversation(ps[i % len(ps)].text, "Here is a careful answer with a few concrete steps to follow. " * 2),
             "rejected": PAPER.conversation(ps[i % len(ps)].text, "I can't help with that. Please ask someone else instead. " * 2),
             "p": 0.6 + 0.35 * (i % 5) / 4} for i in range(n)]


def _batches(model_spec, comps, settings, seed):
    "The collated batches the trainer will see, in its order (a trainer built only to get its dataloader)."
    from trl import RewardConfig
    model, tok = load_pm_base(model_spec, seed=seed)
    ds, _ = pm_dataset(comps, tok, settings.max_length)
    d = Path(tempfile.mkdtemp())
    try:
        args = RewardConfig(output_dir=str(d), per_device_train_batch_size=settings.batch_size, bf16=False,
                            use_cpu=not torch.cuda.is_available(), report_to="none", seed=seed, data_seed=seed,
                            max_length=None, gradient_checkpointing=False, dataloader_pin_memory=False)
        return list(SoftRewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).get_train_dataloader())
    finally:
        shutil.rmtree(d)


def plain_loop(model_spec, batches, settings, dtype, seed) -> tuple[float, float]:
    "(seconds, tokens) over steps 2..N of forward + soft BT loss + backward + AdamW step."
    from peft import LoraConfig, get_peft_model
    model, _ = load_pm_base(model_spec, dtype=dtype, seed=seed)
    if not settings.full:
        model = get_peft_model(model, LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                                                 task_type="SEQ_CLS", target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                 modules_to_save=["score"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    t_start, tokens = None, 0
    for i, b in enumerate(batches):
        if i == 1: t_start = time.perf_counter()
        rewards = model(input_ids=b["input_ids"].to(model.device), attention_mask=b["attention_mask"].to(model.device),
                        use_cache=False).logits.squeeze(-1).float()
        chosen, rejected = rewards.chunk(2)
        soft_bt_loss(chosen - rejected, b["p"].to(model.device)).backward()
        opt.step(); opt.zero_grad()
        if i >= 1: tokens += int(b["attention_mask"].sum())
    return time.perf_counter() - t_start, tokens


def trainer_run(model_spec, comps, settings, dtype, seed) -> float:
    "Seconds over steps 2..N of `train_pm`: from the end of step 1 to the end of training (after its checkpoint is saved)."
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self): self.ends = []
        def on_step_end(self, args, state, control, **kw): self.ends.append(time.perf_counter())
        def on_train_end(self, args, state, control, **kw): self.ends.append(time.perf_counter())  # after the last save

    clock, d = StepClock(), Path(tempfile.mkdtemp())
    try:
        train_pm(model_spec, comps, d, settings, dtype=dtype, seed=seed, progress=False, callbacks=[clock])
    finally:
        shutil.rmtree(d)
    return clock.ends[-1] - clock.ends[0]


def measure_pm_training(model_spec: str = "gemma-3-270m", steps: int = 8, batch_size: int = 4, full: bool = False,
                        dtype: str = "float32", seed: int = 0, repeats: int = 2) -> dict:
    """PM training tokens/s through `train_pm`, as a fraction of a plain loop on the same batches (measured here, now).
    The two alternate `repeats` times and the best of each counts, since the machines are shared and noisy."""
    settings = PMSettings(epochs=1, max_steps=steps, batch_size=batch_size, full=full, lr=1e-4, max_length=256,
                           save_steps=steps)  # one checkpoint at the end, as a real run would write periodically
    comps = comparisons(steps * batch_size)
    batches = _batches(model_spec, comps, settings, seed)
    assert len(batches) == steps, (len(batches), steps)
    plain_s, trainer_s = float("inf"), float("inf")
    for _ in range(repeats):
        s, tokens = plain_loop(model_spec, batches, settings, dtype, seed)
        plain_s = min(plain_s, s)
        trainer_s = min(trainer_s, trainer_run(model_spec, comps, settings, dtype, seed))
    plain, trainer = tokens / plain_s, tokens / trainer_s
    return {"pm_train_tok_s": round(trainer, 1), "pm_plain_loop_tok_s": round(plain, 1),
            "pm_fraction_of_plain": round(trainer / plain, 3),
            "pm_settings": f"{model_spec} {dtype}, {'full fine-tuning' if full else 'LoRA r=8 on attention + score head'}, "
                           f"{steps} steps of {batch_size} pairs (first step untimed), {tokens} timed tokens, best of {repeats}",
            "pm_peak_rss_mb": round(peak_rss_mb())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 steps instead of 10, measured once instead of best of 2")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args(argv)
    emit({**measure_pm_training(a.model, steps=4 if a.quick else 10, full=a.full, dtype=a.dtype, repeats=1 if a.quick else 2),
          "machine": machine()}, a.json)


if __name__ == "__main__":
    main()
