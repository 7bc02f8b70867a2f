"""A tiny model learns: the `tiny` U-Net, trained a few hundred steps on the tiny world with the demo's
parameterization, samples test-date ensembles whose land CRPS for temperature beats bilinear
interpolation and beats the same network after a single step. The whole chain runs as users run it:
train, sample, merge, evaluate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from trainrun import TRAIN_JOB, child_env, train_cmd

from hpcdiff.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.distributed, pytest.mark.timeout(900)]
SAMPLE_JOB = TRAIN_JOB.with_name("demo_sample.yaml")


def t2m_crps(dataset: Path, run: Path, out: Path) -> dict[str, float]:
    """Land CRPS of t2m for the model and bilinear on 12 test dates x 6 members."""
    sets = ["dates.limit=12", "sample.members=6", "sample.steps=20", "sample.batch_size=12"]
    assert main(["sample", str(SAMPLE_JOB), "--run", str(run), "--out", str(out / "samples"), "--no-progress",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    assert main(["merge", str(out / "samples"), "--no-progress"]) == 0
    assert main(["evaluate", str(out / "samples.nc"), "--dataset", str(dataset), "--out", str(out / "report"),
                 "--no-progress", "--set", "map_dates=1"]) == 0
    metrics = json.loads((out / "report" / "metrics.json").read_text())["t2m"]
    return {method: metrics[method]["crps"] for method in ("model", "bilinear")}


def trained(dataset: Path, out: Path, steps: int) -> Path:
    sets = (f"train.max_steps={steps}", f"train.ckpt_every={steps}", f"train.val_every={steps}",
            "train.log_every=50", "optim.warmup_steps=20", "optim.lr=2e-3", "diffusion.residual=true",
            "diffusion.prediction=v")
    proc = subprocess.run(train_cmd(dataset, out, *sets), env=child_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_a_tiny_model_learns_on_the_tiny_world(tiny_dataset, tmp_path):
    learned = t2m_crps(tiny_dataset, trained(tiny_dataset, tmp_path / "run", 300), tmp_path / "learned")
    untrained = t2m_crps(tiny_dataset, trained(tiny_dataset, tmp_path / "run1", 1), tmp_path / "untrained")
    assert learned["model"] < learned["bilinear"], learned
    assert learned["model"] < 0.9 * untrained["model"], (learned, untrained)
