"""The library reports through `logging` (a logger per module, under `cai_repro`); only the command line prints, and
`cai-repro -q` leaves the progress messages out while a command's result stays on stdout."""
import ast
import contextlib
import io
import logging
from pathlib import Path

import pytest

from conftest import ROOT, cli

PKG = ROOT / "cai_repro"
# modules that may call print(), and why. cli.py: each command's result (text, JSON, paths) on stdout, and the error
# lines of `main` on stderr. Anything else reports through its module's logger.
PRINT_ALLOWED = {"cli.py": "the commands' output and `main`'s error lines"}


def prints(path: Path) -> list[int]:
    "Line numbers of the print() calls in a module."
    tree = ast.parse(path.read_text())
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


def test_only_the_allowed_modules_print():
    found = {f.name: prints(f) for f in sorted(PKG.glob("*.py")) if f.name not in PRINT_ALLOWED}
    assert {k: v for k, v in found.items() if v} == {}
    assert prints(PKG / "cli.py"), "the check looks at nothing: cli.py prints the commands' results"


def test_the_check_finds_a_print(tmp_path):
    (tmp_path / "m.py").write_text("import sys\ndef f():\n    print('x', file=sys.stderr)\n")
    assert prints(tmp_path / "m.py") == [3]


def test_loggers_sit_under_cai_repro():
    "A module that logs names its logger after itself, so that configuring `cai_repro` reaches it."
    import importlib
    for f in sorted(PKG.glob("*.py")):
        if "getLogger(" not in f.read_text(): continue
        mod = importlib.import_module(f"cai_repro.{f.stem}")
        assert mod.log.name == f"cai_repro.{f.stem}", f.name


def _main_stderr(monkeypatch, *flags, env_level=None):
    "`cai-repro [flags] reproduce --profile smoke` in this process, its run replaced by one that logs: (stdout, stderr)."
    import cai_repro.reproduce as reproduce_mod
    from cai_repro.cli import main
    def fake(*a, **k):
        logging.getLogger("cai_repro.reproduce").debug("debug detail")
        logging.getLogger("cai_repro.reproduce").info("[1/1] 03_critique_revision ...")
        logging.getLogger("cai_repro.artifacts").warning("stage x is damaged")
        return {}
    monkeypatch.setattr(reproduce_mod, "reproduce", fake)
    if env_level: monkeypatch.setenv("CAI_REPRO_LOG_LEVEL", env_level)
    else: monkeypatch.delenv("CAI_REPRO_LOG_LEVEL", raising=False)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main([*flags, "reproduce", "--profile", "smoke"]) == 0
    finally:
        lg = logging.getLogger("cai_repro")
        for h in list(lg.handlers): lg.removeHandler(h)
        lg.setLevel(logging.NOTSET)
    return out.getvalue(), err.getvalue()


def test_cli_levels(monkeypatch):
    out, err = _main_stderr(monkeypatch)
    assert out == "" and err == "[1/1] 03_critique_revision ...\ncai-repro: warning: stage x is damaged\n"
    out, err = _main_stderr(monkeypatch, "-q")
    assert out == "" and err == "cai-repro: warning: stage x is damaged\n"
    assert "debug detail" in _main_stderr(monkeypatch, "--verbose")[1]
    assert "debug detail" in _main_stderr(monkeypatch, env_level="DEBUG")[1]
    assert "[1/1]" not in _main_stderr(monkeypatch, env_level="warning")[1]
    out, err = _main_stderr(monkeypatch, "-q", env_level="DEBUG")  # the flag wins over the environment
    assert "debug detail" not in err and "[1/1]" not in err


def test_a_bad_level_in_the_environment_exits_2():
    code, _, err = cli("constitution", "check", ROOT / "constitutions" / "default.yaml", env={"CAI_REPRO_LOG_LEVEL": "chatty"})
    assert code == 2 and "unknown log level 'chatty'" in err, err


def test_quiet_silences_a_real_run(tmp_path):
    "The real command: a one-notebook smoke run says which notebook runs, unless -q; the run itself is the same."
    env = {"CAI_REPRO_STAGES": str(tmp_path / "stages"), "CAI_REPRO_LOG_LEVEL": ""}
    code, out, err = cli("-q", "reproduce", "--profile", "smoke", "--only", "00a_dialogue", "--out", tmp_path / "q", env=env)
    assert code == 0, err[-3000:]
    assert "00a_dialogue" not in out + err and "done:" not in out + err, err
    assert (tmp_path / "q" / "00a_dialogue.ipynb").exists()
    code, out, err = cli("reproduce", "--profile", "smoke", "--only", "00a_dialogue", "--out", tmp_path / "v", env=env)
    assert code == 0 and "[1/1] 00a_dialogue ..." in err and f"done: {tmp_path / 'v'}" in err, err[-3000:]
