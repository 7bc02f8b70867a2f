"""Training through submitit's SLURM executor on the real test cluster (slurm/testcluster): ranks that
find each other from SLURM variables across two nodes, and the time-limit signal → checkpoint →
requeue → resume path, which must end exactly where an uninterrupted run ends."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch
from trainrun import TINY, TRAIN_JOB, run_train, torchrun

from hpcdiff.config import load_config
from hpcdiff.launch.submit import submit_train, wait
from hpcdiff.train.checkpoint import latest, load_state
from hpcdiff.train.job import TrainJob
from hpcdiff.train.metrics_log import read_csv

pytestmark = [pytest.mark.slurm, pytest.mark.distributed, pytest.mark.timeout(420)]


def slurm_job(dataset: Path, *overrides: str) -> TrainJob:
    sets = [f"data.dataset={dataset}", *TINY, "slurm.partition=debug", "slurm.gpus_per_node=0",
            "slurm.cpus_per_task=1", "slurm.time_limit_min=5", *overrides]
    return load_config(TrainJob, TRAIN_JOB, overrides=sets)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # sbatch exports the submitting environment
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")


def history(run: Path) -> list[tuple[str, str]]:
    return [(r["step"], r["loss"]) for r in read_csv(run / "train.csv")]


def test_two_nodes_train_from_slurm_variables(tiny_dataset, tmp_path):
    job = slurm_job(tiny_dataset, "train.max_steps=3", "slurm.nodes=2", "slurm.tasks_per_node=1")
    submitted = submit_train(job, tmp_path / "run", executor="slurm", master_addr="127.0.0.1")
    results = sorted(wait(submitted, deadline_s=300), key=lambda r: r["rank"])
    assert [(r["rank"], r["world_size"], r["status"], r["step"]) for r in results] == [
        (0, 2, "finished", 3), (1, 2, "finished", 3)]
    assert [s for s, _ in history(tmp_path / "run")] == ["1", "2", "3"]
    out = "".join(p.read_text() for p in (tmp_path / "run" / "submitit").glob("*_0_log.out"))
    assert "micro-batch 2 x accumulation 1 x 2 ranks" in "".join(
        p.read_text() for p in (tmp_path / "run" / "submitit").glob("*_0_log.err")) + out


def test_time_limit_signal_checkpoints_requeues_and_matches(tiny_dataset, tmp_path):
    steps = "train.max_steps=40"
    reference = tmp_path / "reference"
    run_train(tiny_dataset, reference, steps, "train.ckpt_every=100", "train.val_every=100",
              launcher=torchrun(2))
    job = slurm_job(tiny_dataset, steps, "train.ckpt_every=100", "train.val_every=100", "slurm.nodes=1",
                    "slurm.tasks_per_node=2")
    run = tmp_path / "run"
    submitted = submit_train(job, run, executor="slurm", master_addr="127.0.0.1")
    deadline = time.monotonic() + 180
    while not (run / "train.csv").is_file() or len(read_csv(run / "train.csv")) < 3:
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    # What SLURM sends ahead of the time limit (--signal=USR2@90), to every task of the job.
    subprocess.run(["scancel", "--signal=USR2", submitted.job_id], check=True, timeout=30)
    results = wait(submitted, deadline_s=300)
    assert {(r["status"], r["step"]) for r in results} == {("finished", 40)}
    stopped_at = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    assert stopped_at[0] < 40 and stopped_at[-1] == 40, stopped_at  # a signal checkpoint, then the end
    logs = "".join(p.read_text() for p in (run / "submitit").glob("*_log.err"))
    assert "this job is preempted" in logs or "timed-out" in logs
    assert f"resuming from {run / 'checkpoints' / f'step-{stopped_at[0]:08d}'}" in logs
    assert history(run) == history(reference)
    wa = torch.load(latest(reference / "checkpoints") / "state.pt", weights_only=True)["ema"]
    wb = load_state(latest(run / "checkpoints"))["ema"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
