"""``hpcdiff submit sample`` says the memory a sampling batch needs and refuses, with the numbers and
before the plan is written, a batch over the GPU memory that ``slurm.gpu_mem_gb`` declares."""

from __future__ import annotations

import re

from sample_helpers import REPO, SMALL

from hpcdiff.cli import main

JOB = str(REPO / "jobs" / "demo_sample.yaml")


def submit(tiny_run, out, *sets: str) -> int:
    return main(["submit", "sample", JOB, "--run", str(tiny_run.run), "--out", str(out),
                 "--executor", "debug", *[a for s in [*SMALL, *sets] for a in ("--set", s)]])


def test_a_sampling_batch_over_the_declared_memory_is_refused_before_the_plan(tiny_run, tmp_path, capsys):
    out = tmp_path / "samples"
    # the demo job samples with dpmpp_3m
    assert submit(tiny_run, out, "sample.batch_size=64", "sample.precision=fp32", "slurm.gpu_mem_gb=1") != 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("hpcdiff submit: memory per GPU: "))
    assert re.search(r"sampling batch 64 x whole field \d+ x \d+ in fp32 \(tiny, .*, dpmpp_3m\)", line)
    refusal = err.strip().splitlines()[-1]
    assert refusal.startswith("hpcdiff: error: sampling batch 64 x whole field ")
    assert "more than the 1 GiB that slurm.gpu_mem_gb declares" in refusal
    assert "sample.batch_size" in refusal
    assert not (out / "plan.json").exists()  # a rerun may change the precision: no plan fixes it yet


def test_a_sampling_batch_that_fits_is_described_and_sampled(tiny_run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert submit(tiny_run, out, "slurm.gpu_mem_gb=80") == 0
    err = capsys.readouterr().err
    assert "hpcdiff submit: memory per GPU: sampling batch 4 x whole field " in err
    assert (out / "plan.json").is_file()
