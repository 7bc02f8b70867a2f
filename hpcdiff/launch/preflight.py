"""The memory pre-flight of ``hpcdiff submit train`` / ``submit sample``: before anything is written or
queued, one line on stderr says what a rank will need (:mod:`hpcdiff.memory`), and a job that cannot
fit the GPU memory its ``slurm.gpu_mem_gb`` declares is refused with the numbers and what to change."""

from __future__ import annotations

import sys
from typing import Any

from hpcdiff import memory
from hpcdiff.data.manifest import read_manifest
from hpcdiff.errors import HpcdiffError

TRAIN_ADVICE = ("use a smaller train.micro_batch (more accumulation steps), a smaller data.patch_size, "
                "train.precision bf16, or train.zero_stage 1 or 2 with more ranks")
SAMPLE_ADVICE = "use a smaller sample.batch_size or sample.precision bf16"


def _say(line: str) -> None:
    print(f"hpcdiff submit: {line}", file=sys.stderr, flush=True)


def _device(job: Any) -> str:
    return "GPU" if job.slurm.gpus_per_node > 0 else "rank (no GPU asked for)"


def preflight_train(job: Any, *, world_size: int) -> memory.MemoryEstimate | None:
    """Estimate a training job's peak memory per rank, say it, and refuse it when it does not fit
    ``job.slurm.gpu_mem_gb``. Without a readable dataset manifest there is no grid: it says so and
    returns ``None``."""
    try:
        manifest = read_manifest(job.data.dataset)
    except HpcdiffError as err:
        _say(f"no memory estimate: {err}")
        return None
    estimate = memory.training_job_estimate(job, manifest, world_size=world_size)
    _say(f"memory per {_device(job)}: {estimate.describe()}")
    memory.check_fits(estimate, gpu_mem_gb=job.slurm.gpu_mem_gb, advice=TRAIN_ADVICE)
    return estimate


def preflight_sample(job: Any, spec: Any) -> memory.MemoryEstimate:
    """The same for a sampling job of the run whose spec is ``spec`` (``auto`` precision: bf16 where
    the ``slurm:`` section asks for GPUs, else fp32)."""
    s = job.sample
    precision = memory.sampling_precision(s.precision, on_gpu=job.slurm.gpus_per_node > 0)
    estimate = memory.estimate_sampling(spec, batch=s.batch_size, sampler=s.sampler, precision=precision,
                                        tile=s.tiles)
    _say(f"memory per {_device(job)}: {estimate.describe()}")
    memory.check_fits(estimate, gpu_mem_gb=job.slurm.gpu_mem_gb, advice=SAMPLE_ADVICE)
    return estimate
