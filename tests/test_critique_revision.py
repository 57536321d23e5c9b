import json
from dataclasses import replace

import pytest

from cai_repro.artifacts import InputError, read_jsonl
from cai_repro.constitution import load_constitution
from cai_repro.config import CritiqueRevisionSettings
from cai_repro.critique_revision import chain_turns, critique_revise, critique_revision_prefix
from cai_repro.dialogue import PAPER
from cai_repro.monitors import CopyMeter, text_flags
from cai_repro.prompts import bundled_prompts

from conftest import cli

SETTINGS = CritiqueRevisionSettings(revisions=2, batch_size=2, initial_tokens=6, critique_tokens=6, revision_tokens=6)


@pytest.fixture(scope="module")
def prompts():
    return bundled_prompts("red-team")[:5]


def test_records_have_the_documented_shape(tiny, prompts, tmp_path):
    model, tok = tiny
    recs = critique_revise(model, tok, prompts, load_constitution("default"), tmp_path, SETTINGS, progress=False)
    assert [r["id"] for r in recs] == [p.id for p in prompts]
    for r in recs:
        assert {"prompt", "category", "initial", "steps", "flags"} <= set(r)
        assert len(r["steps"]) == 2
        for s in r["steps"]:
            assert {"principle_id", "critique", "revision"} <= set(s) and isinstance(s["critique"], str)
    assert json.loads((tmp_path / "config.json").read_text())["settings"]["revisions"] == 2


def test_each_step_is_conditioned_on_everything_before(tiny, prompts, tmp_path, monkeypatch):
    "The k-th critique prompt must contain the initial response and every earlier critique and revision."
    import cai_repro.critique_revision as CR
    model, tok = tiny
    seen = {}
    real = CR.make_sampler
    def spy(*a, **kw):
        sampler = real(*a, **kw)
        submit = sampler.submit
        sampler.submit = lambda key, text, **k: (seen.setdefault(key[1], text), submit(key, text, **k))[1]
        return sampler
    monkeypatch.setattr(CR, "make_sampler", spy)
    recs = critique_revise(model, tok, prompts[:1], load_constitution("default"), tmp_path, SETTINGS, progress=False)
    r = recs[0]
    assert list(seen) == ["initial", "critique0", "revision0", "critique1", "revision1"]  # each step after the one before
    critique2_prompt = seen["critique1"]
    assert r["initial"] in critique2_prompt and r["steps"][0]["critique"] in critique2_prompt
    assert r["steps"][0]["revision"] in critique2_prompt and critique2_prompt.endswith("\n\nCritique:")
    assert PAPER.render(chain_turns(r["prompt"], r["initial"], [])).startswith("\n\nHuman: ")


def test_resume_recomputes_only_missing_and_reproduces(tiny, prompts, tmp_path):
    model, tok = tiny
    c = load_constitution("default")
    full = critique_revise(model, tok, prompts, c, tmp_path / "a", SETTINGS, progress=False)
    path = tmp_path / "a" / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # killed while writing the 4th record
    with pytest.warns(UserWarning, match="partial last record"):
        again = critique_revise(model, tok, prompts, c, tmp_path / "a", SETTINGS, progress=False)
    assert again == full
    assert len(read_jsonl(path)) == len(prompts)


def test_direct_and_principle_ablations(tiny, prompts, tmp_path):
    model, tok = tiny
    c = load_constitution("default")
    base = critique_revise(model, tok, prompts, c, tmp_path / "b", SETTINGS, progress=False)
    direct = critique_revise(model, tok, prompts, c, tmp_path / "d", replace(SETTINGS, direct=True), progress=False)
    assert [r["initial"] for r in direct] == [r["initial"] for r in base]
    assert all(s["critique"] is None for r in direct for s in r["steps"])
    assert "CritiqueRequest" not in critique_revision_prefix(c, direct=True)
    k2 = critique_revise(model, tok, prompts, c, tmp_path / "k", replace(SETTINGS, principles=2), progress=False)
    allowed = {p.id for p in c.critique_revision[:2]}
    assert {s["principle_id"] for r in k2 for s in r["steps"]} <= allowed


def test_copy_meter_and_flags():
    c = load_constitution("default")
    meter = CopyMeter(critique_revision_prefix(c))
    demo = c.few_shot.critique_revision[1].revision
    assert meter(demo) == 1.0
    assert meter("a completely new sentence that the demonstrations never contained at all") == 0.0
    half = " ".join(demo.split()[:12]) + " and then something entirely different that nobody wrote before today"
    assert 0 < meter(half) < 1
    assert "copied" in text_flags(demo, meter(demo)) and text_flags("fine answer here", 0.0) == []


def test_cli_runs_resumes_and_rejects_bad_input(tmp_path):
    args = ["critique-revise", "--model", "tiny-random", "--prompts", "red-team", "--limit", "3", "--revisions", "1",
            "--max-new-tokens", "4", "--batch-size", "2", "--out", tmp_path / "run"]
    code, out, err = cli(*args)
    assert code == 0, err
    first = (tmp_path / "run" / "records.jsonl").read_text()
    assert len(first.splitlines()) == 3
    assert cli(*args)[0] == 0 and (tmp_path / "run" / "records.jsonl").read_text() == first
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "category": "x"}\n{"prompt": "no category"}\n')
    code, _, err = cli("critique-revise", "--model", "tiny-random", "--prompts", bad, "--out", tmp_path / "r2")
    assert code == 2 and f"{bad}:2: missing key 'category'" in err
    code, _, err = cli("critique-revise", "--model", "tiny-random", "--principles", "17", "--out", tmp_path / "r3")
    assert code == 2 and "16 critique/revision principles" in err
    code, _, err = cli(*args[:-1], tmp_path / "run", "--revisions", "2")
    assert code == 2 and "other settings" in err


def test_cli_sft_trains_from_records(tmp_path):
    code, _, err = cli("critique-revise", "--model", "tiny-random", "--limit", "2", "--revisions", "1",
                       "--max-new-tokens", "4", "--out", tmp_path / "run")
    assert code == 0, err
    code, out, err = cli("sft", "--model", "tiny-random", "--records", tmp_path / "run", "--n-helpful", "2",
                         "--epochs", "1", "--out", tmp_path / "model")
    assert code == 0, err
    assert (tmp_path / "model" / "adapter_model.safetensors").exists()
    assert json.loads(out.splitlines()[0])["helpful"] == 2
