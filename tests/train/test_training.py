"""Real training runs on CPU: DeepSpeed (gloo), 1 and 2 ranks, bf16, resume after SIGKILL, and the
errors that must come before any work starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from trainrun import (
    TINY,
    TRAIN_JOB,
    child_env,
    free_port,
    kill_after_first_checkpoint,
    run_train,
    torchrun,
    train_cmd,
)

from hpcdiff.cli import main
from hpcdiff.provenance import provenance
from hpcdiff.train.checkpoint import latest, list_checkpoints, load_state
from hpcdiff.train.metrics_log import read_csv

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]


def losses(run: Path) -> list[tuple[int, float, float]]:
    return [(int(r["step"]), float(r["loss"]), float(r["lr"])) for r in read_csv(run / "train.csv")]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    path = latest(run / "checkpoints")
    return torch.load(path / "engine.pt", map_location="cpu", weights_only=True)["module"]


@pytest.fixture(scope="module")
def one_rank(tiny_dataset, tmp_path_factory) -> Path:
    """1 rank, micro-batch 2, accumulation 2 (global batch 4)."""
    out = tmp_path_factory.mktemp("one") / "run"
    proc = run_train(tiny_dataset, out, "train.micro_batch=2")
    assert "global batch 4 = micro-batch 2 x accumulation 2 x 1 rank" in proc.stderr
    return out


@pytest.fixture(scope="module")
def two_ranks(tiny_dataset, tmp_path_factory) -> Path:
    """2 ranks under torchrun, micro-batch 2, no accumulation (global batch 4)."""
    out = tmp_path_factory.mktemp("two") / "run"
    proc = run_train(tiny_dataset, out, "train.micro_batch=2", launcher=torchrun(2))
    assert "global batch 4 = micro-batch 2 x accumulation 1 x 2 ranks" in proc.stderr
    return out


def test_run_folder_holds_logs_checkpoints_and_config(one_rank):
    assert (one_rank / "config.yaml").is_file()
    assert [p.name for p in list_checkpoints(one_rank / "checkpoints")] == [
        "step-00000002", "step-00000004", "step-00000006"]
    rows = losses(one_rank)
    assert [s for s, _, _ in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(loss) for _, loss, _ in rows)
    assert all(float(r["grad_norm"]) > 0 for r in read_csv(one_rank / "train.csv"))
    assert [float(r["val_loss"]) > 0 for r in read_csv(one_rank / "val.csv")] == [True, True]
    state = load_state(latest(one_rank / "checkpoints"))
    assert state["step"] == 6 and "loader" not in state  # the loader position follows from the step
    assert all(v.dtype == torch.float32 for v in state["ema"].values() if v.is_floating_point())
    assert state["config"]["train"]["micro_batch"] == 2


def test_the_run_and_its_checkpoints_record_the_software(one_rank):
    recorded = json.loads((one_rank / "provenance.json").read_text())
    here = provenance()
    # the commit is the checkout's when the run started (a commit made while the tests run moves it)
    assert {k: v for k, v in recorded.items() if k != "hpcdiff_commit"} == \
        {k: v for k, v in here.items() if k != "hpcdiff_commit"}
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", recorded["hpcdiff_commit"])
    assert recorded["hpcdiff"] and recorded["torch"] != "absent"
    for path in list_checkpoints(one_rank / "checkpoints"):
        assert load_state(path)["provenance"] == recorded


def test_two_ranks_match_one_rank_with_the_same_global_batch(one_rank, two_ranks):
    a, b = losses(one_rank), losses(two_ranks)
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    np.testing.assert_allclose([x[1] for x in b], [x[1] for x in a], rtol=2e-5)
    np.testing.assert_allclose([x[2] for x in b], [x[2] for x in a], rtol=1e-12)
    wa, wb = final_weights(one_rank), final_weights(two_ranks)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=2e-6, msg=key)


def test_two_ranks_keep_identical_parameters(tiny_dataset, tmp_path):
    """After ZeRO-2 training with clipping, every rank holds bit-identical parameters and EMA."""
    script = Path(__file__).with_name("rank_params.py")
    sets = [f"data.dataset={tiny_dataset}", *TINY, "train.max_steps=3", "train.zero_stage=2",
            "train.val_every=100", "train.ckpt_every=100"]
    cmd = [*torchrun(2), str(script), str(TRAIN_JOB), str(tmp_path), *sets]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"params-{r}.pt", weights_only=True) for r in range(2))
    assert rank0["params"].numel() > 10_000
    assert torch.equal(rank0["params"], rank1["params"])
    for key, value in rank0["ema"].items():
        assert torch.equal(value, rank1["ema"][key]), key
    row = read_csv(tmp_path / "train.csv")[-1]
    assert 0.0 <= float(row["data_wait_share"]) < 1.0 and float(row["step_time_s"]) > 0


def test_bf16_trains(tiny_dataset, tmp_path):
    out = tmp_path / "bf16"
    proc = run_train(tiny_dataset, out, "train.precision=bf16", "train.max_steps=2", "train.val_every=2",
                     "diffusion.prediction=eps", "diffusion.residual=false")  # the poster's parameterization
    assert "precision bf16" in proc.stderr
    rows = losses(out)
    assert len(rows) == 2 and all(np.isfinite(loss) for _, loss, _ in rows)
    weights = final_weights(out)
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.bfloat16}
    state = load_state(latest(out / "checkpoints"))
    assert {v.dtype for v in state["ema"].values() if v.is_floating_point()} == {torch.float32}


def test_resume_after_sigkill_repeats_the_uninterrupted_history(tiny_dataset, one_rank, tmp_path):
    """Kill -9 right after the first checkpoint, resume with --resume auto: identical loss history."""
    out = tmp_path / "killed"
    assert kill_after_first_checkpoint(tiny_dataset, out, "train.micro_batch=2") < 6, \
        "the run finished before it could be killed"
    run_train(tiny_dataset, out, "train.micro_batch=2")
    assert losses(out) == losses(one_rank)  # bit for bit, logged with full precision
    wa, wb = final_weights(one_rank), final_weights(out)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_resume_refuses_another_architecture(tiny_dataset, one_rank, tmp_path, capsys):
    code = main(["train", str(Path(__file__).parents[2] / "jobs" / "demo_train.yaml"), "--out", str(one_rank),
                 "--set", f"data.dataset={tiny_dataset}", "--set", "model.preset=small",
                 "--set", "train.max_steps=8", "--set", "train.global_batch=4", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "the checkpoint's run differs from the job's (preset: 'tiny' vs 'small'; architecture: " in err


@pytest.mark.parametrize(("override", "message"), [
    ("deepspeed={zero_optimisation: {stage: 1}}",
     "unknown DeepSpeed key 'deepspeed.zero_optimisation'; did you mean 'deepspeed.zero_optimization'?"),
    ("train.micro_batch=3", "4 per rank is not a multiple of train.micro_batch 3"),
    ("deepspeed={train_batch_size: 8}", "deepspeed.train_batch_size is derived by hpcdiff"),
])
def test_bad_job_fails_before_any_work(tiny_dataset, tmp_path, capsys, override, message):
    out = tmp_path / "never"
    args = ["train", str(Path(__file__).parents[2] / "jobs" / "demo_train.yaml"), "--out", str(out),
            "--set", f"data.dataset={tiny_dataset}", "--set", "train.global_batch=4", "--set", override]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not torch.distributed.is_initialized()


def test_submit_with_the_local_executor_runs_two_ranks(tiny_dataset, tmp_path):
    out = tmp_path / "submitted"
    sets = [a for o in (f"data.dataset={tiny_dataset}", *TINY, "train.max_steps=2", "train.val_every=2",
                        "slurm.tasks_per_node=2", "slurm.cpus_per_task=1") for a in ("--set", o)]
    cmd = [sys.executable, "-m", "hpcdiff.cli", "submit", "train", str(TRAIN_JOB), "--out", str(out),
           "--executor", "local", "--deadline-min", "4", *sets]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "global batch 4 = micro-batch 2 x accumulation 1 x 2 ranks" in proc.stderr
    assert "'status': 'finished'" in proc.stdout and "'world_size': 2" in proc.stdout
    assert load_state(latest(out / "checkpoints"))["step"] == 2
    assert sorted(p.name for p in (out / "submitit").glob("*_0_result.pkl")) != []


def test_submit_checks_deepspeed_keys_before_queueing(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "never"
    args = ["submit", "train", str(TRAIN_JOB), "--out", str(out), "--executor", "local",
            "--set", f"data.dataset={tiny_dataset}", "--set", "deepspeed={bf17: {enabled: true}}"]
    assert main(args) == 1
    assert "unknown DeepSpeed key 'deepspeed.bf17'; did you mean 'deepspeed.bf16'?" in capsys.readouterr().err
    assert not (out / "submitit").exists()


def test_the_deepspeed_launcher_starts_two_ranks(tiny_dataset, tmp_path):
    out = tmp_path / "ds-launcher"
    launcher = (str(Path(sys.executable).with_name("deepspeed")), "--num_gpus", "2", "--master_port",
                str(free_port()), "--module")
    cmd = train_cmd(tiny_dataset, out, "train.max_steps=2", "train.val_every=2", launcher=launcher)
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "micro-batch 2 x accumulation 1 x 2 ranks" in proc.stdout + proc.stderr
    assert [r["step"] for r in read_csv(out / "train.csv")] == ["1", "2"]


def test_the_jobs_sdf_weights_reach_the_loss(tiny_dataset, tmp_path):
    """Same seeds, same first batch: only the job's coast-distance weights differ, and so does the loss."""
    losses = {}
    for name, override in (("default", "diffusion.sdf_weights.land_weight=1.0"),
                           ("land4", "diffusion.sdf_weights.land_weight=4.0"),
                           ("off", "diffusion.sdf_weights.enabled=false")):
        run_train(tiny_dataset, tmp_path / name, "train.max_steps=1", override)
        losses[name] = float(read_csv(tmp_path / name / "train.csv")[0]["mse"])
    assert len(set(losses.values())) == 3, losses


