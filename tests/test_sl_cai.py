import json

import pytest
import torch
from transformers import TrainerCallback

from cai_repro.config import SFTSettings
from cai_repro.dialogue import PAPER
from cai_repro.models import load_model
from cai_repro.sl_cai import sft_examples, train_sft

SFT = SFTSettings(epochs=2, lr=5e-3, batch_size=2, lora_r=4, lora_alpha=8, full=False, max_length=128)
EXAMPLES = [{"prompt": PAPER.human_turn(f"question {i}"), "completion": f" answer number {i}."} for i in range(6)]


def test_sft_examples_final_all_and_empty():
    records = [{"prompt": "p1", "initial": "i", "steps": [{"revision": "r1"}, {"revision": "r2"}]},
               {"prompt": "p2", "initial": "i", "steps": [{"revision": "x"}, {"revision": ""}]}]
    helpful = [{"prompt": "h", "response": "ok"}, {"prompt": "h2", "response": " "}]
    rows, counts = sft_examples(records, helpful, "final")
    assert counts == {"revision": 1, "helpful": 1, "dropped_empty": 2}
    assert rows[0] == {"prompt": PAPER.human_turn("p1"), "completion": " r2", "kind": "revision"}
    _, counts = sft_examples(records, helpful, "all")
    assert counts["revision"] == 3
    with pytest.raises(ValueError):
        sft_examples(records, helpful, "best")


def test_train_sft_saves_a_loadable_adapter_that_learned(tmp_path):
    out = train_sft("tiny-random", EXAMPLES, tmp_path / "m", SFT, work_dir=tmp_path / "ck")
    meta = json.loads((out / "cai_repro.json").read_text())
    assert meta["base_model"] == "tiny-random" and (out / "adapter_model.safetensors").exists()
    log = [h["loss"] for h in json.loads((out / "train_log.json").read_text()) if "loss" in h]
    assert log[-1] < log[0]
    tuned, tok = load_model(str(out))
    base, _ = load_model("tiny-random")
    ids = torch.tensor([tok(EXAMPLES[0]["prompt"] + EXAMPLES[0]["completion"]).input_ids])
    with torch.no_grad():
        assert tuned(ids, labels=ids).loss < base(ids, labels=ids).loss


class _Kill(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        raise KeyboardInterrupt


def test_train_sft_resumes_after_a_kill(tmp_path, monkeypatch):
    import trl
    real_init = trl.SFTTrainer.__init__

    def init_with_kill(self, *a, **kw):
        real_init(self, *a, **kw)
        self.add_callback(_Kill())

    monkeypatch.setattr(trl.SFTTrainer, "__init__", init_with_kill)
    with pytest.raises(KeyboardInterrupt):
        train_sft("tiny-random", EXAMPLES, tmp_path / "m", SFT, work_dir=tmp_path / "ck")
    assert list((tmp_path / "ck").glob("checkpoint-*")) and not (tmp_path / "m").exists()
    done = int(next((tmp_path / "ck").glob("checkpoint-*")).name.split("-")[1])
    ran = []

    class _Count(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ran.append(state.global_step)

    def init_with_count(self, *a, **kw):
        real_init(self, *a, **kw)
        self.add_callback(_Count())

    monkeypatch.setattr(trl.SFTTrainer, "__init__", init_with_count)
    resumed = train_sft("tiny-random", EXAMPLES, tmp_path / "m", SFT, work_dir=tmp_path / "ck")
    assert ran and ran[0] == done + 1  # it went on from the checkpoint instead of starting over
    monkeypatch.setattr(trl.SFTTrainer, "__init__", real_init)
    whole = train_sft("tiny-random", EXAMPLES, tmp_path / "w", SFT, work_dir=tmp_path / "ck2")
    a, _ = load_model(str(resumed)); b, _ = load_model(str(whole))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n
