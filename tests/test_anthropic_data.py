"Anthropic's files: found, fetched on first use and checked, derived slices, clear errors offline, and runs that skip cleanly."
import hashlib
import http.server
import json
import logging
import shutil
import threading

import pytest

from cai_repro import artifacts as ar
from cai_repro.artifacts import (ANTHROPIC_EVALS, ANTHROPIC_SHA256, AnthropicDataUnavailable, ChecksumMismatch, anthropic_file,
                                 anthropic_files, dev_slice, download_anthropic, fetch_anthropic, verify_anthropic)
from cai_repro.hhh_evals import EvalDataUnavailable, eval_path  # imported before a fixture patches the manifest: a first
# import under the `mirror` fixture would bind its two-file manifest for the rest of the session

OFFLINE = "http://127.0.0.1:9/{path}"  # the discard port: nothing answers, at once


def synth(n: int, tag: str = "") -> str:
    "A JSONL evaluation file of our own: n questions whose line says its index."
    return "".join(json.dumps({"prompt": f"Q{tag}{i}? The answer is:", "corrects": [" (A)"], "incorrects": [" (B)"]}) + "\n"
                   for i in range(n))


def sha(text: str) -> str: return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def env(tmp_path, monkeypatch):
    "No reference data (an empty folder), an empty download cache, and nothing reachable unless a test serves it."
    (tmp_path / "no-data").mkdir()
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("CAI_REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_URL", OFFLINE)
    monkeypatch.setattr(ar, "_UNREACHABLE", {})
    return tmp_path


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A fake source: a temp folder laid out as Anthropic's repository, served over HTTP on 127.0.0.1, with a manifest
    (monkeypatched) that matches its synthetic files: one prompts file and the harm-type evaluation file."""
    root = tmp_path / "mirror"
    (root / "prompts").mkdir(parents=True); (root / "evals").mkdir()
    prompts = json.dumps(["our own few-shot text"])
    (root / "prompts" / "RLMadisonFewShotPrompts.json").write_text(prompts)
    full = synth(287)
    (root / "evals" / "HarmfulnessClassification.jsonl").write_text(full)
    monkeypatch.setattr(ar, "ANTHROPIC_SHA256", {"prompts/RLMadisonFewShotPrompts.json": sha(prompts)})
    monkeypatch.setattr(ar, "ANTHROPIC_EVALS", {"evals/HarmfulnessClassification.jsonl": (287, {
        "evals/HarmfulnessClassification.dev-slice.jsonl": ((7,), sha(dev_slice(full, (7,))))})})
    requests = []
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw): super().__init__(*a, directory=str(root), **kw)
        def log_message(self, *a): pass
        def do_GET(self): requests.append(self.path); super().do_GET()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True); t.start()
    yield {"root": root, "url": f"http://127.0.0.1:{server.server_address[1]}/{{path}}", "full": full, "requests": requests}
    server.shutdown(); server.server_close()


# --- the slice rule ---

def test_dev_slice_rule_on_a_synthetic_full_file():
    full = synth(438)
    small, large = dev_slice(full, (7,)), dev_slice(full, (2, 7))
    index = lambda text: [int(json.loads(l)["prompt"][1:].split("?")[0]) for l in text.splitlines()]
    assert index(small) == list(range(0, 438, 7)) and len(index(small)) == 63  # ceil(438 / 7)
    assert index(large) == [i for i in range(438) if i % 2 == 0 or i % 7 == 0] and len(index(large)) == 250
    assert set(index(small)) <= set(index(large))  # the large dev file holds the slice
    assert len(dev_slice(synth(254), (6,)).splitlines()) == 43 and len(dev_slice(synth(287), (7,)).splitlines()) == 41
    assert dev_slice("a\n\nb\nc", (2,)) == "a\nc\n"  # blank lines do not count; every kept line ends in a newline
    assert {n: [s for s, _ in sl.values()] for n, sl in ANTHROPIC_EVALS.values()} == {438: [(7,), (2, 7)], 254: [(6,)], 287: [(7,)]}


def test_the_rule_agrees_with_the_shared_dev_files(anthropic_dir):
    "Counts only (the full files are held out): each slice has the size the rule gives, and the 63 are the 250's multiples of 7."
    for full, (n, slices) in ANTHROPIC_EVALS.items():
        for s, (steps, digest) in slices.items():
            assert len((anthropic_dir / s).read_text().splitlines()) == len(dev_slice(synth(n), steps).splitlines()), s
            assert ar.sha256_file(anthropic_dir / s) == digest, s
    large = (anthropic_dir / "evals/438HHHEvaluations.dev-large.jsonl").read_text().splitlines(keepends=True)
    kept = [l for i, l in zip([i for i in range(438) if i % 2 == 0 or i % 7 == 0], large) if i % 7 == 0]
    assert "".join(kept) == (anthropic_dir / "evals/438HHHEvaluations.dev-slice.jsonl").read_text()


def test_manifest_matches_the_shared_copies(anthropic_dir):
    for rel, digest in ANTHROPIC_SHA256.items():
        assert ar.sha256_file(anthropic_dir / rel) == digest, rel
    assert {p.relative_to(anthropic_dir).as_posix() for d in ("prompts", "samples") for p in (anthropic_dir / d).iterdir()} == set(ANTHROPIC_SHA256)


# --- fetched on first use ---

def test_fetch_on_first_use_then_from_the_cache(env, mirror, monkeypatch):
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_URL", mirror["url"])
    p = anthropic_file("evals/HarmfulnessClassification.dev-slice.jsonl")  # a slice: its full file is fetched, the slice derived
    cache = env / "cache" / "anthropic-cai"
    assert p == cache / "evals" / "HarmfulnessClassification.dev-slice.jsonl"
    assert p.read_text() == dev_slice(mirror["full"], (7,)) and len(p.read_text().splitlines()) == 41
    assert (cache / "evals" / "HarmfulnessClassification.jsonl").read_text() == mirror["full"]
    assert anthropic_file("prompts/RLMadisonFewShotPrompts.json").read_text() == (mirror["root"] / "prompts" / "RLMadisonFewShotPrompts.json").read_text()
    assert mirror["requests"] == ["/evals/HarmfulnessClassification.jsonl", "/prompts/RLMadisonFewShotPrompts.json"]
    shutil.rmtree(mirror["root"])  # the source is gone: the cache answers, and nothing is downloaded again
    assert anthropic_file("evals/HarmfulnessClassification.jsonl") == cache / "evals" / "HarmfulnessClassification.jsonl"
    assert anthropic_file("evals/HarmfulnessClassification.dev-slice.jsonl") == p
    assert len(mirror["requests"]) == 2
    assert not [f for f in cache.rglob("*") if ".tmp-" in f.name]


def test_eval_names_are_downloaded_only_when_asked(env, mirror, monkeypatch):
    "Planning a run looks evaluation files up by name and must fetch nothing; the notebooks and `eval download` fetch."
    from cai_repro.hhh_evals import EvalDataUnavailable, eval_path
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_URL", mirror["url"])
    with pytest.raises(EvalDataUnavailable, match="run `cai-repro eval download`"):
        eval_path("harm-type-dev")
    assert mirror["requests"] == [] and not (env / "cache").exists()
    assert eval_path("harm-type-dev", download=True) == env / "cache" / "anthropic-cai" / "evals" / "HarmfulnessClassification.dev-slice.jsonl"
    assert eval_path("harm-type") == env / "cache" / "anthropic-cai" / "evals" / "HarmfulnessClassification.jsonl"  # cached now


def test_the_data_folder_comes_first_and_its_full_file_gives_the_slices_offline(env, mirror, monkeypatch):
    data = env / "data"
    (data / "evals").mkdir(parents=True)
    shutil.copy(mirror["root"] / "evals" / "HarmfulnessClassification.jsonl", data / "evals")
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_DATA", str(data))
    assert anthropic_file("evals/HarmfulnessClassification.jsonl") == data / "evals" / "HarmfulnessClassification.jsonl"
    p = anthropic_file("evals/HarmfulnessClassification.dev-slice.jsonl")  # derived from the given full file; URL is offline
    assert p.read_text() == dev_slice(mirror["full"], (7,)) and mirror["requests"] == []


def test_checksum_mismatch_names_the_file_and_both_hashes_and_writes_nothing(env, mirror, monkeypatch):
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_URL", mirror["url"])
    bad = mirror["root"] / "prompts" / "RLMadisonFewShotPrompts.json"
    bad.write_text('["altered"]')
    with pytest.raises(ChecksumMismatch) as e:
        anthropic_file("prompts/RLMadisonFewShotPrompts.json")
    msg = str(e.value)
    assert msg.startswith("prompts/RLMadisonFewShotPrompts.json: SHA-256 ")
    assert sha('["altered"]') in msg and ar.ANTHROPIC_SHA256["prompts/RLMadisonFewShotPrompts.json"] in msg and "nothing was written" in msg
    # a full evaluation file whose derived slice is not ours: refused, and neither it nor its slice is written
    (mirror["root"] / "evals" / "HarmfulnessClassification.jsonl").write_text(synth(287, tag="x"))
    with pytest.raises(ChecksumMismatch, match="its HarmfulnessClassification.dev-slice.jsonl, derived from it, has SHA-256"):
        anthropic_file("evals/HarmfulnessClassification.dev-slice.jsonl")
    (mirror["root"] / "evals" / "HarmfulnessClassification.jsonl").write_text(synth(280))
    with pytest.raises(ChecksumMismatch, match="280 lines, but the published file has 287"):
        fetch_anthropic("evals/HarmfulnessClassification.jsonl", env / "dest")
    cache = env / "cache"
    assert not (cache.exists() and [f for f in cache.rglob("*") if f.is_file()]) and not (env / "dest").exists()


def test_a_real_published_file_passes_and_a_truncated_one_does_not(anthropic_dir):
    data = (anthropic_dir / "samples" / "PALMS_HRLHF.jsonl").read_bytes()
    assert verify_anthropic("samples/PALMS_HRLHF.jsonl", data) == {"samples/PALMS_HRLHF.jsonl": data}
    with pytest.raises(ChecksumMismatch, match=ANTHROPIC_SHA256["samples/PALMS_HRLHF.jsonl"]):
        verify_anthropic("samples/PALMS_HRLHF.jsonl", data[:-10])


def test_offline_error_says_which_file_and_how_to_provide_it(env):
    with pytest.raises(AnthropicDataUnavailable) as e:
        anthropic_file("samples/PALMS_RLMADISON.jsonl")
    msg = str(e.value)
    assert e.value.needs == "samples/PALMS_RLMADISON.jsonl" and "127.0.0.1:9" in e.value.why
    assert "Anthropic's file samples/PALMS_RLMADISON.jsonl is needed" in msg
    assert "set CAI_REPRO_ANTHROPIC_DATA to a folder that holds samples/PALMS_RLMADISON.jsonl" in msg
    assert "`cai-repro eval download`" in msg
    with pytest.raises(AnthropicDataUnavailable, match=r"evals/438HHHEvaluations.dev-slice.jsonl \(derived from evals/438HHHEvaluations.jsonl\)"):
        anthropic_file("evals/438HHHEvaluations.dev-slice.jsonl")
    from cai_repro.hhh_evals import EvalDataUnavailable, eval_path
    with pytest.raises(EvalDataUnavailable, match="run `cai-repro eval download`") as e:
        eval_path("hhh-dev")
    assert e.value.needs == "evals/438HHHEvaluations.dev-slice.jsonl"
    with pytest.raises(KeyError):
        anthropic_file("samples/not-a-published-file.jsonl")


# --- downloading everything ---

def test_download_evals_writes_the_full_file_and_its_slices(env, mirror):
    from cai_repro.hhh_evals import download_evals
    url = mirror["url"].replace("{path}", "evals/{file}")
    got = download_evals(env / "evals", names=["harm-type"], url=url)
    assert got == [env / "evals" / "HarmfulnessClassification.jsonl"]
    assert sorted(p.name for p in (env / "evals").iterdir()) == ["HarmfulnessClassification.dev-slice.jsonl", "HarmfulnessClassification.jsonl"]


def test_cli_eval_download_fills_a_folder_usable_as_the_data(env, mirror, monkeypatch, capsys):
    from cai_repro.cli import main
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_URL", mirror["url"])
    assert main(["eval", "download", "--dest", str(env / "ad")]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(env / "ad" / r) for r in ("prompts/RLMadisonFewShotPrompts.json", "evals/HarmfulnessClassification.jsonl",
                                                 "evals/HarmfulnessClassification.dev-slice.jsonl")]
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_DATA", str(env / "ad"))
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_URL", OFFLINE)
    assert anthropic_file("evals/HarmfulnessClassification.dev-slice.jsonl") == env / "ad" / "evals" / "HarmfulnessClassification.dev-slice.jsonl"
    monkeypatch.setattr(ar, "_UNREACHABLE", {})
    assert main(["eval", "download"]) == 2  # offline, into the cache: exit 2 with what to do
    assert "CAI_REPRO_ANTHROPIC_DATA" in capsys.readouterr().err


def test_download_anthropic_covers_every_file_a_run_reads(env, monkeypatch):
    calls = []
    monkeypatch.setattr(ar, "fetch_anthropic", lambda rel, dest=None, url=None, timeout=30.0: calls.append(rel) or (env / rel))
    got = download_anthropic()
    assert calls == [*ANTHROPIC_SHA256, *ANTHROPIC_EVALS]
    assert {p.relative_to(env).as_posix() for p in got} == {*ANTHROPIC_SHA256, *ANTHROPIC_EVALS,
                                                            *(s for _, sl in ANTHROPIC_EVALS.values() for s in sl)}


# --- skipping cleanly ---

def test_skip_helper_notes_each_missing_file_once(env, caplog):
    caplog.set_level(logging.INFO, logger="cai_repro")
    skipped = []
    rels = ["samples/PALMS_HRLHF.jsonl", "evals/HarmfulVsEthical.dev-slice.jsonl"]
    assert anthropic_files(rels, skipped) is None
    assert anthropic_files(rels[:1], skipped) is None
    assert skipped == [f"skipped: needs {r}" for r in rels]
    said = caplog.messages  # logged (a notebook shows them as output)
    assert said.count("skipped: needs samples/PALMS_HRLHF.jsonl") == 2 and any("CAI_REPRO_ANTHROPIC_DATA" in m for m in said)


def test_skip_helper_takes_the_files_from_one_place(env, anthropic_dir, monkeypatch):
    "A data folder with only some of the files: all of them come from the cache, those it had checked and copied."
    part = env / "part"
    (part / "samples").mkdir(parents=True)
    shutil.copy(anthropic_dir / "samples" / "PALMS_HRLHF.jsonl", part / "samples")
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_DATA", str(part))
    monkeypatch.setenv("CAI_REPRO_ANTHROPIC_URL", anthropic_dir.resolve().as_uri() + "/{path}")  # a local mirror
    got = anthropic_files(["samples/PALMS_HRLHF.jsonl", "samples/PALMS_HHRLHF.jsonl"])
    assert {p.parent for p in got.values()} == {env / "cache" / "anthropic-cai" / "samples"}
    assert all(p.read_bytes() == (anthropic_dir / r).read_bytes() for r, p in got.items())


def test_reproduce_offline_without_the_files_skips_the_evaluations(env, caplog):
    "The smoke profile's 06a through the runner (papermill), offline with an empty data folder: it runs to its end, and"
    "its summary and output say what was skipped. (05 and 09 use the same helper, after stages that take minutes here.)"
    from cai_repro.reproduce import reproduce
    caplog.set_level(logging.INFO, logger="cai_repro")
    summary = reproduce("smoke", out=env / "run", only=["06a_hhh_evals"])
    assert any(m.startswith("note: Anthropic's files were not found") for m in caplog.messages)  # a note at the start, not a stop
    s = summary["stages"]["06a_hhh_evals"]
    need = ["evals/438HHHEvaluations.dev-slice.jsonl", "evals/HarmfulVsEthical.dev-slice.jsonl",
            "evals/HarmfulnessClassification.dev-slice.jsonl", "evals/438HHHEvaluations.dev-large.jsonl"]
    assert s["skipped"] == [f"skipped: needs {r}" for r in need]
    assert s["evals"] == {} and s["compare_hhh"] == {} and s["labeller_choice"] == {}
    assert s["labels_dev_large"] == {} and s["ensemble"] == {} and s["fig9"] == {}
    executed = (env / "run" / "06a_hhh_evals.ipynb").read_text()
    assert all(f"skipped: needs {r}" in executed for r in need)
