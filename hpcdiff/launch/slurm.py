"""The ``slurm:`` section of a job config: what ``hpcdiff submit`` asks SLURM for.

Every value here ends up in a batch script, either as an ``#SBATCH --key=value`` line (our
``--print-sbatch`` script and the one submitit writes) or, for ``setup:``, as a shell line. Values are
therefore checked when the section is built: anything but ``setup`` must be a single SLURM token, so no
value can start a new script line or end the ``#SBATCH`` block early.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

# One word of printable ASCII: no whitespace or control characters (a newline would start a shell line
# and end the #SBATCH block), no quotes or backslashes (sbatch itself unquotes and unescapes these).
_TOKEN = re.compile(r"[!-~]+")
_UNQUOTED = frozenset("\"'\\`")
_EXTRA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_JOB_NAME_CHARS = re.compile(r"[^A-Za-z0-9._+-]")


def check_token(key: str, value: str) -> None:
    """Raise ``ValueError`` naming ``key`` unless ``value`` is one SLURM token."""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
    if not _TOKEN.fullmatch(value) or _UNQUOTED & set(value):
        raise ValueError(f"{key} must be one word of printable ASCII without quotes or backslashes, "
                         f"got {value!r}")


def check_extra(extra: dict[str, Any]) -> None:
    """``extra:`` keys are sbatch long options (without ``--``); values are tokens, integers or
    ``true`` (a flag without value, e.g. ``exclusive: true``)."""
    for key, value in extra.items():
        if not isinstance(key, str) or not _EXTRA_KEY.fullmatch(key):
            raise ValueError(f"extra key {key!r} must match [A-Za-z][A-Za-z0-9_-]* (an sbatch option name)")
        if value is True or (isinstance(value, int) and not isinstance(value, bool)):
            continue
        if not isinstance(value, str):
            raise ValueError(f"extra.{key} must be a string, an integer or true, got {value!r}")
        check_token(f"extra.{key}", value)


def job_name(prefix: str, label: str) -> str:
    """A SLURM job name ``PREFIX-LABEL`` from a free-form ``label`` (a run folder's name, say): characters
    that are not safe in a batch script become ``_``."""
    return _JOB_NAME_CHARS.sub("_", f"{prefix}-{label}")


@dataclasses.dataclass(frozen=True)
class SlurmSection:
    """Where and how ``hpcdiff submit`` runs the job. One task per GPU.

    ``setup`` lines are shell commands run before the job step (``module load ...``), written into the
    script verbatim; every other value is a single SLURM token. ``extra`` holds further sbatch options,
    e.g. ``{exclusive: user, mail-type: END}``. ``gpu_mem_gb`` is no SLURM request: it is what one GPU of
    the partition holds, which ``hpcdiff submit`` compares with the job's memory estimate."""

    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None
    cpus_per_task: int = 8
    mem_gb: int | None = None
    # Memory of one GPU of the partition (GiB): submit refuses a job whose estimated peak exceeds it.
    gpu_mem_gb: float | None = None
    time_limit_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = dataclasses.field(default_factory=list)
    max_requeues: int = 10
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        minimum = {"nodes": 1, "gpus_per_node": 0, "tasks_per_node": 1, "cpus_per_task": 1, "mem_gb": 1,
                   "time_limit_min": 1, "max_requeues": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        if self.gpu_mem_gb is not None and not (
                isinstance(self.gpu_mem_gb, int | float) and not isinstance(self.gpu_mem_gb, bool)
                and 0 < self.gpu_mem_gb < float("inf")):
            raise ValueError(f"gpu_mem_gb must be a positive number of GiB, got {self.gpu_mem_gb!r}")
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                check_token(name, getattr(self, name))
        check_extra(self.extra)

    @property
    def ntasks_per_node(self) -> int:
        return self.tasks_per_node if self.tasks_per_node is not None else max(self.gpus_per_node, 1)


@dataclasses.dataclass(frozen=True)
class CpuSlurmSection(SlurmSection):
    """A CPU-only job's resources (``hpcdiff submit preprocess``): no GPUs, one task per MPI rank, one
    CPU per task. A separate class rather than a default instance, so that a partial ``slurm:`` section
    in YAML (only ``nodes: 2``, say) keeps these defaults instead of falling back to a GPU job's."""

    gpus_per_node: int = 0
    tasks_per_node: int | None = 4
    cpus_per_task: int = 1
