import json
import os
import warnings

import pytest

from cai_repro.artifacts import (InputError, RecordStore, atomic_dir, atomic_write_json, bundled_dir, checkout_dir,
                                 claim_run_dir, derive_seed, load_yaml, read_jsonl)


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


def test_read_jsonl_with_lines(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert read_jsonl(f, with_lines=True) == [(1, {"prompt": "a"}), (3, {"prompt": "b"})]
    assert read_jsonl(f) == [{"prompt": "a"}, {"prompt": "b"}]


def test_claim_run_dir_refuses_other_settings(tmp_path):
    config = {"model": "tiny-random", "settings": {"revisions": 2, "stop": ("a", "b")}}
    with claim_run_dir(tmp_path / "run", config) as run:
        assert run == tmp_path / "run"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["stop"] == ["a", "b"]
    with claim_run_dir(tmp_path / "run", config):  # the same settings (tuples read back as lists): accepted
        pass
    with pytest.raises(InputError, match=r"config.json: this directory holds a run with other settings \(model, settings\)"):
        with claim_run_dir(tmp_path / "run", {"model": "x", "settings": {"revisions": 3}}):
            pass


def test_bundled_dirs_are_the_checkouts():
    root = checkout_dir()
    assert root is not None and (root / "settings.ini").is_file()
    for kind, sub in {"constitutions": "constitutions", "profiles": "profiles", "prompts": "data/prompts",
                      "refusals": "data/refusals", "nbs": "nbs"}.items():
        assert bundled_dir(kind) == root / sub and bundled_dir(kind).is_dir(), kind
    with pytest.raises(KeyError, match="no bundled data"):
        bundled_dir("models")


def test_a_stale_lock_file_never_blocks(tmp_path):
    "A lock file left by a process that died (it names a dead PID) is free: `exclusive` and `Stage.run` take it at once."
    import subprocess
    import sys
    from cai_repro.artifacts import Stage, exclusive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    out = tmp_path / "run"
    (tmp_path / ".run.lock").write_text(f"{dead}\n")
    with exclusive(out):
        assert (tmp_path / ".run.lock").read_text().strip() == str(os.getpid())  # the holder's PID, for a waiter's message
    stage = Stage("demo", {"x": 1}, root=tmp_path / "stages")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / f".demo-{stage.key}.lock").write_text(f"{dead}\n")
    built = stage.run(lambda work: (work / "out.txt").write_text("ok"), verbose=False)
    assert (built / "out.txt").read_text() == "ok"