def test_a_validation_split_smaller_than_a_batch_is_still_validated(tiny_dataset, tmp_path):
    """The tiny world's val split has 6 dates; a micro-batch of 8 validates on all 6 (a short batch)."""
    run_train(tiny_dataset, tmp_path / "run", "train.global_batch=8", "train.max_steps=1")
    rows = read_csv(tmp_path / "run" / "val.csv")
    assert len(rows) == 1 and int(rows[0]["val_samples"]) == 6


def test_resume_refuses_changes_that_the_checkpoint_would_override(tiny_dataset, one_rank, capsys):
    overrides = (f"data.dataset={tiny_dataset}", *TINY, "train.micro_batch=2", "train.max_steps=8",
                 "optim.lr=5e-4")
    code = main(["train", str(TRAIN_JOB), "--out", str(one_rank), "--no-progress",
                 *[a for o in overrides for a in ("--set", o)]])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "the job changes what a resumed run restores from the checkpoint" in err
    assert "(optim.lr: checkpoint 0.001, job 0.0005);" in err, err


def test_a_checkpoint_that_fills_the_disk_is_one_line_and_leaves_no_checkpoint(tiny_dataset, small_disk):
    """The run folder fits, its first checkpoint (weights, EMA, optimizer moments) does not: every rank
    agrees on the failure and exits with one line, and no checkpoint appears under a final name."""
    out = small_disk(600) / "run"
    proc = subprocess.run(train_cmd(tiny_dataset, out, "train.max_steps=2", "train.val_every=100"),
                          env=child_env(), capture_output=True, text=True, timeout=240)
    err = [line for line in proc.stderr.splitlines() if line.startswith("hpcdiff: error:")]
    assert proc.returncode == 1 and len(err) == 1, proc.stderr[-2000:]
    assert "cannot write (no space left on the device)" in err[0], err[0]
    assert list_checkpoints(out / "checkpoints") == [] and latest(out / "checkpoints") is None
