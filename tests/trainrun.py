"""Helpers for training tests: the real command line in subprocesses (DeepSpeed initializes
torch.distributed in the process; a subprocess keeps pytest's own clean)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_JOB = REPO / "jobs" / "demo_train.yaml"
AUTOENCODER_JOB = REPO / "jobs" / "autoencoder_train.yaml"
# A few steps of the tiny U-Net; every test overrides what it varies.
TINY = ("model.preset=tiny", "train.global_batch=4", "train.max_steps=6", "train.log_every=1",
        "train.val_every=3", "train.ckpt_every=2", "train.keep_last=5", "train.tensorboard=false",
        "optim.warmup_steps=2", "train.precision=fp32")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_", "MASTER_", "RANK", "LOCAL_RANK",
                                "WORLD_SIZE", "SUBMITIT_"))}
    return {**env, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", **extra}


def train_cmd(dataset: Path, out: Path, *overrides: str, launcher: tuple[str, ...] = (),
              job: Path = TRAIN_JOB) -> list[str]:
    sets = [a for o in (f"data.dataset={dataset}", *TINY, *overrides) for a in ("--set", o)]
    # A launcher ends with what runs the module: `python` for torchrun --no-python, `--module` for deepspeed.
    module = ["hpcdiff.cli"] if launcher and launcher[-1] == "--module" else ["-m", "hpcdiff.cli"]
    return [*launcher, *([] if launcher else [sys.executable]), *module, "train", str(job),
            "--out", str(out), "--no-progress", *sets]


def run_train(dataset: Path, out: Path, *overrides: str, launcher: tuple[str, ...] = (),
              timeout_s: float = 240, job: Path = TRAIN_JOB) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(dataset, out, *overrides, launcher=launcher, job=job), env=child_env(),
                          capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def torchrun(n: int) -> tuple[str, ...]:
    exe = Path(sys.executable).with_name("torchrun")
    return (str(exe), "--nproc_per_node", str(n), "--master_port", str(free_port()), "--no-python",
            sys.executable)


def kill_after_first_checkpoint(dataset: Path, out: Path, *overrides: str, timeout_s: float = 200,
                                job: Path = TRAIN_JOB) -> int:
    """Start a training run, SIGKILL it as soon as its first checkpoint exists, and return the step of
    that checkpoint (the run must not have finished: the caller asserts it)."""
    import signal
    import time

    from hpcdiff.train.checkpoint import latest, load_state

    proc = subprocess.Popen(train_cmd(dataset, out, *overrides, job=job), env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while latest(out / "checkpoints") is None:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, f"no checkpoint within {timeout_s:.0f} s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return int(load_state(latest(out / "checkpoints"))["step"])


def losses(run: Path) -> list[tuple[int, float]]:
    """``(step, loss)`` of every logged step of a run."""
    from hpcdiff.train.metrics_log import read_csv

    return [(int(r["step"]), float(r["loss"])) for r in read_csv(run / "train.csv")]


def final_weights(run: Path) -> dict:
    """The module weights of a run's latest checkpoint."""
    import torch

    from hpcdiff.train.checkpoint import latest

    path = latest(run / "checkpoints") / "engine.pt"
    return torch.load(path, map_location="cpu", weights_only=True)["module"]


def check_two_ranks_match(dataset: Path, one_rank: Path, out: Path, *overrides: str) -> None:
    """Train ``overrides`` on 2 ranks into ``out``: the same loss history and weights as the 1-rank run
    ``one_rank`` with the same global batch (to float rounding)."""
    import numpy as np
    import torch

    run_train(dataset, out, *overrides, launcher=torchrun(2))
    a, b = losses(one_rank), losses(out)
    assert [s for s, _ in a] == [s for s, _ in b]
    np.testing.assert_allclose([x[1] for x in b], [x[1] for x in a], rtol=2e-5)
    wa, wb = final_weights(one_rank), final_weights(out)
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=2e-6, msg=key)


def check_resume_repeats(dataset: Path, uninterrupted: Path, out: Path, *overrides: str) -> None:
    """Kill a run of ``overrides`` after its first checkpoint and resume it: the same loss history and
    bit-identical weights as the uninterrupted run."""
    import torch

    killed_at = kill_after_first_checkpoint(dataset, out, *overrides)
    assert killed_at < 6, "the run finished before it could be killed"
    run_train(dataset, out, *overrides)
    assert losses(out) == losses(uninterrupted)
    wa, wb = final_weights(uninterrupted), final_weights(out)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
