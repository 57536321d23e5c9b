"`cai-repro export`: a finished (fake) run's data as Hugging Face datasets with cards, adapters with model cards; a TRL trainer takes one step on the exported preferences."
import json
import os
from pathlib import Path

import pytest

from cai_repro.preference_model import synthetic_labels, write_labels
from conftest import cli

ROOT = Path(__file__).resolve().parent.parent


def stage(root: Path, name: str, inputs=None) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "STAGE.json").write_text(json.dumps({"name": name.rsplit("-", 1)[0], "inputs": inputs or {}}))
    return d


def tiny_adapter(d: Path, base: str, kind: str) -> Path:
    from peft import LoraConfig, get_peft_model
    from cai_repro.models import load_model
    model, tok = load_model("tiny-random")
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")).save_pretrained(d)
    tok.save_pretrained(d)
    (d / "cai_repro.json").write_text(json.dumps({"base_model": base, "kind": kind}))
    return d


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    "A run directory whose summary names an SL-CAI stage (records, helpfulness samples, adapter), a labels stage and a DPO stage."
    tmp = tmp_path_factory.mktemp("run")
    stages = tmp / "stages"
    cr = stage(stages, "critique_revision-aaaaaaaaaaaa")
    (cr / "records.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"How do I do harm number {i}?", "category": "violence",
                                                          "initial": "Like this.", "steps": [{"revision": f"I won't help with harm {i}."}]}) + "\n"
                                              for i in range(4)))
    hs = stage(stages, "helpful_samples-bbbbbbbbbbbb")
    (hs / "samples.jsonl").write_text(json.dumps({"id": "h0", "prompt": "Name a fruit.", "category": "helpful", "response": "An apple."}) + "\n")
    sl = stage(stages, "sl_cai-cccccccccccc", {"records": str(cr), "helpful": str(hs), "sft": {"revision": "final"}})
    tiny_adapter(sl / "model", "tiny-random", "sl-cai")
    labels = synthetic_labels(10, 0)
    labels[0] = {**labels[0], "heldout": True}
    write_labels(stage(stages, "labels-dddddddddddd") / "labels.jsonl", labels)
    dpo = stage(stages, "dpo-eeeeeeeeeeee")
    tiny_adapter(dpo / "policy", str(sl / "model"), "dpo")
    run = tmp / "run"; run.mkdir()
    (run / "summary.json").write_text(json.dumps({"profile": "smoke", "run": {"commit": "0123abcd"}, "stages": {
        "04_sl_cai": {"sl_cai_dir": str(sl / "model")}, "06_ai_feedback": {"labels_stage": "labels-dddddddddddd"},
        "08a_dpo": {"stage": "dpo-eeeeeeeeeeee"}}}))
    return run, stages


def test_export_writes_datasets_with_cards_that_datasets_loads(fake_run, tmp_path):
    from datasets import load_from_disk
    from huggingface_hub import DatasetCard, ModelCard
    run, stages = fake_run
    code, out, err = cli("export", run, "--to", tmp_path / "hf", "--stages", stages)
    assert code == 0, err
    assert "not in this run: preference_model, rl_cai" in out
    sft = load_from_disk(str(tmp_path / "hf" / "sl_cai_data"))
    assert len(sft["train"]) == 5 and sft["train"][0]["messages"][1] == {"role": "assistant", "content": "I won't help with harm 0."}
    prefs = load_from_disk(str(tmp_path / "hf" / "preferences"))
    assert {k: len(v) for k, v in prefs.items()} == {"train": 9, "test": 1}
    row = prefs["train"][0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant" and row["p_chosen"] >= 0.5
    for name in ("sl_cai_data", "preferences"):
        card = DatasetCard.load(tmp_path / "hf" / name / "README.md")
        assert card.data.license == "apache-2.0" and card.data.cai_repro["commit"] == "0123abcd"
        assert card.data.cai_repro["constitution"] == "default" and card.data.cai_repro["model"] == "tiny-random"
    for name in ("sl_cai", "dpo"):
        d = tmp_path / "hf" / "models" / name
        assert (d / "adapter_model.safetensors").is_file() and ModelCard.load(d / "README.md").data.library_name == "peft"
    # the DPO adapter's base is the exported SL-CAI copy: the export loads on its own
    assert json.loads((tmp_path / "hf" / "models" / "dpo" / "cai_repro.json").read_text())["base_model"] == str((tmp_path / "hf" / "models" / "sl_cai").resolve())
    from cai_repro.models import load_model
    load_model(str(tmp_path / "hf" / "models" / "dpo"))


CHAT = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}")


def test_trl_trains_one_step_on_the_exported_data(fake_run, tmp_path):
    from datasets import load_from_disk
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
    from cai_repro.export import export_run
    from cai_repro.models import load_model
    run, stages = fake_run
    export_run(run, tmp_path / "hf", stages)
    common = dict(max_steps=1, per_device_train_batch_size=2, report_to="none", use_cpu=True, bf16=False,
                  save_strategy="no", logging_steps=1, gradient_checkpointing=False, dataloader_pin_memory=False)
    model, tok = load_model("tiny-random"); tok.chat_template = CHAT
    prefs = load_from_disk(str(tmp_path / "hf" / "preferences"))["train"]
    t = DPOTrainer(model=model, ref_model=load_model("tiny-random")[0], processing_class=tok, train_dataset=prefs,
                   args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_length=128, **common))
    t.train()
    assert t.state.global_step == 1 and all(map(lambda r: r["loss"] == r["loss"], [r for r in t.state.log_history if "loss" in r]))
    model, tok = load_model("tiny-random"); tok.chat_template = CHAT
    sft = load_from_disk(str(tmp_path / "hf" / "sl_cai_data"))["train"]
    t = SFTTrainer(model=model, args=SFTConfig(output_dir=str(tmp_path / "sft"), max_length=128, **common), train_dataset=sft,
                   processing_class=tok)
    t.train()
    assert t.state.global_step == 1


def test_push_to_hub_needs_a_token_and_a_network_and_never_prints_the_token(fake_run, tmp_path):
    run, stages = fake_run
    code, _, err = cli("export", run, "--to", tmp_path / "hf", "--stages", stages, "--push-to-hub", "me/cai", env={"HF_TOKEN": ""})
    assert code == 2 and "HF_TOKEN" in err, err
    secret = "hf_thisisnotarealtoken123"
    code, out, err = cli("export", run, "--to", tmp_path / "hf", "--stages", stages, "--push-to-hub", "me/cai",
                         env={"HF_TOKEN": secret, "HF_HUB_OFFLINE": "1"})
    assert code == 2 and "cannot be reached" in err, err
    assert secret not in out + err and (tmp_path / "hf" / "preferences" / "README.md").is_file()  # the local export is written
