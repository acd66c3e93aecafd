"""Several training processes on the CPU (gloo): FSDP2 through tuneloop's accelerate launch, the
documented by-hand launch lines, stale CANCEL flags, and the refusals before a launch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from store import runs as runs_store
from tests.training_fixtures import MEMO_PAIRS, make_slice, tiny_model_dir
from training import runner
from training.runfolder import RunFolder
from training.runner import cancel_run, check_launch, launch_config, start_run, sync_run

EVAL = [("What colour is the sea?", "blue"), ("What colour is milk?", "white")]
FAST = ["learning_rate=1e-2", "warmup_steps=0", "lr_scheduler=constant", "threads=1", "batch_tokens=128",
        "max_length=64", "device=cpu"]


@pytest.fixture(scope="module")
def tiny() -> str:
    return str(tiny_model_dir())


def _losses(folder: RunFolder) -> list[float]:
    return [r["loss"] for r in folder.metrics() if "loss" in r]


def _prepared(project, tiny, overrides) -> RunFolder:
    """A run folder start_run prepared, without launching it (as for a by-hand launch)."""
    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid = start_run(project, "memo", base_model=tiny, overrides=[*FAST, *overrides], launch_now=False)
    with project.connect() as con:
        return RunFolder(runs_store.get(con, rid).run_dir)


def _by_hand(args: list[str], folder: RunFolder, tmp_path) -> subprocess.CompletedProcess:
    env = runner._env()
    env["HF_HOME"] = str(tmp_path / "hf")  # no user accelerate config (default_config.yaml) in the way
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *args, "-m", "training.train",
                           str(folder.path)], cwd=str(runner.REPO_ROOT), env=env, capture_output=True, text=True,
                          timeout=600)


def _lora_weights(adapter_dir) -> dict:
    """The adapter's weights as plain peft loads them onto the base, by parameter name."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), dtype="float32")
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_fsdp_two_cpu_processes_and_resume_by_hand(project, tiny, tmp_path):
    import torch

    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid = start_run(project, "memo", base_model=tiny, wait=True,
                    overrides=[*FAST, "max_steps=6", "save_every=3", "eval_every=0", "nproc=2", "distributed=fsdp"])
    with project.connect() as con:
        run = runs_store.get(con, rid)
    folder = RunFolder(run.run_dir)
    log = folder.log_file.read_text()
    assert run.status == "succeeded", f"{run.error}\n{log[-4000:]}"
    st = folder.status()
    assert run.summary["world_size"] == 2 and run.summary["distributed"] == st["distributed"] == "fsdp"
    assert "2 process(es), fsdp" in log
    losses = _losses(folder)
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0], losses
    # The adapter is whole (gathered from both shards), loads with plain peft, and is what rank 0
    # had at the end (best/weights.pt: the last eval is at the last step).
    got = _lora_weights(run.adapter_path)
    final = torch.load(folder.checkpoints / "best" / "weights.pt", weights_only=True)
    assert got and set(got) == set(final)
    for n, t in final.items():
        assert got[n].shape == t.shape and torch.allclose(got[n], t, atol=1e-6), n
    assert any(float(t.abs().sum()) > 0 for n, t in got.items() if "lora_B" in n)

    # Resume: a copy of the folder as it was at the step-3 checkpoint, launched by hand with the
    # shipped FSDP config, continues from step 3 and ends with the same adapter.
    copy = RunFolder(tmp_path / "copy")
    shutil.copytree(folder.path, copy.path, ignore=shutil.ignore_patterns("adapter", "best", "metrics.jsonl"))
    copy.update_status(status="failed", step=3)
    done = _by_hand(["--config_file", str(launch_config("fsdp")), "--num_processes", "2", "--main_process_port", "0"],
                    copy, tmp_path)
    st2 = copy.status()
    assert done.returncode == 0 and st2["status"] == "succeeded", done.stdout[-3000:] + done.stderr[-3000:]
    assert st2["resumed"] is True and st2["world_size"] == 2 and [r["step"] for r in copy.metrics() if "loss" in r] \
        == [4, 5, 6]
    again = _lora_weights(copy.adapter_dir)
    for n, t in got.items():
        assert torch.allclose(again[n], t, atol=1e-5), n


def test_fsdp_full_fine_tuning_saves_the_whole_model(project, tiny):
    import torch
    from transformers import AutoModelForCausalLM

    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    rid = start_run(project, "memo", base_model=tiny, wait=True,
                    overrides=[*FAST, "learning_rate=1e-3", "method=full", "max_steps=3", "eval_every=0", "nproc=2",
                               "distributed=fsdp"])
    with project.connect() as con:
        run = runs_store.get(con, rid)
    folder = RunFolder(run.run_dir)
    assert run.status == "succeeded", f"{run.error}\n{folder.log_file.read_text()[-4000:]}"
    assert run.summary["world_size"] == 2 and run.summary["artifact_kind"] == "model"
    model = AutoModelForCausalLM.from_pretrained(run.adapter_path, dtype="float32")
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype="float32")
    final = torch.load(folder.checkpoints / "best" / "weights.pt", weights_only=True)
    got = dict(model.named_parameters())
    assert set(final) == set(got)
    for n, t in final.items():
        assert got[n].shape == t.shape and torch.allclose(got[n].detach(), t, atol=1e-6), n
    changed = [n for n, p in base.named_parameters() if not torch.equal(p, got[n])]
    assert len(changed) == len(got)


