"""Several processes over gloo on the CPU (torchrun, accelerate launch): sharded record writers give the records of one
process, a killed rank resumes, each rank locks its own part, SFT trains under DDP, and the shipped accelerate configs load."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cai_repro.artifacts import exclusive, read_records
from cai_repro.distributed import part_files, part_path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
CR = ["critique-revise", "--model", "tiny-random", "--dtype", "float32", "--prompts", "red-team", "--limit", "12",
      "--revisions", "2", "--max-new-tokens", "16", "--batch-size", "2"]


def one(*args, timeout=300) -> subprocess.CompletedProcess:
    "`python -m cai_repro ARGS` in one process."
    return subprocess.run([sys.executable, "-m", "cai_repro", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def two(*args, timeout=300, launcher="torchrun") -> subprocess.CompletedProcess:
    "The same command on two ranks over gloo: torchrun, or accelerate launch (its multi-GPU launcher, on the CPU here)."
    cmd = ([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"] if launcher == "torchrun" else
           [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0"])
    return subprocess.run([*cmd, "-m", "cai_repro", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    "The critique-revise records of one process, through `python -m cai_repro`."
    out = tmp_path_factory.mktemp("one") / "cr"
    ok(one(*CR, "--out", out))
    return read_records(out / "records.jsonl")


def test_sharded_critique_revise_gives_the_records_of_one_process(reference, tmp_path):
    out = tmp_path / "cr"
    out.mkdir()
    # an earlier run with one process finished two prompts: they are kept as they are, not redone
    kept = [{**r, "initial": f"KEPT {r['id']}"} for r in reference[4:6]]
    (out / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    p = ok(two(*CR, "--out", out))
    got = read_records(out / "records.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in reference]  # in input order
    assert got[4:6] == kept
    assert got[:4] + got[6:] == reference[:4] + reference[6:]
    assert part_files(out / "records.jsonl") == []  # merged, then removed
    assert p.stdout.count("12 records in") == 1  # the main process reports


def test_a_killed_run_resumes_per_rank_and_a_rank_locks_its_part(reference, tmp_path):
    out = tmp_path / "cr"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "cai_repro", *CR, "--out", str(out)]
    run = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parts = [part_path(out / "records.jsonl", r, 2) for r in range(2)]
    t0 = time.time()
    while not all(p.exists() and p.read_text().count("\n") >= 1 for p in parts):
        assert run.poll() is None, run.stderr.read()[-3000:]
        assert time.time() - t0 < 240, "no rank wrote a record"
        time.sleep(0.02)
    import psutil
    ranks = psutil.Process(run.pid).children(recursive=True)  # torchrun starts each rank in a session of its own
    for proc in [*ranks, psutil.Process(run.pid)]: proc.send_signal(signal.SIGKILL)  # every rank at once, as a crash would
    run.wait()
    psutil.wait_procs(ranks, timeout=60)
    assert not (out / "records.jsonl").exists()
    done = {p: read_records(p) for p in parts}
    assert all(done.values()) and sum(map(len, done.values())) < len(reference)
    ids = [r["id"] for r in reference]
    for r, p in enumerate(parts): assert {x["id"] for x in done[p]} <= set(ids[r::2])  # rank r takes every other prompt
    # mark what the ranks had finished: the rerun must keep it, not redo it
    for p, recs in done.items():
        p.write_text("".join(json.dumps({**r, "initial": "KEPT"}) + "\n" for r in recs) + '{"id": "torn')  # and a torn line
    with exclusive(parts[1]):  # another writer holds rank 1's part: that rank stops at once, and so does the run
        p = two(*CR, "--out", out)
    assert p.returncode != 0 and "being written by another process" in p.stderr and parts[1].name in p.stderr, p.stderr[-3000:]
    ok(two(*CR, "--out", out))
    got = {r["id"]: r for r in read_records(out / "records.jsonl")}
    assert [r["id"] for r in read_records(out / "records.jsonl")] == [r["id"] for r in reference]
    kept = {r["id"] for recs in done.values() for r in recs}
    assert all(got[k]["initial"] == "KEPT" for k in kept)
    assert [got[r["id"]] for r in reference if r["id"] not in kept] == [r for r in reference if r["id"] not in kept]
    assert part_files(out / "records.jsonl") == []


def test_sharded_label_gives_the_labels_of_one_process(reference, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"{r['id']}-{k}", "prompt": r["prompt"], "category": r["category"],
                                         "harmful": r["harmful"], "response_a": r["initial"],
                                         "response_b": r["steps"][k]["revision"]}) + "\n"
                             for r in reference[:5] for k in range(2)))
    label = ["label", "--model", "tiny-random", "--dtype", "float32", "--pairs", pairs, "--batch-size", "3", "--ensemble", "2",
             "--cot", "--cot-tokens", "6"]  # chains of thought: sampled, seeded by the batch
    ok(one(*label, "--out", tmp_path / "l1"))
    ok(two(*label, "--out", tmp_path / "l2", launcher="accelerate"))
    l1, l2 = (read_records(tmp_path / d / "labels.jsonl") for d in ("l1", "l2"))
    assert len(l1) == 10 and l2 == l1
    assert part_files(tmp_path / "l2" / "labels.jsonl") == []


def test_sharded_eval_gives_the_result_of_one_process(reference, tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Human: {r['prompt']}\n\nWhich reply is better? Options:\n (A) [[[{r['initial']}]]]\n"
                                                  f" (B) [[[{r['steps'][-1]['revision']}]]]\n\nThe answer is:",
                                        "corrects": [" (B)"], "incorrects": [" (A)"]}) + "\n" for r in reference[:5]))
    ev = ["eval", "mc", "--model", "tiny-random", "--dtype", "float32", "--data", data, "--debias", "--cot", "--cot-chains", "2",
          "--cot-tokens", "6"]
    ok(one(*ev, "--out", tmp_path / "e1.json"))
    ok(two(*ev, "--out", tmp_path / "e2.json"))
    e1, e2 = (json.loads((tmp_path / f).read_text()) for f in ("e1.json", "e2.json"))
    assert e1["n"] == 5 and e2 == e1
    assert [it["chains"] for it in e2["items"]] == [it["chains"] for it in e1["items"]]
    assert not Path(f"{tmp_path / 'e2.json'}.items.jsonl").exists()


def test_sft_trains_on_two_processes(reference, tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in reference))
    out = tmp_path / "sft"
    p = ok(two("sft", "--model", "tiny-random", "--records", records, "--out", out, "--n-helpful", "0", "--epochs", "1",
               "--batch-size", "2"))
    meta = json.loads((out / "cai_repro.json").read_text())
    assert meta["world_size"] == 2 and meta["kind"] == "sl-cai"
    assert (out / "adapter_model.safetensors").is_file() and not (out / "training_args.bin").exists()
    log = json.loads((out / "train_log.json").read_text())
    assert [h["step"] for h in log if "loss" in h]  # it trained
    assert p.stdout.count("SL-CAI model in") == 1
    from cai_repro.models import load_model
    load_model(str(out))  # a model spec, like a one-process run's


def test_rloo_takes_vllm_settings_from_the_command_line_and_ppo_refuses_several_processes(tmp_path, monkeypatch, capsys):
    from cai_repro.cli import build_parser, main
    from cai_repro.config import RLSettings, settings_from_args
    from cai_repro.rl import rloo_config
    rl = ["rl", "--policy", "tiny-random", "--pm", "tiny-random", "--out", str(tmp_path / "rl")]
    args = build_parser().parse_args([*rl, "--algo", "rloo", "--use-vllm", "--vllm-mode", "server",
                                      "--vllm-server-base-url", "http://10.0.0.5:8000"])
    cfg = rloo_config(settings_from_args(RLSettings, args), tmp_path / "trl")
    assert (cfg.use_vllm, cfg.vllm_mode, cfg.vllm_server_base_url) == (True, "server", "http://10.0.0.5:8000")
    assert main([*rl, "--algo", "ppo", "--use-vllm"]) == 2 and "use_vllm is for --algo rloo" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as a launcher would set it (rank 0)
    assert main([*rl, "--algo", "ppo"]) == 2 and "ppo runs in one process" in capsys.readouterr().err


@pytest.mark.parametrize("name,kind,n", [("one-gpu", "NO", 1), ("ddp-8gpu", "MULTI_GPU", 8), ("fsdp-8gpu", "FSDP", 8),
                                         ("zero3-8gpu", "DEEPSPEED", 8)])
def test_accelerate_configs_load(name, kind, n):
    "accelerate reads each shipped config as `accelerate launch --config_file` does, and knows every key in it."
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    path = ROOT / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))  # unknown top-level keys are an error here
    assert (config.distributed_type.value, config.num_processes, config.mixed_precision) == (kind, n, "no")
    parser = launch_command_parser()
    known = {a.dest for a in parser._actions}
    for section in ("fsdp_config", "deepspeed_config"):
        for key in getattr(config, section):
            assert key in known, f"{path.name}: {section}.{key} is not an accelerate launch setting"
    args, _, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "-m", "cai_repro", "sft"]))
    assert args.num_processes == n
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == (kind == "MULTI_GPU", kind == "FSDP", kind == "DEEPSPEED")
    if kind == "FSDP": assert args.fsdp_state_dict_type == "FULL_STATE_DICT"  # the saved model is whole
    if kind == "DEEPSPEED": assert args.zero_stage == 3 and args.zero3_save_16bit_model is True
