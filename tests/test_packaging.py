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
                 "cai_repro/_data/nbs/03_critique_revision.ipynb", "cai_repro/__main__.py"):
        assert want in names, want


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
