"Settings (cai_repro.config): strict profiles that name the file, line and key of a mistake; types and ranges; the bundled profiles; the command line's defaults."
import contextlib
import io
from dataclasses import replace

import pytest

from cai_repro.artifacts import InputError, bundled_dir
from cai_repro.config import (CritiqueRevisionSettings, FeedbackSettings, Params, PMSettings, RLSettings, SECTIONS,
                              load_params, settings_from, settings_record)

from conftest import cli

BUNDLED = sorted(p.stem for p in bundled_dir("profiles").glob("*.yaml"))


def profile(tmp_path, text: str, name: str = "p.yaml"):
    f = tmp_path / name
    f.write_text(text)
    return f


def in_process(*argv) -> tuple[int, str]:
    "`cai-repro` in this process: (exit code, stderr)."
    from cai_repro.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): code = main([str(a) for a in argv])
    return code, err.getvalue()


# --- the bundled profiles ----------------------------------------------------------------------------------------

def test_every_bundled_profile_loads():
    assert {"smoke", "cpu", "gpu"} <= set(BUNDLED)
    for name in BUNDLED:
        P = load_params(name)
        assert isinstance(P, Params) and P.name == name and P.source == str(bundled_dir("profiles") / f"{name}.yaml")
        assert P.description, name  # each says what it is for
        assert load_params(P.source) == P  # by name or by path: the same parameters
    assert load_params("smoke").run.model == "tiny-random"
    assert load_params("cpu").run.model == "gemma-3-270m" and load_params("cpu").feedback.method == "contrast"
    assert load_params("smoke").cr.revisions == 2 and Params().cr.revisions == 4  # a profile overrides the defaults


def test_missing_profile():
    with pytest.raises(InputError, match="no such profile") as e:
        load_params("no-such-profile")
    assert all(name in str(e.value) for name in BUNDLED)  # the message lists the bundled ones


# --- strictness: unknown keys --------------------------------------------------------------------------------------

def test_unknown_section_names_file_line_key_and_closest(tmp_path):
    f = profile(tmp_path, "run: {model: tiny-random}\nfeedbak:\n  ensemble: 2\n")
    with pytest.raises(InputError) as e:
        load_params(f)
    assert (e.value.path, e.value.line) == (str(f), 2)
    msg = str(e.value)
    assert msg.startswith(f"{f}:2: ") and "unknown section 'feedbak'" in msg and "did you mean 'feedback'?" in msg