def test_accelerate_launch_by_hand_runs_two_processes_past_a_stale_cancel(project, tiny, monkeypatch, tmp_path):
    folder = _prepared(project, tiny, ["max_steps=3", "nproc=2"])
    rid = folder.path.name
    run = cancel_run(project, rid)  # never launched: cancelled at once, the CANCEL flag left behind
    assert run.status == "cancelled" and folder.cancel_requested()
    done = _by_hand(["--multi_gpu", "--num_processes", "2", "--main_process_port", "0"], folder, tmp_path)
    st = folder.status()
    assert done.returncode == 0 and st["status"] == "succeeded", done.stdout[-3000:] + done.stderr[-3000:]
    assert st["world_size"] == 2 and st["step"] == 3 and not folder.cancel_requested()
    assert "removed the stale CANCEL flag" in done.stdout
    run = sync_run(project, rid)  # the store leaves cancelled: the run was launched again
    assert run.status == "succeeded" and run.summary["world_size"] == 2 and run.adapter_path
    with project.connect() as con:
        statuses = [e[0] for e in runs_store.events(con, rid)]
    assert statuses[-3:] == ["queued", "running", "succeeded"] and "cancelled" in statuses


def test_accelerate_launch_that_starts_one_process_says_so(project, tiny, monkeypatch, tmp_path):
    folder = _prepared(project, tiny, ["max_steps=2", "nproc=2"])
    # No --multi_gpu, no config file, no GPU: accelerate starts a single process.
    done = _by_hand(["--num_processes", "2"], folder, tmp_path)
    st = folder.status()
    assert done.returncode == 1 and st["status"] == "failed"
    assert "asked for 2 processes but started this one alone" in st["error"] and "--multi_gpu" in st["error"]


def test_launch_command_uses_accelerate_with_the_shipped_configs(tmp_path):
    from training.config import TrainConfig

    folder = RunFolder(tmp_path)
    cmd = runner.launch_command(folder, TrainConfig(nproc=4, distributed="fsdp"))
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--cpu" not in cmd
    assert cmd[cmd.index("--config_file") + 1] == str(launch_config("fsdp"))
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[-3:] == ["-m", "training.train", str(tmp_path)]
    assert runner.launch_command(folder, TrainConfig())[1:] == ["-m", "training.train", str(tmp_path)]
    for mode in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        text = launch_config(mode).read_text()
        assert "num_processes: -1" in text
    assert "fsdp_version: 2" in launch_config("fsdp").read_text()


def test_gpus_are_refused_without_enough_cuda_devices(project, tiny):
    from training.config import TrainConfig

    with pytest.raises(ValueError, match=r"need 2 CUDA devices; this machine has 0.*nproc=2 device=cpu"):
        check_launch(TrainConfig(nproc=2, device="cuda"), cuda_devices=0)
    with pytest.raises(ValueError, match="this machine has 1"):
        check_launch(TrainConfig(nproc=2, device="auto"), cuda_devices=1)
    check_launch(TrainConfig(nproc=2, device="cuda"), cuda_devices=2)
    check_launch(TrainConfig(nproc=2, device="auto"), cuda_devices=0)  # no GPU: CPU processes
    check_launch(TrainConfig(nproc=2, device="cpu"), cuda_devices=0)
    with pytest.raises(ValueError, match="DeepSpeed.*distributed=fsdp"):
        check_launch(TrainConfig(nproc=2, distributed="deepspeed_zero3", device="cpu"))
    # start_run refuses before anything is created (this machine: no CUDA in the test suite)
    import torch

    if not torch.cuda.is_available():
        make_slice(project, "memo", MEMO_PAIRS)
        with pytest.raises(ValueError, match="this machine has 0"):
            start_run(project, "memo", base_model=tiny, overrides=["nproc=2", "device=cuda"])
        with project.connect() as con:
            assert runs_store.list_runs(con) == []


def test_cli_gpus_option_refuses_with_the_cuda_count(project, tiny):
    import torch
    from typer.testing import CliRunner

    from tuneloop.cli import app

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    make_slice(project, "memo", MEMO_PAIRS)
    res = CliRunner().invoke(app, ["train", "--slice", "memo", "--base", tiny, "--gpus", "2", "--distributed", "fsdp",
                                   "--project", str(project.root)])
    assert res.exit_code != 0
    out = " ".join(res.output.split())
    assert f"this machine has {torch.cuda.device_count()}" in out and "nproc=2 device=cpu" in out



def test_cli_no_launch_prepares_a_queued_run_and_prints_the_command_that_starts_it(project, tiny, tmp_path):
    """For a cluster: the run is created (folder, frozen data, queued in the store) but not started,
    and the printed line starts it by hand; then the store follows it to succeeded."""
    import shlex

    from typer.testing import CliRunner

    from tuneloop.cli import app

    make_slice(project, "memo", MEMO_PAIRS, eval_pairs=EVAL)
    res = CliRunner().invoke(app, ["train", "--slice", "memo", "--base", tiny, "--no-launch", "--project",
                                   str(project.root), *FAST, "max_steps=2", "nproc=2"])
    assert res.exit_code == 0, res.output
    line = res.output.strip().splitlines()[-1]
    cmd = shlex.split(line)
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--config_file", str(runner.launch_config("ddp"))]
    with project.connect() as con:
        (run,) = runs_store.list_runs(con)
    assert run.status == "queued" and RunFolder(run.run_dir).status().get("pid") is None  # nothing started
    env = runner._env()
    env["HF_HOME"] = str(tmp_path / "hf")
    done = subprocess.run(cmd, cwd=str(runner.REPO_ROOT), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = sync_run(project, run.id)
    assert run.status == "succeeded" and run.summary["world_size"] == 2
