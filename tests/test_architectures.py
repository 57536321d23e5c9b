"Any architecture: the pipeline's training stages on a tiny random model of a second family (GPT-2), and the loading options."
import json
from dataclasses import asdict, replace

import pytest
import torch

from cai_repro.artifacts import InputError, atomic_dir
from cai_repro.config import PMSettings, RLSettings, SFTSettings, load_params, lora_target_modules
from cai_repro.models import byte_tokenizer, load_options, model_fingerprint, pin_revision


def tiny_gpt2_dir(out_dir, seed: int = 0):
    "A tiny random GPT-2 (Conv1D projections named c_attn, c_proj, c_fc: no q_proj) with the byte tokenizer of the tiny Gemma."
    from transformers import AutoModelForCausalLM, GPT2Config
    tok = byte_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=32768, tie_word_embeddings=True,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    with atomic_dir(out_dir) as d:
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
    return out_dir


def test_sft_label_pm_rl_on_gpt2(tmp_path):
    "SFT → labels → PM → RL through the Pipeline on GPT-2, with LoRA on what peft resolves for it (all-linear)."
    from cai_repro.pipeline import Pipeline
    model_dir = tiny_gpt2_dir(tmp_path / "tiny-gpt2")
    P = load_params("smoke", run={"model": str(model_dir)}, feedback={"palms_pairs": 0})
    assert P.sft.lora_targets == P.pm.lora_targets == P.rl.lora_targets == ("all-linear",)
    pipe = Pipeline(P, root=tmp_path / "stages", progress=False)
    adapter = json.loads((pipe.sl_cai() / "model" / "adapter_config.json").read_text())
    names = {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]}  # peft resolved all-linear to GPT-2's Conv1D layers
    assert names == {"c_attn", "c_proj", "c_fc"}, adapter["target_modules"]
    assert (pipe.labels() / "labels.jsonl").read_text().count("\n") == P.feedback.n_prompts
    assert (pipe.preference_model() / "STAGE.json").exists()
    rl = pipe.rl()
    assert (rl / "policy").is_dir() and (rl / "metrics.jsonl").read_text().count("\n") == P.rl.steps


def test_lora_targets_enter_the_stage_keys():
    for cls in (SFTSettings, PMSettings, RLSettings):
        assert asdict(cls())["lora_targets"] == ("all-linear",)
    assert asdict(replace(SFTSettings(), lora_targets=("q_proj",))) != asdict(SFTSettings())
    assert lora_target_modules(("all-linear",)) == "all-linear" and lora_target_modules(("c_attn", "c_proj")) == ["c_attn", "c_proj"]
    P = load_params("smoke", rl={"lora_targets": ["q_proj", "v_proj"]})
    assert P.rl.lora_targets == ("q_proj", "v_proj")


def test_revision_pins_the_hub_model_and_its_key():
    assert pin_revision("org/model", "0123abc") == "org/model@0123abc"
    assert model_fingerprint("org/model@0123abc") != model_fingerprint("org/model@4567def") != model_fingerprint("org/model")
    with pytest.raises(InputError, match="run.revision"):
        pin_revision("tiny-random", "0123abc")
    from cai_repro.pipeline import Pipeline
    pipe = Pipeline(load_params("smoke", run={"model": "org/model", "revision": "0123abc"}), plan=True)
    assert pipe.run_spec == "org/model@0123abc"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the errors are for machines without CUDA")
def test_loading_options_fail_clearly_without_cuda():
    from cai_repro.pipeline import Pipeline
    with pytest.raises(InputError, match=r"run\.quantize: 4bit loading needs a CUDA GPU"):
        Pipeline(load_params("smoke", run={"quantize": "4bit"}), plan=True)
    with pytest.raises(InputError, match=r"run\.attn_implementation: flash_attention_2 needs a CUDA GPU"):
        load_options("flash_attention_2")
    assert load_options("eager") == {"attn_implementation": "eager"}


def test_attention_setting_reaches_the_model_and_the_key():
    from cai_repro.models import load_model, set_load_options
    from cai_repro.pipeline import Pipeline
    plain = model_fingerprint("tiny-random")
    try:
        Pipeline(load_params("smoke", run={"attn_implementation": "eager"}), plan=True)
        model, _ = load_model("tiny-random")
        assert model.config._attn_implementation == "eager"
        assert model_fingerprint("tiny-random") != plain  # another attention kernel: other stage keys
    finally:
        set_load_options()
    assert model_fingerprint("tiny-random") == plain
