"""A real tiny run for the sampling tests: the `tiny` synthetic world, preprocessed, and a 2-step
training of the `tiny` U-Net, made once per session (training runs in a subprocess: DeepSpeed
initializes torch.distributed in the process that trains)."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sample_helpers import REPO, SMALL, free_port, hpcdiff_cmd, quiet_env

from hpcdiff.cli import main
from hpcdiff.config import load_config
from hpcdiff.sample.job import SampleJob


@dataclasses.dataclass(frozen=True)
class TinyRun:
    world: Path
    dataset: Path
    run: Path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    base = tmp_path_factory.mktemp("tiny_run")
    world, dataset, run = base / "world", base / "dataset", base / "run"
    assert main(["synth", str(world), "--preset", "tiny", "--no-progress"]) == 0
    assert main(["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(dataset),
                 "--set", f"root={world}", "--no-progress"]) == 0
    sets = [f"data.dataset={dataset}", "model.preset=tiny", "train.max_steps=2", "train.global_batch=4",
            "train.tensorboard=false", "train.val_every=2", "train.ckpt_every=2"]
    cmd = hpcdiff_cmd("train", REPO / "jobs" / "demo_train.yaml", "--out", run, "--resume", "never",
                      "--no-progress", *[a for s in sets for a in ("--set", s)])
    env = {**quiet_env(), "MASTER_PORT": str(free_port())}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return TinyRun(world=world, dataset=dataset, run=run)


@pytest.fixture(scope="session")
def make_job() -> Callable[..., SampleJob]:
    """``make_job("sample.batch_size=8", ...)``: the demo sampling job, made small, plus overrides."""

    def make(*overrides: str) -> SampleJob:
        return load_config(SampleJob, REPO / "jobs" / "demo_sample.yaml", overrides=[*SMALL, *overrides])

    return make
