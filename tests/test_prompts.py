import pytest

from cai_repro.artifacts import InputError
from cai_repro.prompts import (PromptsUnavailable, bundled_prompts, generate_red_team_prompts, load_prompts,
                               prompts_from_red_team_rows, read_prompt_file, sample_prompts)

from conftest import cli


def test_bundled_sets_meet_the_spec():
    red, helpful = bundled_prompts("red-team"), bundled_prompts("helpful")
    assert len(red) >= 150 and len({p.category for p in red}) >= 10 and len(helpful) >= 100
    wanted = {"violence", "theft", "hacking", "self-harm", "hate", "sexual-content", "privacy", "misinformation", "medical", "legal"}
    assert wanted <= {p.category for p in red}
    assert len({p.id for p in red + helpful}) == len(red) + len(helpful)


def test_prompt_file_errors_name_file_and_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a", "category": "x"}\n\n{"prompt": "b", "category": 3}\n')
    with pytest.raises(InputError, match=r"p.jsonl:3: key 'category' must be str"):
        read_prompt_file(f)
    f.write_text('{"prompt": "a", "category": "x", "id": "q"}\n{"prompt": "b", "category": "x", "id": "q"}\n')
    with pytest.raises(InputError, match=r"p.jsonl:2: duplicate id 'q' \(first on line 1\)"):
        read_prompt_file(f)
    code, _, err = cli("prompts", "check", f)
    assert code == 2 and "p.jsonl:2" in err


def test_sample_prompts_is_balanced_and_seeded():
    red = bundled_prompts("red-team")
    a = sample_prompts(red, 39, seed=3)
    cats = {p.category for p in red}
    assert all(sum(p.category == c for p in a) == 3 for c in cats)
    assert a == sample_prompts(red, 39, seed=3) and a != sample_prompts(red, 39, seed=4)


def test_hh_rlhf_rows_and_offline_error(monkeypatch):
    rows = [{"transcript": "\n\nHuman: first\n\nAssistant: x\n\nHuman: second", "tags": ["Violence & incitement"]},
            {"transcript": "\n\nHuman: first\n\nAssistant: dup", "tags": None}]
    ps = prompts_from_red_team_rows(rows)
    assert [(p.text, p.category) for p in ps] == [("first", "violence-incitement")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PromptsUnavailable, match="bundled"):
        load_prompts("hh-rlhf", limit=3)


def test_generated_prompts_are_new_and_categorised(tiny):
    model, tok = tiny
    red = bundled_prompts("red-team")
    new = generate_red_team_prompts(model, tok, red, 3, seed=0, max_new_tokens=24, max_rounds=2)
    known = {p.text.lower() for p in red}
    assert all(p.text.lower() not in known and p.category in {q.category for q in red} for p in new)
    assert new == generate_red_team_prompts(model, tok, red, 3, seed=0, max_new_tokens=24, max_rounds=2)


def test_cli_prompts_check_json():
    import json
    code, out, _ = cli("prompts", "check", "all", "--json")
    s = json.loads(out)
    assert code == 0 and s["n"] == 256 and s["harmful"] == 156
