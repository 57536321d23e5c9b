"RL-CAI (cai_repro.rl): the pieces of PPO against hand computations, the loop on tiny models, resume after a kill, RLOO, CLI."
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import ROOT, cli
from cai_repro.config import RLSettings
from cai_repro.dialogue import PAPER
from cai_repro.models import load_model, load_tiny_random
from cai_repro.rl import (KeywordReward, NonFiniteError, PPO, Rollouts, check_finite, gae, latest_checkpoint, load_metrics,
                          penalised_scores, ppo_losses, ppo_step, response_end, rl_prompts, step_prompts, token_rewards,
                          train_ppo, train_rloo, whiten)

human_turn = PAPER.human_turn


@pytest.fixture(autouse=True)
def one_thread():
    "Toy-sized tensors: a second thread only adds contention on a shared machine (and results do not depend on it)."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pool():
    return rl_prompts("mix", 16, 0.5, seed=0)


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


RUN = dict(policy_spec="tiny-random", reward_name="toy", progress=False)  # train_ppo/train_rloo's keywords after the seed
SMALL = RLSettings(steps=4, batch_size=4, max_new_tokens=8, minibatch_size=2, ppo_epochs=2, lr=1e-2, kl_coef=0.05,
                   lora_r=4, lora_alpha=8, save_every=2, samples_per_step=2)


# --- the pieces, against hand computations ------------------------------------------------------------------------

