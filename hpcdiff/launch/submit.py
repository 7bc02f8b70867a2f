"""Submission through submitit: SLURM, local processes, or in-process (debug).

The submitted callable is :class:`TrainTask`, a submitit ``Checkpointable``: on the time-limit or
preemption signal the training loop finishes its step, all ranks write a checkpoint together, and only
then is submitit's own handler run, which requeues the job; the requeued job resumes from the latest
checkpoint (``resume="auto"``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from hpcdiff import dist
from hpcdiff.config import dump_config, from_dict, to_dict
from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.sbatch import submitit_parameters
from hpcdiff.launch.signals import StopFlag
from hpcdiff.launch.slurm import SlurmSection, job_name
from hpcdiff.train.dsconfig import deepspeed_config
from hpcdiff.train.job import TrainJob, batch_arithmetic

EXECUTORS = ("slurm", "local", "debug")


class TrainTask(submitit.helpers.Checkpointable):
    """One rank of a training job. Picklable: carries the resolved job as a plain dict."""

    def __init__(self, job: dict[str, Any], run_dir: str, *, master_addr: str | None = None,
                 profile: dict[str, Any] | None = None) -> None:
        self.job, self.run_dir, self.master_addr, self.profile = job, run_dir, master_addr, profile

    def __call__(self) -> dict[str, Any]:
        dist.set_up_task()  # first: it sets OMP_NUM_THREADS before the loop's import starts torch
        from hpcdiff.train.loop import train

        stop = StopFlag()
        if self.master_addr:
            os.environ["MASTER_ADDR"] = self.master_addr
        env = dist.detect()
        job = from_dict(TrainJob, self.job, where=f"{self.run_dir}/config.yaml")
        if self.profile is not None:  # a point of `hpcdiff profile train`: the same run, instrumented
            from hpcdiff.profile.instrument import profiled_train

            return profiled_train(job, Path(self.run_dir), env=env, options=self.profile)
        result = train(job, Path(self.run_dir), env=env, resume="auto", progress=False, should_stop=stop)
        if result.status == "stopped":
            stop.forward()  # rank 0: submitit checkpoints this task and requeues the job
        return {"rank": env.rank, "world_size": env.world_size, "step": result.step,
                "status": result.status, "checkpoint": str(result.checkpoint)}


def world_size_of(slurm: SlurmSection, executor: str) -> int:
    if executor == "debug":
        return 1
    if executor == "local":
        return slurm.ntasks_per_node
    return slurm.nodes * slurm.ntasks_per_node


def make_executor(kind: str, folder: Path, slurm: SlurmSection, *, name: str) -> submitit.Executor:
    """A submitit executor for ``kind`` in ``folder`` with the resources of ``slurm``."""
    if kind not in EXECUTORS:
        raise HpcdiffError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    if kind == "debug":
        return submitit.AutoExecutor(folder=folder, cluster="debug")
    params = submitit_parameters(slurm, name=name)
    if kind == "local":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        params.update(nodes=1, gpus_per_node=0 if not _has_gpus() else params.get("gpus_per_node", 0))
    executor = submitit.AutoExecutor(folder=folder, cluster=kind)
    executor.update_parameters(**params)
    return executor


def _has_gpus() -> bool:
    import torch

    return torch.cuda.is_available()


def submit_train(job: TrainJob, run_dir: Path, *, executor: str, master_addr: str | None = None,
                 profile: dict[str, Any] | None = None) -> Any:
    """Check the job, write the resolved config into ``run_dir`` and submit it; returns the submitit job.
    ``profile`` (options of :func:`hpcdiff.profile.instrument.profiled_train`) makes it a profiling
    point: the same executor, batch script and launcher, each rank returning its step breakdown."""
    world = world_size_of(job.slurm, executor)
    plan = batch_arithmetic(job.train, world)  # fail here, before anything is queued
    deepspeed_config(job, plan, on_gpu=executor == "slurm")
    from hpcdiff.launch.preflight import preflight_train  # imports torch: the estimate runs the network

    preflight_train(job, world_size=world)  # says the memory estimate; refuses one over slurm.gpu_mem_gb
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(job, run_dir / "config.yaml")
    name = job_name("hpcdiff-train", run_dir.name)
    ex = make_executor(executor, run_dir / "submitit", job.slurm, name=name)
    task = TrainTask(to_dict(job), str(run_dir), master_addr=master_addr, profile=profile)
    submitted = ex.submit(task)
    print(f"submitted training job {submitted.job_id} ({executor}, {plan.describe()}); logs in "
          f"{run_dir / 'submitit'}", file=sys.stderr)
    return submitted


def wait(job: Any, *, deadline_s: float, poll_s: float = 2.0,
         on_poll: Callable[[], None] | None = None) -> Any:
    """Wait for a submitit job, never forever: raise :class:`HpcdiffError` past ``deadline_s``.
    ``on_poll`` is called at every poll (e.g. to show progress)."""
    end = time.monotonic() + deadline_s
    while not job.done():
        if time.monotonic() > end:
            raise HpcdiffError(f"job {job.job_id} did not finish within {deadline_s:.0f} s "
                               f"(state {job.state})")
        if on_poll is not None:
            on_poll()
        time.sleep(poll_s)
    if on_poll is not None:
        on_poll()
    try:
        return job.results()
    except submitit.core.utils.UncompletedJobError as err:
        raise HpcdiffError(f"job {job.job_id} failed: {str(err).splitlines()[0]}") from None
    except submitit.core.utils.FailedJobError as err:
        last = [line for line in str(err).splitlines() if line.strip()][-1:]
        raise HpcdiffError(f"job {job.job_id} failed: {' '.join(last)} (logs: {job.paths.folder})") from None


class TrainProgress:
    """A progress bar over the optimizer steps of a submitted run, read from its ``train.csv`` (rank 0
    appends a row every ``train.log_every`` steps): the submitting process sees how far the job is."""

    def __init__(self, run_dir: Path, *, total: int, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.path = Path(run_dir) / "train.csv"
        self.bar = tqdm(total=total, desc="train", unit="step", dynamic_ncols=True, disable=not enabled,
                        file=sys.stderr)

    def __call__(self) -> None:
        from hpcdiff.train.metrics_log import read_csv

        try:
            rows = read_csv(self.path)
            row = rows[-1]
            step = int(row["step"])
        except (OSError, IndexError, KeyError, TypeError, ValueError):
            return  # not written yet, or a row being written
        self.bar.update(step - self.bar.n)
        if row.get("loss"):
            self.bar.set_postfix(loss=f"{float(row['loss']):.4f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
