"""Conversation formats: the whole command-line chain on a tiny instruct-style model with a ChatML template."""
import contextlib
import io
import json

import pytest

from cai_repro.cli import main
from cai_repro.models import tiny_chat_dir


def run(*argv):
    "The `cai-repro` entry point in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return tiny_chat_dir(tmp_path_factory.mktemp("models") / "tiny-chat")


def rendered(text: str) -> str:
    "The prompt part of `cai-repro render`'s output."
    return text.split(" characters ===\n", 1)[1].split("\n=== end ===", 1)[0]


@pytest.mark.parametrize("kind", ["initial", "critique", "revision", "label", "contrast", "pm"])
def test_render_uses_the_template(chat, kind):
    code, out, err = run("render", "--model", chat, "--kind", kind)
    assert code == 0, err
    text = rendered(out)
    assert "<|im_start|>user\n" in text and "\n\nHuman:" not in text.replace("Human: ", "")  # quoted transcripts aside
    assert "format chat" in out
    code, out, _ = run("render", "--model", chat, "--kind", kind, "--format", "paper")
    assert "<|im_start|>" not in rendered(out) and "Human:" in rendered(out)


def test_render_contrast_puts_the_preamble_in_a_system_turn(chat):
    _, out, _ = run("render", "--model", chat, "--kind", "contrast")
    assert rendered(out).startswith("<|im_start|>system\n")


def test_the_whole_chain_runs_on_a_tiny_instruct_model(chat, tmp_path):
    code, _, err = run("critique-revise", "--model", chat, "--limit", 4, "--revisions", 1, "--max-new-tokens", 6,
                       "--out", tmp_path / "cr")
    assert code == 0, err
    records = [json.loads(l) for l in (tmp_path / "cr" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(len(r["steps"]) == 1 for r in records)
    assert json.loads((tmp_path / "cr" / "config.json").read_text())["format"] == "chat"
    assert not any("<|im_end|>" in r["steps"][0]["revision"] for r in records)  # the end of turn ends the sample

    code, _, err = run("sft", "--model", chat, "--records", tmp_path / "cr", "--n-helpful", 2, "--helpful-tokens", 6,
                       "--epochs", 1, "--out", tmp_path / "sl")
    assert code == 0, err

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"], "category": r["category"], "harmful": True,
                                         "response_a": r["initial"] or "x", "response_b": r["steps"][-1]["revision"] or "y"}) + "\n"
                             for r in records))
    code, _, err = run("label", "--model", chat, "--pairs", pairs, "--ensemble", 2, "--out", tmp_path / "labels")
    assert code == 0, err
    assert json.loads((tmp_path / "labels" / "config.json").read_text())["format"] == "chat"

    code, _, err = run("pm", "train", "--model", chat, "--labels", tmp_path / "labels", "--helpful", "none",
                       "--max-steps", 2, "--batch-size", 2, "--out", tmp_path / "pm")
    assert code == 0, err
    assert json.loads((tmp_path / "pm" / "run.json").read_text())["format"]["name"] == "chat"

    code, _, err = run("rl", "--policy", tmp_path / "sl", "--pm", tmp_path / "pm", "--n-prompts", 4, "--steps", 2,
                       "--batch-size", 2, "--minibatch-size", 2, "--max-new-tokens", 6, "--save-every", 1, "--quiet",
                       "--out", tmp_path / "rl")
    assert code == 0, err
    samples = [json.loads(l) for l in (tmp_path / "rl" / "samples.jsonl").read_text().splitlines()]
    assert samples and all("<|im_end|>" not in s["response"] for s in samples)

    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}? Options:\n (A) [[[yes]]]\n (B) [[[no]]]\n\nThe answer is:",
                                        "corrects": [" (A)"], "incorrects": [" (B)"]}) + "\n" for i in range(3)))
    code, _, err = run("eval", "mc", "--model", tmp_path / "rl" / "policy", "--data", data, "--out", tmp_path / "eval.json")
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n"] == 3 and result["format"] == "chat"
