"""Plain sbatch scripts equivalent to what ``hpcdiff submit`` generates through submitit.

The resource directives come from the same :class:`~hpcdiff.launch.slurm.SlurmSection` mapping as the
submitit parameters (:func:`submitit_parameters`), so the two paths ask SLURM for the same thing; a
golden-file test keeps ``slurm/train.sbatch`` in step with :func:`render_train_sbatch`.

Values reach the script as ``#SBATCH`` lines only, validated as single tokens by
:class:`~hpcdiff.launch.slurm.SlurmSection` and quoted the way submitit quotes them; the ``setup`` lines
are the one place where the user writes shell.
"""

from __future__ import annotations

import shlex
from typing import Any

from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.slurm import SlurmSection, check_token

SIGNAL_DELAY_S = 90
REQUEUE_EXIT_CODE = 3  # ``hpcdiff train`` exits with this after a stop signal and a checkpoint


def submitit_parameters(slurm: SlurmSection, *, name: str) -> dict[str, Any]:
    """Parameters for ``submitit.AutoExecutor.update_parameters`` (slurm_* ones are SLURM-only)."""
    _check_name(name)
    params: dict[str, Any] = {
        "name": name, "nodes": slurm.nodes, "tasks_per_node": slurm.ntasks_per_node,
        "cpus_per_task": slurm.cpus_per_task, "timeout_min": slurm.time_limit_min,
        "slurm_signal_delay_s": SIGNAL_DELAY_S, "slurm_setup": list(slurm.setup),
    }
    if slurm.gpus_per_node:
        params["gpus_per_node"] = slurm.gpus_per_node
    if slurm.mem_gb is not None:
        params["mem_gb"] = slurm.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, key) is not None:
            params[f"slurm_{key}"] = getattr(slurm, key)
    if slurm.extra:
        params["slurm_additional_parameters"] = dict(slurm.extra)
    return params


def _check_name(name: str) -> None:
    try:
        check_token("the job name", name)
    except ValueError as err:
        raise HpcdiffError(str(err)) from None


def sbatch_directives(slurm: SlurmSection, *, name: str) -> dict[str, str | bool]:
    """``#SBATCH`` flags (without dashes) for the resources of ``slurm``; ``True``: a flag without value."""
    _check_name(name)
    flags: dict[str, str | bool] = {
        "job-name": name, "nodes": str(slurm.nodes), "ntasks-per-node": str(slurm.ntasks_per_node),
        "cpus-per-task": str(slurm.cpus_per_task), "time": str(slurm.time_limit_min),
        "signal": f"USR2@{SIGNAL_DELAY_S}"}
    if slurm.gpus_per_node:
        flags["gpus-per-node"] = str(slurm.gpus_per_node)
    if slurm.mem_gb is not None:
        flags["mem"] = f"{slurm.mem_gb}GB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(slurm, key) is not None:
            flags[key] = str(getattr(slurm, key))
    flags.update({k.replace("_", "-"): v if v is True else str(v) for k, v in slurm.extra.items()})
    return flags


def sbatch_line(flag: str, value: str | bool) -> str:
    """One ``#SBATCH`` line, quoted as submitit quotes it (sbatch reads shell-style quotes)."""
    return f"#SBATCH --{flag}" if value is True else f"#SBATCH --{flag}={shlex.quote(value)}"


def render_train_sbatch(slurm: SlurmSection, *, name: str = "hpcdiff-train") -> str:
    """A self-contained sbatch script: ``JOB`` and ``RUN`` come from the environment
    (``sbatch --export=ALL,JOB=jobs/x.yaml,RUN=runs/x slurm/train.sbatch``)."""
    lines = ["#!/bin/bash", "# hpcdiff training: one task per GPU, requeued on the time-limit signal.",
             "# Usage: sbatch --export=ALL,JOB=jobs/my_train.yaml,RUN=runs/my_run slurm/train.sbatch"]
    lines += [sbatch_line(k, v) for k, v in sorted(sbatch_directives(slurm, name=name).items())]
    lines += ["#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --output=slurm-%x-%j.out", "",
              "set -uo pipefail", ': "${JOB:?set JOB to a training job YAML}"',
              ': "${RUN:?set RUN to a run folder}"']
    if slurm.setup:
        lines += ["", "# setup"] + list(slurm.setup)
    lines += ["", 'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
              "# hpcdiff reads its rank from SLURM_PROCID / SLURM_NTASKS and the master address from the",
              "# first host of SLURM_JOB_NODELIST (hpcdiff/dist.py).",
              'srun --unbuffered hpcdiff train "$JOB" --out "$RUN" --resume auto --no-progress',
              "rc=$?",
              f"if [ \"$rc\" -eq {REQUEUE_EXIT_CODE} ]; then  # stopped by the signal, checkpoint written",
              '    scontrol requeue "$SLURM_JOB_ID"', "    exit 0", "fi", 'exit "$rc"', ""]
    return "\n".join(lines)
