"""The pre-flight of ``hpcdiff submit train``: one line with the estimate; a job over the GPU memory
that ``slurm.gpu_mem_gb`` declares is refused with the numbers before anything is written or queued;
``gpu_mem_gb`` is validated and is no sbatch option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hpcdiff.cli import main
from hpcdiff.config import load_config
from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.sbatch import sbatch_directives
from hpcdiff.train.job import TrainJob

REPO = Path(__file__).resolve().parents[2]
JOB = str(REPO / "jobs" / "demo_train.yaml")


def args(dataset: Path, out: Path, *sets: str) -> list[str]:
    return ["submit", "train", JOB, "--out", str(out), "--executor", "debug",
            "--set", f"data.dataset={dataset}", *[a for s in sets for a in ("--set", s)]]


def test_a_job_over_the_declared_gpu_memory_is_refused_before_anything_is_written(tiny_dataset, tmp_path,
                                                                                    capsys):
    out = tmp_path / "run"
    assert main(args(tiny_dataset, out, "slurm.gpu_mem_gb=1", "train.global_batch=8")) != 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("hpcdiff submit: memory per rank (no GPU"))
    # the debug executor is one rank: the whole global batch is one micro-batch
    assert "training micro-batch 8 x whole field" in line and "in fp32" in line and "1 rank)" in line
    needed = float(re.search(r"with reserve ([0-9.]+) GiB", line).group(1))
    assert needed > 1.0
    refusal = err.strip().splitlines()[-1]
    assert refusal.startswith("hpcdiff: error: training micro-batch 8 x whole field ")
    assert f"needs about {needed:.2f} GiB per GPU" in refusal
    assert "more than the 1 GiB that slurm.gpu_mem_gb declares" in refusal
    assert "train.micro_batch" in refusal and "bf16" in refusal and "zero_stage" in refusal
    assert not out.exists()  # nothing written, nothing queued


def test_the_estimate_follows_the_micro_batch_and_a_fitting_job_is_only_described(tiny_dataset, tmp_path,
                                                                                    capsys):
    def needed(*sets: str) -> float:
        assert main(["submit", "train", JOB, "--print-sbatch", "--set", f"data.dataset={tiny_dataset}",
                     *[a for s in sets for a in ("--set", s)]]) == 0
        captured = capsys.readouterr()
        assert captured.out.startswith("#!/bin/bash")
        line = next(x for x in captured.err.splitlines() if "memory per rank" in x)
        return float(re.search(r": ([0-9.]+) GiB = ", line).group(1))

    # the demo job's slurm section has 2 ranks: micro-batch 64 / 2 = 32, or 1 with accumulation
    big = needed("train.global_batch=64", "slurm.gpu_mem_gb=80")
    small = needed("train.global_batch=64", "train.micro_batch=1")
    assert big > 2 * small > 0


def test_a_missing_dataset_skips_the_estimate_with_a_note(tmp_path, capsys):
    assert main(["submit", "train", JOB, "--print-sbatch", "--set", f"data.dataset={tmp_path / 'none'}",
                 "--set", "slurm.gpu_mem_gb=0.001"]) == 0
    captured = capsys.readouterr()
    assert "hpcdiff submit: no memory estimate: " in captured.err and "no manifest.json" in captured.err
    assert captured.out.startswith("#!/bin/bash")


@pytest.mark.parametrize("value", [0, -4, ".nan", ".inf", True, "80GB"])
def test_gpu_mem_gb_must_be_a_positive_number(tmp_path, value):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "ds"}, "slurm": {}}).replace(
        "slurm: {}", f"slurm: {{gpu_mem_gb: {value}}}"))
    with pytest.raises(HpcdiffError) as err:
        load_config(TrainJob, path)
    assert "gpu_mem_gb" in str(err.value) and "\n" not in str(err.value)


def test_gpu_mem_gb_is_not_an_sbatch_option(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "ds"}, "slurm": {"gpu_mem_gb": 141}}))
    job = load_config(TrainJob, path)
    assert job.slurm.gpu_mem_gb == 141
    flags = sbatch_directives(job.slurm, name="x")
    assert not any("141" in str(value) or "gpu-mem" in key for key, value in flags.items())