@pytest.mark.parametrize("text,line,key,closest", [
    ("run: {model: tiny-random}\ncr:\n  revisions: 2\n  revsions: 3\n", 4, "revsions", "revisions"),
    ("description: x\npm: {lr: 1.0e-3, max_step: 4}\n", 2, "max_step", "max_steps"),
    ("rl:\n  steps: 3\n\n  kl_coeff: 0.1\n", 4, "kl_coeff", "kl_coef"),
])
def test_unknown_key_in_a_section_names_file_line_key_and_closest(tmp_path, text, line, key, closest):
    f = profile(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_params(f)
    assert (e.value.path, e.value.line) == (str(f), line)
    assert str(e.value).startswith(f"{f}:{line}: ") and f"unknown key {key!r}" in str(e.value)
    assert f"did you mean {closest!r}?" in str(e.value)


# --- types and ranges ------------------------------------------------------------------------------------------------

BAD = {
    "integer": ("cr:\n  revisions: two\n", 2, "cr: 'revisions' must be an integer, got 'two'"),
    "float for int": ("cr:\n  n_prompts: 4.5\n", 2, "'n_prompts' must be an integer"),
    "bool for int": ("run:\n  seed: true\n", 2, "'seed' must be an integer, got True"),
    "number": ("sft:\n  lr: fast\n", 2, "'lr' must be a number, got 'fast'"),
    "boolean": ("cr:\n  direct: 1\n", 2, "'direct' must be true or false, got 1"),
    "text": ("run:\n  model: 3\n", 2, "'model' must be text, got 3"),
    "pair": ("feedback:\n  clamp: [0.4]\n", 2, "'clamp' must be a list of 2"),
    "choice": ("sft:\n  revision: best\n", 2, "'revision' must be one of final, all, got 'best'"),
    "dtype": ("run:\n  model: tiny-random\n  dtype: float16\n", 3, "'dtype' must be one of auto, float32, bfloat16"),
    "minimum": ("rl:\n  temperature: 0\n", 2, "rl: 'temperature' must be at least 1e-06, got 0"),
    "steps": ("rl:\n  steps: 0\n", 2, "'steps' must be at least 1, got 0"),
    "maximum": ("cr:\n  top_p: 1.5\n", 2, "'top_p' must be at most 1, got 1.5"),
    "heldout": ("pm:\n  heldout: 0.95\n", 2, "'heldout' must be at most 0.9"),
    "not a mapping": ("cr: 3\n", 1, "section 'cr' must be a mapping of settings"),
    "not sections": ("- cr\n", 1, "a profile must be a mapping of sections"),
}


@pytest.mark.parametrize("case", BAD)
def test_type_and_range_errors_name_file_and_line(tmp_path, case):
    text, line, problem = BAD[case]
    f = profile(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_params(f)
    assert str(e.value).startswith(f"{f}:{line}: ") and problem in str(e.value), str(e.value)


def test_values_are_converted_and_cross_field_rules_hold(tmp_path):
    P = load_params(profile(tmp_path, "pm: {lr: 1e-3}\nrl: {n_prompts: null, stop: []}\nanalysis: {principle_counts: [1, 16]}\n"))
    assert P.pm.lr == 1e-3 and isinstance(P.pm.lr, float)  # YAML reads 1e-3 as text; a float field takes it
    assert P.rl.n_prompts is None and P.rl.stop == () and P.analysis.principle_counts == (1, 16)
    f = profile(tmp_path, "rl: {algo: rloo, batch_size: 8, rloo_k: 3}\n")
    with pytest.raises(InputError, match=r"p\.yaml:1: rl: RLOO needs rloo_k dividing batch_size"):
        load_params(f)
    f = profile(tmp_path, "feedback:\n  method: contrast\n  debias: true\n")
    with pytest.raises(InputError, match=r"feedback: debias and cot apply to the multiple-choice labeller"):
        load_params(f)
    f = profile(tmp_path, "cr: {revisions: [1,\n")
    with pytest.raises(InputError, match=r"p\.yaml:\d+: syntax error"):
        load_params(f)
    f = profile(tmp_path, "cr: {revisions: 1}\ncr: {revisions: 2}\n")
    with pytest.raises(InputError, match=r"p\.yaml:2: duplicate key 'cr'"):
        load_params(f)


def test_settings_from_checks_what_the_constructor_does_not():
    "Ranges come from the fields' metadata (`settings_from`); a rule across fields is the constructor's own."
    assert settings_from(RLSettings, {"temperature": 0.5, "steps": 2}) == RLSettings(temperature=0.5, steps=2)
    with pytest.raises(InputError, match="'temperature' must be at least"):
        settings_from(RLSettings, {"temperature": 0})
    with pytest.raises(InputError, match="'steps' must be at least 1"):
        settings_from(RLSettings, {"steps": 0})
    with pytest.raises(InputError, match=r"unknown key 'seed'"):  # the run's seed is not a stage setting
        settings_from(FeedbackSettings, {"seed": 3})
    with pytest.raises(ValueError, match="rloo_k dividing batch_size"):
        RLSettings(algo="rloo", rloo_k=3, batch_size=8)
    with pytest.raises(ValueError, match="clamp must be"):
        FeedbackSettings(clamp=(0.7, 0.3))
    base = PMSettings(lr=5e-3)
    assert settings_from(PMSettings, {"epochs": 3}, base=base) == replace(base, epochs=3)  # on top of a base


def test_load_params_overrides_sections_and_keys():
    P = load_params("smoke", cr={"revisions": 3}, rl=RLSettings(steps=2))
    smoke = load_params("smoke")
    assert P.cr == replace(smoke.cr, revisions=3)  # one key: the profile's other values stay
    assert P.rl == RLSettings(steps=2) and P.run == smoke.run
    with pytest.raises(InputError, match=r"cr: unknown key 'revsions' \(did you mean 'revisions'\?"):
        load_params("smoke", cr={"revsions": 3})
    with pytest.raises(KeyError, match="did you mean 'cr'"):
        load_params("smoke", crr={"revisions": 3})
    assert set(SECTIONS) == {"run", "engine", "prompts", "cr", "sft", "analysis", "evals", "feedback", "pm", "rl", "dpo", "evaluation", "workbench"}


def test_settings_record_leaves_out_the_selection():
    rec = settings_record(CritiqueRevisionSettings(revisions=2), seed=7)
    assert rec["revisions"] == 2 and rec["seed"] == 7 and "prompts" not in rec and "n_prompts" not in rec
    rec = settings_record(RLSettings())
    assert not {"policy", "pm", "prompts", "n_prompts", "harmful_fraction"} & set(rec) and "kl_coef" in rec


# --- the command line ------------------------------------------------------------------------------------------------

def test_cli_defaults_come_from_the_profile():
    from cai_repro.cli import build_parser
    label = ["label", "--pairs", "p.jsonl", "--out", "o"]
    assert build_parser().parse_args(label).method == "mc"                 # FeedbackSettings' default
    assert build_parser(load_params("cpu")).parse_args(label).method == "contrast"  # the cpu profile's
    assert build_parser(load_params("cpu")).parse_args([*label, "--method", "mc"]).method == "mc"  # a flag still wins
    args = build_parser(load_params("smoke")).parse_args(["critique-revise", "--out", "o"])
    assert (args.model, args.revisions, args.initial_tokens) == ("tiny-random", 2, 24)


def test_cli_checks_flags_and_profiles_like_profiles(tmp_path):
    code, err = in_process("label", "--model", "tiny-random", "--pairs", tmp_path / "p.jsonl", "--out", tmp_path / "o",
                           "--ensemble", "0")
    assert code == 2 and "'ensemble' must be at least 1" in err and not (tmp_path / "o").exists()
    f = profile(tmp_path, "feedback:\n  ensembel: 2\n")
    code, err = in_process("label", "--profile", f, "--pairs", tmp_path / "p.jsonl", "--out", tmp_path / "o")
    assert code == 2 and f"{f}:2: feedback: unknown key 'ensembel' (did you mean 'ensemble'?" in err


def test_cli_plan_exit_codes(tmp_path):
    "`cai-repro reproduce --profile FILE --plan`: 2 and the mistake for a misspelt key; 0 and the stages for smoke."
    bad = profile(tmp_path, "run: {model: tiny-random}\ncr:\n  revsions: 2\n")
    code, out, err = cli("reproduce", "--profile", bad, "--plan")
    assert code == 2, (out, err)
    assert f"{bad}:3: cr: unknown key 'revsions' (did you mean 'revisions'?" in err
    cache = tmp_path / "cache"
    code, out, err = cli("reproduce", "--profile", bundled_dir("profiles") / "smoke.yaml", "--plan",
                         env={"CAI_REPRO_CACHE": str(cache)})
    assert code == 0, err
    assert "profile smoke" in out and "stages, in order" in out
    for stage in ("critique_revision", "sl_cai", "labels", "preference_model", "rl_cai", "evaluation"):
        assert stage in out, stage
    assert not cache.exists()  # planning builds nothing


def test_the_gpu_profile_plans_offline():
    "The gpu profile names an instruct model on the Hub, a vLLM server and the full eval files: its plan needs none of them."
    code, out, err = cli("reproduce", "--profile", "gpu", "--plan", env={"HF_HUB_OFFLINE": "1"})
    assert code == 0, err
    assert "format: chat    engine: openai: http://127.0.0.1:8000/v1" in out
    assert "critique_revision (main)" in out and "total" in out
    assert "run `cai-repro eval download`" in out  # the full evaluation files, missing here, are named with the fix
