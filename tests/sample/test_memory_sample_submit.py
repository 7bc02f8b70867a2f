"""``hpcdiff submit sample`` says the memory a sampling batch needs and refuses, with the numbers and
before the plan is written, a batch over the GPU memory that ``slurm.gpu_mem_gb`` declares; a batch
that runs out of memory ends ``hpcdiff sample`` with one line naming the batch, the field and the
estimate."""

from __future__ import annotations

import re
import subprocess
import sys

from sample_helpers import REPO, SMALL, quiet_env

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
    line = next(x for x in err.splitlines() if x.startswith("hpcdiff submit: memory per rank (no GPU"))
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
    assert "hpcdiff submit: memory per rank (no GPU asked for): sampling batch 4 x whole field " in err
    assert (out / "plan.json").is_file()


# Samples once (every module loaded, every lazy buffer made), then caps the process's address space a
# little above what it maps and samples a batch whose activations cannot fit: the CPU allocator really
# fails (no mock), as a GPU's would.
OOM_DRIVER = """
import resource, sys
from pathlib import Path
from hpcdiff.cli import main

job, run, out = sys.argv[1:4]
common = ["sample", job, "--run", run, "--no-progress", "--set", "dates.limit=1", "--set", "sample.steps=2"]
warm = ["--set", "sample.members=2", "--set", "sample.batch_size=2"]
assert main([*common, "--out", out + "/warm", *warm]) == 0
status = Path("/proc/self/status").read_text().splitlines()
size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 600 * 2**20, size + 600 * 2**20))
big = ["--set", "sample.members=8192", "--set", "sample.batch_size=8192"]
sys.exit(main([*common, "--out", out + "/big", *big]))
"""


def test_running_out_of_memory_while_sampling_is_one_line_with_batch_field_and_estimate(tiny_run, tmp_path):
    env = {**quiet_env(), "MALLOC_ARENA_MAX": "1"}
    proc = subprocess.run([sys.executable, "-c", OOM_DRIVER, JOB, str(tiny_run.run), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode != 0, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"hpcdiff: error: out of memory in a sampling batch of 8192 "
                        r"\(whole field \d+ x \d+\); the estimate was [0-9.]+ GiB "
                        r"\([0-9.]+ GiB with reserve\); "
                        r"DefaultCPUAllocator: can't allocate memory: .*; use a smaller sample.batch_size",
                        last), last
    assert not list((tmp_path / "big" / "parts").glob("*.h5"))
