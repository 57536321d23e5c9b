import json
import shutil

import pytest

from cai_repro.artifacts import InputError
from cai_repro.constitution import load_constitution

from conftest import cli


def test_default_and_medical_constitutions():
    c = load_constitution("default")
    assert c.summary() == {"name": "cai-repro default", "critique_revision": 16, "feedback": 16, "few_shot": 8}
    assert len({p.id for p in c.critique_revision}) == 16
    assert all(p.description for p in c.feedback)
    m = load_constitution("medical")
    assert m.summary()["critique_revision"] >= 8 and m.summary()["feedback"] >= 8
    assert m.critique_revision[0].id == "answer-directly"


def test_sampling_is_seeded_per_key_and_uniform():
    c = load_constitution("default")
    a = c.sample_critique_revision(4, seed=1, key="p1")
    assert a == c.sample_critique_revision(4, seed=1, key="p1")
    assert [c.sample_critique_revision(4, seed=1, key=k) for k in range(5)] != [a] * 5
    ids = [p.id for k in range(800) for p in c.sample_critique_revision(1, seed=0, key=k)]
    counts = {i: ids.count(i) for i in set(ids)}
    assert len(counts) == 16 and min(counts.values()) > 25  # expectation 50 each
    fb = c.sample_feedback(4, seed=0, key=3)
    assert len({p.id for p in fb}) == 4


def test_first_k_restricts_principles():
    c = load_constitution("default")
    k2 = c.first_k(2)
    assert [p.id for p in k2.critique_revision] == [p.id for p in c.critique_revision[:2]]
    assert {p.id for k in range(200) for p in k2.sample_critique_revision(2, 0, k)} == {p.id for p in k2.critique_revision}
    with pytest.raises(ValueError):
        c.first_k(0)


HEAD = "name: t\nfeedback: []\ncritique_revision:\n"
BAD = {
    "syntax": ("name: t\ncritique_revision: [\n", r":3: syntax error"),
    "missing": (HEAD + "  - id: a\n    critique_request: x\n", r":4: critique_revision item 1 is missing key 'revision_request'"),
    "empty": (HEAD + "  - id: a\n    critique_request: '  '\n    revision_request: y\n", r":5: principle 'a': 'critique_request' is empty"),
    "duplicate": (HEAD + "  - {id: a, critique_request: x, revision_request: y}\n  - {id: a, critique_request: x, revision_request: y}\n",
                  r":5: duplicate critique_revision id 'a' \(first used on line 4\)"),
    "unknown": (HEAD + "  - {id: a, critique_request: x, revision_request: y, extra: 1}\n", r":4: critique_revision item 1 has unknown key 'extra'"),
    "type": (HEAD + "  - {id: a, critique_request: [x], revision_request: y}\n", r":4: principle 'a': 'critique_request' must be text"),
    "no principles": ("name: t\nfeedback: []\ncritique_revision: []\n", r":3: 'critique_revision' needs at least one principle"),
    "empty file": ("", r":1: the file is empty"),
    "few-shot answer": (HEAD + "  - {id: a, critique_request: x, revision_request: y}\nfew_shot:\n  feedback:\n"
                        "    - conversation: [{human: hi}]\n      responses: [a, b]\n      answer: C\n", r":9: few_shot feedback 1: 'answer' must be A or B"),
    "duplicate key": ("name: t\nname: u\n", r":2: duplicate key 'name'"),
}


@pytest.mark.parametrize("case", BAD)
def test_malformed_yaml_errors_name_file_and_line(tmp_path, case):
    text, pattern = BAD[case]
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(InputError, match=pattern) as e:
        load_constitution(f)
    assert str(e.value).startswith(str(f))


@pytest.mark.parametrize("case", ["syntax", "empty", "duplicate"])
def test_cli_check_exits_2_with_file_and_line(tmp_path, case):
    text, pattern = BAD[case]
    f = tmp_path / "c.yaml"
    f.write_text(text)
    code, out, err = cli("constitution", "check", f)
    assert code == 2, (out, err)
    assert str(f) in err and "error" in err


def test_cli_check_json():
    code, out, err = cli("constitution", "check", "constitutions/default.yaml", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"name": "cai-repro default", "critique_revision": 16,
                                                        "feedback": 16, "few_shot": 8}
    code, out, _ = cli("constitution", "check", "medical")
    assert code == 0 and "clinical" in out


ANTHROPIC = {
    "CritiqueRevisionInstructions.json": {"critique_revision": 16, "feedback": 0, "few_shot": 0},
    "RLMadisonInstructions.json": {"critique_revision": 0, "feedback": 16, "few_shot": 0},
    "CritiqueRevisionFewShotPrompts.json": {"critique_revision": 0, "feedback": 0, "few_shot": 5},
    "RLMadisonFewShotPrompts.json": {"critique_revision": 0, "feedback": 0, "few_shot": 5},
    "RLMadisonPrecogFewShotPrompts.json": {"critique_revision": 0, "feedback": 0, "few_shot": 6},
}


@pytest.mark.parametrize("name", ANTHROPIC)
def test_anthropic_json_files(anthropic_dir, name):
    path = anthropic_dir / "prompts" / name
    c = load_constitution(path)
    assert {k: v for k, v in c.summary().items() if k != "name"} == ANTHROPIC[name]
    code, out, err = cli("constitution", "check", path, "--json")
    assert code == 0, err
    assert json.loads(out)["name"] == path.stem


def test_anthropic_directory_and_parsing(anthropic_dir):
    c = load_constitution(anthropic_dir / "prompts")
    assert (len(c.critique_revision), len(c.feedback)) == (16, 16)
    p = c.critique_revision[0]
    assert p.id == "harmful0" and "CritiqueRequest" not in p.critique_request and not p.critique_request.endswith("Critique:")
    assert not c.feedback[0].principle.endswith("Options:")
    ex = c.few_shot.critique_revision[0]
    assert [t.role for t in ex.conversation] == ["Human", "Assistant", "Human", "Assistant"]
    assert ex.critique and ex.revision and "Human:" not in ex.revision
    cot = [e for e in c.few_shot.feedback if e.reasoning]
    assert len(cot) == 6 and all(e.answer in "AB" and len(e.responses) == 2 for e in cot)
    plain = [e for e in c.few_shot.feedback if not e.reasoning]
    assert {e.answer for e in plain} == {"A", "B"}  # positions alternate


def test_malformed_anthropic_json(tmp_path, anthropic_dir):
    data = json.loads((anthropic_dir / "prompts" / "CritiqueRevisionInstructions.json").read_text())
    data["harmful3"]["prompt"] = []
    f = tmp_path / "CritiqueRevisionInstructions.json"
    f.write_text(json.dumps(data, indent=1))
    with pytest.raises(InputError, match=r"CritiqueRevisionInstructions.json:\d+: principle 'harmful3'"):
        load_constitution(f)
    f.write_text('{"a": 1}')
    with pytest.raises(InputError, match="not a recognised constitution file"):
        load_constitution(f)
    f.write_text('{"a": [1,')
    code, _, err = cli("constitution", "check", f)
    assert code == 2 and "syntax error" in err


def test_missing_constitution():
    with pytest.raises(InputError, match="no such file"):
        load_constitution("no-such-constitution")