def test_gae_matches_hand_computation():
    # row 0: 2 real tokens; row 1: 3 real tokens. gamma 0.9, lam 0.5.
    rewards = torch.tensor([[0.0, 2.0, 5.0], [1.0, 0.0, -1.0]])
    values = torch.tensor([[1.0, 0.5, 7.0], [0.2, 0.4, 0.6]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0: d1 = 2 + 0 - 0.5 = 1.5; d0 = 0 + 0.9*0.5 - 1 = -0.55; A1 = 1.5; A0 = -0.55 + 0.45*1.5 = 0.125
    # row 1: d2 = -1 - 0.6 = -1.6; d1 = 0 + 0.9*0.6 - 0.4 = 0.14; d0 = 1 + 0.9*0.4 - 0.2 = 1.16
    #        A2 = -1.6; A1 = 0.14 + 0.45*(-1.6) = -0.58; A0 = 1.16 + 0.45*(-0.58) = 0.899
    torch.testing.assert_close(adv, torch.tensor([[0.125, 1.5, 0.0], [0.899, -0.58, -1.6]]))
    torch.testing.assert_close(ret, torch.tensor([[1.125, 2.0, 0.0], [1.099, -0.18, -1.0]]))


def test_response_end_and_reward_on_last_real_token(tiny):
    _, tok = tiny
    eos, pad = {tok.eos_token_id}, tok.pad_token_id
    a = tok("ok", add_special_tokens=False).input_ids
    # ended by EOS, padding after it; a *sampled* pad id inside a response is a real token, not the end
    assert response_end(tok, a + [tok.eos_token_id, pad, pad], eos) == (len(a) + 1, True)
    assert response_end(tok, a + [pad] + a + [tok.eos_token_id], eos) == (2 * len(a) + 2, True)
    assert response_end(tok, a + a, eos) == (2 * len(a), False)
    stop = tok("\n\nHuman:", add_special_tokens=False).input_ids
    assert response_end(tok, a + stop + a, eos, stop=["\n\nHuman:"]) == (len(a) + len(stop), True)
    # the score lands on the EOS (index 2) / the last token of a truncated row (index 4), never on padding
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    zeros = torch.zeros(2, 5)
    rewards, kl = token_rewards(torch.tensor([3.0, -2.0]), zeros, zeros, mask, kl_coef=0.1)
    torch.testing.assert_close(rewards, torch.tensor([[0, 0, 3.0, 0, 0], [0, 0, 0, 0, -2.0]]))
    # the KL penalty is on real tokens only, even where the log-probs of padding are garbage
    lp = torch.tensor([[0.0, 0.0, 0.0, 9.0, 9.0], [0.0] * 5]) - 1
    rewards, kl = token_rewards(torch.zeros(2), lp, torch.full((2, 5), -1.5), mask, kl_coef=0.1)
    torch.testing.assert_close(kl.sum(1), torch.tensor([1.5, 2.5]))
    assert (rewards[0, 3:] == 0).all()


def test_logprobs_are_those_generate_sampled_from():
    "Our one-pass log-probs (left-padded queries, temperature) equal the distribution transformers sampled from."
    from transformers import GenerationConfig
    from cai_repro.models import left_pad
    from cai_repro.rl import response_hidden, response_logprobs
    model, tok = load_model("tiny-random")
    qs = [human_turn("Hi"), human_turn("How do I fix a flat bicycle tyre on a long ride?")]  # different lengths: padding
    ids, mask = left_pad([tok(q).input_ids for q in qs], tok.pad_token_id, "cpu")
    torch.manual_seed(0)
    config = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, pad_token_id=0,
                              eos_token_id=[1], return_dict_in_generate=True, output_logits=True)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    gen = out.sequences[:, ids.shape[1]:]
    expected = torch.log_softmax(torch.stack(out.logits, 1).float() / 0.7, -1).gather(-1, gen[..., None])[..., 0]
    ro = Rollouts(ids, mask, gen, torch.ones_like(gen), torch.zeros(2, dtype=torch.bool), ["", ""])
    with torch.no_grad(): lp, _ = response_logprobs(model, ro, response_hidden(model, ro), temperature=0.7)
    torch.testing.assert_close(lp, expected, atol=1e-5, rtol=1e-5)


def test_missing_eos_penalty():
    scores = penalised_scores(torch.tensor([1.0, 1.0, -0.5]), torch.tensor([True, False, False]), 2.0)
    torch.testing.assert_close(scores, torch.tensor([1.0, -1.0, -2.5]))
    torch.testing.assert_close(penalised_scores(torch.tensor([1.0]), torch.tensor([False]), 0.0), torch.tensor([1.0]))


def test_missing_eos_penalty_in_a_step(pool):
    "Truncated responses (almost all of a tiny random model's) pay the penalty: score = reward − 0.75 × share truncated."
    model, tok = load_model("tiny-random")
    s = replace(SMALL, max_new_tokens=4, missing_eos_penalty=0.75, stop=())
    row, samples = ppo_step(PPO(model, tok, KeywordReward("a"), s), 0, step_prompts(pool, 0, 4))
    assert row["ended_frac"] < 1
    assert math.isclose(row["score_mean"], row["reward_mean"] - 0.75 * (1 - row["ended_frac"]), abs_tol=1e-6)
    assert all(r["ended"] == (r["length"] < 4) for r in samples)


def test_whiten():
    x = torch.tensor([[2.0, 4.0, 6.0, 1e6], [8.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    w = whiten(x, mask)
    real = w[mask.bool()]
    assert abs(real.mean().item()) < 1e-6 and abs(real.var(unbiased=True).item() - 1) < 1e-5
    assert (w[~mask.bool()] == 0).all()
    kept = whiten(x, mask, shift_mean=False)[mask.bool()]
    assert abs(kept.mean().item() - 5.0) < 1e-5            # mean 5 kept, only scaled


def test_clipped_losses_against_hand_values():
    # eps = 0.1. A = (2, -1, -1): ratios (1.5, 1.05, 0.5)
    # token 0: max(-2*1.5, -2*1.1) = -2.2 (clipped); token 1: max(1.05, 1.05) = 1.05 (inside);
    # token 2: max(0.5, 0.9) = 0.9 (clipped). mean = (-2.2 + 1.05 + 0.9)/3 = -0.08333
    lp = torch.log(torch.tensor([[1.5, 1.05, 0.5]]))
    A = torch.tensor([[2.0, -1.0, -1.0]])
    # values: v = (1, 0, 3), old = (0, 0, 0), returns = (2, 1, 0), eps_v = 0.5 -> clipped v = (0.5, 0, 0.5)
    # max sq: (max(1, 2.25), max(1, 1), max(9, 0.25)) = (2.25, 1, 9): loss = 0.5 * 12.25/3
    L = ppo_losses(lp, torch.zeros(1, 3), A, torch.tensor([[1.0, 0.0, 3.0]]), torch.zeros(1, 3),
                   torch.tensor([[2.0, 1.0, 0.0]]), torch.ones(1, 3), clip_range=0.1, clip_range_value=0.5)
    assert math.isclose(L["policy_loss"].item(), (-2.2 + 1.05 + 0.9) / 3, rel_tol=1e-5)
    assert math.isclose(L["clip_frac"].item(), 2 / 3, rel_tol=1e-6)
    assert math.isclose(L["value_loss"].item(), 0.5 * 12.25 / 3, rel_tol=1e-5)
    assert math.isclose(L["value_clip_frac"].item(), 1 / 3, rel_tol=1e-6)


def test_check_finite_names_the_quantity():
    check_finite("values", torch.ones(3))
    with pytest.raises(NonFiniteError, match=r"step 7: values is not finite \(1 of 3"):
        check_finite("values", torch.tensor([1.0, float("inf"), 2.0]), step=7)


# --- the loop ---------------------------------------------------------------------------------------------------

def test_kl_is_zero_at_step_zero(pool):
    model, tok = load_model("tiny-random")
    row, samples = ppo_step(PPO(model, tok, KeywordReward("a"), SMALL), 0, step_prompts(pool, 0, 4))
    assert row["kl"] == 0.0 and row["kl_per_token"] == 0.0
    assert len(samples) == SMALL.samples_per_step and {"prompt", "response", "reward", "ended"} <= set(samples[0])


def test_nan_reward_raises_naming_it(pool):
    model, tok = load_model("tiny-random")
    nan_pm = lambda prompts, completions: [float("nan")] * len(completions)
    with pytest.raises(NonFiniteError, match="step 0: reward"):
        ppo_step(PPO(model, tok, nan_pm, SMALL), 0, step_prompts(pool, 0, 4))


def test_nan_in_the_policy_or_values_raises_naming_it(pool):
    model, tok = load_model("tiny-random")
    ppo = PPO(model, tok, KeywordReward("a"), SMALL)
    with torch.no_grad(): ppo.value_head.v.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="step 0: values"):
        ppo_step(ppo, 0, step_prompts(pool, 0, 4))
    model, tok = load_model("tiny-random")
    ppo = PPO(model, tok, KeywordReward("a"), SMALL)
    with torch.no_grad():
        for n, p in ppo.model.named_parameters():
            if "lora_B" in n: p.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="step 0: policy"):
        ppo_step(ppo, 0, step_prompts(pool, 0, 4))


def test_ppo_raises_a_toy_reward(pool):
    "A reward for one character (one byte token): PPO must raise it well above where it started."
    model, tok = load_tiny_random(0, initializer_range=0.3)  # the default tiny model is too flat to learn (see notebook)
    s = RLSettings(batch_size=8, max_new_tokens=16, minibatch_size=4, ppo_epochs=4, lr=3e-2, kl_coef=0.0, lora_r=8,
                   lora_alpha=16, missing_eos_penalty=0.0, stop=(),
                   lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"))  # lr 3e-2 overshoots with every linear layer adapted
    ppo = PPO(model, tok, KeywordReward("-"), s)
    rewards = [ppo_step(ppo, k, step_prompts(pool, k, 8))[0]["reward_mean"] for k in range(6)]
    assert sum(rewards[-2:]) / 2 > 3 * rewards[0], rewards


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, pool):
    tok = load_model("tiny-random")[1]
    full = train_ppo(load_model("tiny-random")[0], tok, KeywordReward("a"), pool, tmp_path / "full", SMALL, 0, **RUN)

    calls = []
    def crashing(prompts, completions):
        calls.append(1)
        if len(calls) == 4: raise KeyboardInterrupt  # during step 3, after the checkpoint of step 2
        return KeywordReward("a")(prompts, completions)
    with pytest.raises(KeyboardInterrupt):
        train_ppo(load_model("tiny-random")[0], tok, crashing, pool, tmp_path / "run", SMALL, 0, **RUN)
    assert latest_checkpoint(tmp_path / "run").name == "step-000002"
    assert len(load_metrics(tmp_path / "run")) == 3
    train_ppo(load_model("tiny-random")[0], tok, KeywordReward("a"), pool, tmp_path / "run", SMALL, 0, **RUN)
    assert strip_time(load_metrics(tmp_path / "run")) == strip_time(load_metrics(full))
    assert (tmp_path / "run" / "samples.jsonl").read_text() == (full / "samples.jsonl").read_text()
    ckpt = latest_checkpoint(full)
    assert {p.name for p in ckpt.iterdir()} >= {"adapter_model.safetensors", "value_head.safetensors", "optimizer.safetensors",
                                                "optimizer.json", "rng.safetensors", "state.json"}
    assert not [p for p in full.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    snaps = sorted(p.name for p in (full / "snapshots").iterdir())  # a loadable policy at every checkpoint step, none pruned
    assert snaps == sorted({f"step-{k:06d}" for k in range(SMALL.save_every, SMALL.steps + 1, SMALL.save_every)} | {f"step-{SMALL.steps:06d}"})
    early, _ = load_model(str(full / "snapshots" / snaps[0]))
    assert early is not None


def test_rloo_writes_the_same_metrics(tmp_path, pool):
    model, tok = load_model("tiny-random")
    ppo_dir = train_ppo(model, tok, KeywordReward("a"), pool, tmp_path / "ppo", replace(SMALL, steps=1), 0, **RUN)
    model, tok = load_model("tiny-random")
    s = replace(SMALL, algo="rloo", steps=2, rloo_k=2)
    out = train_rloo(model, tok, KeywordReward("a"), pool, tmp_path / "rloo", s, 0, **RUN)
    rows = load_metrics(out)
    assert [r["step"] for r in rows] == [0, 1]
    assert set(rows[0]) == set(load_metrics(ppo_dir)[0])
    assert rows[0]["algo"] == "rloo" and rows[0]["kl"] == 0.0 and rows[0]["value_loss"] is None
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2 * s.samples_per_step
    load_model(str(out / "policy"))  # the trained policy is a model spec


def test_rloo_rejects_nan_rewards(tmp_path, pool):
    model, tok = load_model("tiny-random")
    s = replace(SMALL, algo="rloo", steps=1, rloo_k=2)
    with pytest.raises(NonFiniteError, match="reward"):
        train_rloo(model, tok, lambda p, c: [float("nan")] * len(c), pool, tmp_path / "r", s, 0, **RUN)


def test_step_prompts_cover_the_pool_each_pass(pool):
    seen = [p.id for k in range(4) for p in step_prompts(pool, k, 4, seed=3)]
    assert sorted(seen) == sorted(p.id for p in pool)
    assert step_prompts(pool, 5, 4, seed=3) == step_prompts(pool, 5, 4, seed=3)
    assert sum(p.harmful for p in pool) == 8


# --- the command line ---------------------------------------------------------------------------------------------

RL_ARGS = ("rl", "--policy", "tiny-random", "--pm", "tiny-random", "--n-prompts", "8", "--batch-size", "4",
           "--max-new-tokens", "8", "--minibatch-size", "2", "--save-every", "2", "--quiet")
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_cli_bad_input_exits_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "category": "x"}\n{"prompt": 3, "category": "x"}\n')
    code, _, err = cli(*RL_ARGS, "--out", tmp_path / "a", "--prompts", bad, env=ONE_THREAD)  # the console script
    assert code == 2 and f"{bad}:2:" in err
    code, err = run_cli(*RL_ARGS, "--out", tmp_path / "a", "--pm", tmp_path / "no-pm")
    assert code == 2 and "no such preference-model directory" in err
    code, err = run_cli(*RL_ARGS, "--out", tmp_path / "a", "--policy", tmp_path / "no-policy")
    assert code == 2 and "no such directory" in err
    code, err = run_cli(*RL_ARGS, "--out", tmp_path / "a", "--algo", "rloo", "--rloo-k", "3")
    assert code == 2 and "rloo_k" in err
    assert not (tmp_path / "a").exists()                       # nothing written for a refused command


def run_cli(*argv):
    "The `cai-repro` entry point in this process: (exit code, stderr)."
    import contextlib, io
    from cai_repro.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): code = main([str(a) for a in argv])
    return code, err.getvalue()


def test_cli_resumes_after_kill_9(tmp_path):
    "A real SIGKILL mid-run; rerunning the command resumes and ends with the metrics of an uninterrupted run."
    args = (*RL_ARGS, "--steps", "12")
    exe = Path(sys.executable).parent / "cai-repro"
    proc = subprocess.Popen([str(exe), *map(str, args), "--out", str(tmp_path / "killed")], cwd=ROOT,
                            env={**os.environ, **ONE_THREAD}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3: break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.returncode} {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL); proc.wait()
    done_at_kill = len(metrics.read_text().splitlines())
    assert 3 <= done_at_kill < 12
    code, err = run_cli(*args, "--out", tmp_path / "killed")  # the same command again: resumes
    assert code == 0, err
    code, err = run_cli(*args, "--out", tmp_path / "full")    # and an uninterrupted run
    assert code == 0, err
    assert strip_time(load_metrics(tmp_path / "killed")) == strip_time(load_metrics(tmp_path / "full"))
    # same directory, other settings: refused, and the finished run is untouched
    code, err = run_cli(*args, "--out", tmp_path / "full", "--kl-coef", "0.5")
    assert code == 2 and "other settings (kl_coef)" in err
    assert len(load_metrics(tmp_path / "full")) == 12
