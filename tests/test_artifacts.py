import json
import warnings

import pytest

from cai_repro.artifacts import (InputError, RecordStore, atomic_dir, atomic_write_json, derive_seed, load_yaml,
                                 read_jsonl)


def test_read_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n[1, 2]\n')
    with pytest.raises(InputError) as e:
        read_jsonl(f, required=["prompt"])
    assert str(e.value) == f"{f}:4: expected a JSON object, got list"
    f.write_text('{"prompt": "a"}\n{"category": "x"}\n')
    with pytest.raises(InputError, match=r":2: missing key 'prompt'"):
        read_jsonl(f, required=["prompt"])
    with pytest.raises(InputError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_record_store_resumes_and_cuts_torn_line(tmp_path):
    path = tmp_path / "records.jsonl"
    store = RecordStore(path, key="id")
    store.append({"id": "a", "v": 1})
    store.append({"id": "b", "v": 2})
    with pytest.raises(KeyError):
        store.append({"id": "a", "v": 3})
    with open(path, "ab") as f:
        f.write(b'{"id": "c", "v"')  # killed mid-write
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = RecordStore(path, key="id")
    assert any("partial last record" in str(x.message) for x in w)
    assert ("a" in again, "b" in again, "c" in again) == (True, True, False)
    again.append({"id": "c", "v": 3})
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "part").write_text("x")
            raise ValueError("killed")
    assert not (tmp_path / "d").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    with atomic_dir(tmp_path / "d") as d:
        (d / "whole").write_text("y")
    with atomic_dir(tmp_path / "d") as d:  # replacing an existing directory
        (d / "newer").write_text("z")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["newer"]


def test_load_yaml_lines_and_errors(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("x:\n  - 1\n  - y: 2\n")
    doc = load_yaml(f)
    assert doc.lines["x"] == 1 and doc["x"].lines == [2, 3] and doc["x"][1].line == 3
    f.write_text("x: [1,\n")
    with pytest.raises(InputError, match=r"a.yaml:\d+: syntax error"):
        load_yaml(f)


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "a") == derive_seed(0, "a")
    assert len({derive_seed(0, i) for i in range(100)}) == 100
