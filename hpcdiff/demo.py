"""``hpcdiff demo``: the whole chain on the embedded synthetic world, as a user would run it.

Each stage is the real command line in a subprocess: synth, preprocessing under ``mpiexec -n 2`` when
MPI is there, training as 2 local ranks through submitit's local executor (DeepSpeed, gloo), sampling
through the job-array path (local executor), merge and evaluate. A rerun continues: the world and the
dataset are kept once complete, training resumes from its latest checkpoint, sampling fills only
missing parts, merge and evaluate are redone (seconds).

The demo then checks the skill the model must show on the test dates (:func:`skill_checks`) and
prints the headline numbers. ``quick`` shrinks everything (the tiny world, a few steps) to prove the
chain in CI; its model is not expected to have skill, so the checks are reported, not enforced.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcdiff.errors import HpcdiffError

DEFAULTS = Path(__file__).resolve().parent / "defaults"  # package data: the demo runs from an install
QUICK_TRAIN = ("model.preset=tiny", "train.max_steps=4", "train.global_batch=4", "train.val_every=4",
               "train.ckpt_every=4", "train.log_every=1")
QUICK_SAMPLE = ("dates.limit=4", "sample.members=2", "sample.steps=4", "sample.batch_size=4")


@dataclasses.dataclass(frozen=True)
class DemoPlan:
    out: Path
    preset: str = "demo"
    seed: int = 0
    ranks: int = 2
    quick: bool = False
    train_job: Path = DEFAULTS / "demo_train.yaml"
    sample_job: Path = DEFAULTS / "demo_sample.yaml"
    train_overrides: tuple[str, ...] = ()
    sample_overrides: tuple[str, ...] = ()

    @property
    def world(self) -> Path:
        return self.out / "world"

    @property
    def dataset(self) -> Path:
        return self.out / "dataset"

    @property
    def run(self) -> Path:
        return self.out / "run"

    @property
    def samples(self) -> Path:
        return self.out / "samples"

    @property
    def merged(self) -> Path:
        return self.out / "samples.nc"

    @property
    def report(self) -> Path:
        return self.out / "report"


def quick_plan(out: Path, **kwargs: Any) -> DemoPlan:
    """The CI-sized demo: the tiny world, the tiny U-Net, a few steps, a few dates and members."""
    return DemoPlan(out=out, preset="tiny", quick=True, train_overrides=QUICK_TRAIN,
                    sample_overrides=QUICK_SAMPLE, **kwargs)


@dataclasses.dataclass(frozen=True)
class Stage:
    title: str
    cmd: list[str]
    done: Path | None = None  # skip the stage when this exists (None: always run; it resumes itself)
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def _hpcdiff(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "hpcdiff.cli", *map(str, args)]


def _sets(overrides: Sequence[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def mpi_prefix(ranks: int) -> list[str]:
    """``mpiexec -n ranks`` when mpi4py and an ``mpiexec`` (the venv's first) are there, else nothing."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return []
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return [mpiexec, "-n", str(ranks)] if mpiexec and ranks > 1 else []


def stages(plan: DemoPlan) -> list[Stage]:
    """The demo's stages, in order."""
    threads = {"OMP_NUM_THREADS": "1"}  # one thread per rank on a 2-core machine
    return [
        Stage("synthesize the world", _hpcdiff("synth", plan.world, "--preset", plan.preset, "--seed",
                                               str(plan.seed)), done=plan.world / "world.json"),
        Stage("preprocess", mpi_prefix(plan.ranks) + _hpcdiff(
            "preprocess", DEFAULTS / "synthetic.yaml", "--out", plan.dataset,
            "--set", f"root={plan.world.resolve()}"), done=plan.dataset / "manifest.json", env=threads),
        Stage("check the dataset", _hpcdiff("check", plan.dataset)),
        Stage("train", _hpcdiff("submit", "train", plan.train_job, "--out", plan.run, "--executor", "local",
                                "--set", f"data.dataset={plan.dataset.resolve()}",
                                "--set", f"slurm.tasks_per_node={plan.ranks}", *_sets(plan.train_overrides)),
              env=threads),
        Stage("sample", _hpcdiff("submit", "sample", plan.sample_job, "--run", plan.run, "--out",
                                 plan.samples, "--executor", "local", *_sets(plan.sample_overrides)),
              env=threads),
        Stage("merge", _hpcdiff("merge", plan.samples, "--out", plan.merged)),
        Stage("evaluate", _hpcdiff("evaluate", plan.merged, "--dataset", plan.dataset, "--out", plan.report)),
    ]


def run_stage(stage: Stage) -> float:
    """Run one stage in a subprocess (its progress bars go to this terminal); its wall time in s."""
    if stage.done is not None and stage.done.exists():
        print(f"== {stage.title}: done already ({stage.done})", flush=True)
        return 0.0
    print(f"\n== {stage.title}\n$ {' '.join(map(str, stage.cmd))}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(stage.cmd, env={**os.environ, **stage.env}, check=False)
    if proc.returncode != 0:
        raise HpcdiffError(f"demo stage '{stage.title}' failed with exit status {proc.returncode}")
    seconds = time.perf_counter() - start
    print(f"-- {stage.title}: {seconds:.0f} s", flush=True)
    return seconds


def skill_checks(metrics: dict[str, Any]) -> list[tuple[str, bool, bool]]:
    """What the demo's model must show on the test dates (land): ``(description, passed, required)``.
    Required are the temperature checks; the same bias and spectrum checks for the other variables are
    reported alongside the oracle's bias (on a few dozen dates, sampling noise alone can exceed 10 % of
    the spatial standard deviation for a smooth field such as evaporation)."""
    checks = []
    for name, v in metrics.items():
        model, bilinear, required = v["model"], v["bilinear"], name == "t2m"
        if required:
            checks.append((f"{name} CRPS of the model {model['crps']:.3f} < bilinear {bilinear['crps']:.3f}",
                           model["crps"] < bilinear["crps"], True))
        oracle_bias = v.get("oracle", {}).get("bias", float("nan"))
        checks.append((f"{name} |bias| {abs(model['bias']):.3g} < 10% of the truth's spatial std "
                       f"{model['truth_spatial_std']:.3g} (oracle's |bias| {abs(oracle_bias):.3g})",
                       abs(model["bias"]) < 0.1 * model["truth_spatial_std"], required))
        checks.append((f"{name} high-wavenumber power ratio: model {model['psd_high_ratio']:.2f} within "
                       f"[0.5, 2], bilinear {bilinear['psd_high_ratio']:.2f} below 0.5",
                       0.5 <= model["psd_high_ratio"] <= 2.0 and bilinear["psd_high_ratio"] < 0.5, required))
    return checks


def headline(metrics: dict[str, Any]) -> str:
    """A table of the headline numbers: CRPS per method, the model's ratio to the oracle, bias, spectra."""
    nan = float("nan")
    table = ["variable  CRPS model  bilinear  oracle  model/oracle  bias model  psd-high model  bilinear"]
    for name, v in metrics.items():
        oracle, ratio = v.get("oracle", {}).get("crps", nan), v["model"].get("crps_ratio_to_oracle", nan)
        table.append(f"{name:8s}  {v['model']['crps']:10.4f}  {v['bilinear']['crps']:8.4f}  "
                    f"{oracle:6.4f}  {ratio:12.2f}"
                    f"  {v['model']['bias']:10.4f}  {v['model']['psd_high_ratio']:14.2f}  "
                    f"{v['bilinear']['psd_high_ratio']:8.2f}")
    return "\n".join(table)


def run_demo(plan: DemoPlan) -> tuple[dict[str, Any], list[tuple[str, bool, bool]]]:
    """Run every stage; return the headline metrics and the skill checks (written to
    ``report/skill.json``)."""
    start = time.perf_counter()
    plan.out.mkdir(parents=True, exist_ok=True)
    times = {stage.title: run_stage(stage) for stage in stages(plan)}
    metrics = json.loads((plan.report / "metrics.json").read_text())
    checks = skill_checks(metrics)
    rows = [{"check": c, "passed": ok, "required": req} for c, ok, req in checks]
    (plan.report / "skill.json").write_text(json.dumps({"quick": plan.quick, "checks": rows,
                                                         "stage_seconds": times}, indent=1))
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; report: {plan.report / 'report.html'}")
    print(headline(metrics))
    for text, ok, required in checks:
        verdict = "ok" if ok else "n/a" if plan.quick else "FAIL" if required else "miss (not required)"
        print(f"  [{verdict}] {text}")
    return metrics, checks
