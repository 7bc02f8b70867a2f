"""Rank discovery: the one place that reads launcher environment variables.

One table (:data:`LAUNCHERS`) maps what torchrun / the deepspeed launcher, SLURM's ``srun`` and MPI
(MPICH hydra, Open MPI, PMIx) put in the environment onto a frozen :class:`DistEnv`. Everything else
in hpcdiff takes ``rank`` and ``world_size`` as arguments. A process with none of these variables is
world size 1.

Order matters: torchrun variables win (they are explicit, and ``submitit``'s
``TorchDistributedEnvironment().export()`` sets them inside SLURM steps too); then a SLURM *step*
(``srun``; the batch script itself also carries ``SLURM_NTASKS`` but is a single process, so a step id
is required); then submitit's local executor; then MPI.

A single process needs a rendezvous port too (DeepSpeed starts ``torch.distributed`` for world size 1);
without a launcher-set ``MASTER_PORT`` it gets a free one, so two trainings on one host do not collide.

The collective helpers (:func:`barrier`, :func:`all_reduce_sum`), :func:`set_threads` and
:func:`set_up_task` import torch when called; importing this module does not.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

from hpcdiff import allocator
from hpcdiff.errors import HpcdiffError

if TYPE_CHECKING:
    import torch

DEFAULT_PORT = 29500


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job. ``master_addr``/``master_port`` are the rendezvous for
    ``torch.distributed`` (rank 0's host)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    launcher: str = "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


@dataclasses.dataclass(frozen=True)
class Launcher:
    """One row of the table: which variables give rank, local rank, world size, local world size,
    node rank; ``present`` are the variables whose presence identifies the launcher."""

    name: str
    present: tuple[str, ...]
    rank: str
    local_rank: str | None
    world_size: str
    local_world_size: str | None
    node_rank: str | None


LAUNCHERS: tuple[Launcher, ...] = (
    Launcher("torchrun", ("RANK", "WORLD_SIZE"), "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
             "GROUP_RANK"),
    Launcher("slurm", ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID"), "SLURM_PROCID", "SLURM_LOCALID",
             "SLURM_NTASKS", "SLURM_STEP_TASKS_PER_NODE", "SLURM_NODEID"),
    Launcher("submitit-local", ("SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_NTASKS"),
             "SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_LOCALID", "SUBMITIT_LOCAL_NTASKS",
             "SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_NODEID"),
    Launcher("openmpi", ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), "OMPI_COMM_WORLD_RANK",
             "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE",
             "OMPI_COMM_WORLD_NODE_RANK"),
    Launcher("mpich", ("PMI_RANK", "PMI_SIZE"), "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", "MPI_LOCALNRANKS",
             None),
    Launcher("pmix", ("PMIX_RANK", "PMIX_SIZE"), "PMIX_RANK", "PMIX_LOCAL_RANK", "PMIX_SIZE",
             "PMIX_LOCAL_SIZE", "PMIX_NODEID"),
)


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Describe this process from ``environ`` (default ``os.environ``) using :data:`LAUNCHERS`."""
    env = os.environ if environ is None else environ
    for row in LAUNCHERS:
        if all(name in env for name in row.present):
            return _from_row(row, env)
    port = _int(env, "MASTER_PORT", 0) if "MASTER_PORT" in env else free_port()
    return DistEnv(master_addr=env.get("MASTER_ADDR", "127.0.0.1"), master_port=port)


def _from_row(row: Launcher, env: Mapping[str, str]) -> DistEnv:
    rank = _int(env, row.rank, 0)
    world_size = _int(env, row.world_size, 1)
    local_rank = _int(env, row.local_rank, rank) if row.local_rank else rank
    local_world = _local_world(row, env, world_size)
    node_rank = _int(env, row.node_rank, rank // max(local_world, 1)) if row.node_rank else 0
    if not 0 <= rank < world_size or not 0 <= local_rank < max(local_world, 1):
        raise HpcdiffError(f"{row.name} environment is inconsistent: rank {rank}, local rank {local_rank}, "
                           f"world size {world_size}, local world size {local_world}")
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, local_world_size=local_world,
                   node_rank=node_rank, master_addr=_master_addr(row, env),
                   master_port=_master_port(row, env, world_size), launcher=row.name)


def _local_world(row: Launcher, env: Mapping[str, str], world_size: int) -> int:
    if row.local_world_size is None or row.local_world_size not in env:
        return world_size
    raw = env[row.local_world_size]
    if row.name == "slurm":
        # SLURM_STEP_TASKS_PER_NODE looks like "4(x2),3": this node's count is what matters here.
        counts = expand_tasks_per_node(raw)
        node = _int(env, "SLURM_NODEID", 0)
        return counts[node] if node < len(counts) else counts[0]
    return _int(env, row.local_world_size, world_size)


def _master_addr(row: Launcher, env: Mapping[str, str]) -> str:
    if "MASTER_ADDR" in env:
        return env["MASTER_ADDR"]
    if row.name == "slurm":
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if nodes:
            return expand_nodelist(nodes)[0]
    return "127.0.0.1"


def _master_port(row: Launcher, env: Mapping[str, str], world_size: int) -> int:
    if "MASTER_PORT" in env:
        return _int(env, "MASTER_PORT", DEFAULT_PORT)
    if world_size == 1:
        return free_port()  # nobody else needs to find it
    job_id = {"slurm": "SLURM_JOB_ID", "submitit-local": "SUBMITIT_LOCAL_JOB_ID"}.get(row.name)
    if job_id is not None and job_id in env:
        # Distinct jobs sharing a node must not collide on the rendezvous port.
        return 20000 + _int(env, job_id, 0) % 20000
    return DEFAULT_PORT


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _int(env: Mapping[str, str], name: str | None, default: int) -> int:
    if name is None or name not in env:
        return default
    try:
        return int(env[name])
    except ValueError:
        raise HpcdiffError(f"environment variable {name}={env[name]!r} is not an integer") from None


def expand_tasks_per_node(spec: str) -> list[int]:
    """``"4(x2),3"`` → ``[4, 4, 3]`` (SLURM's compressed tasks-per-node notation)."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            raise HpcdiffError(f"cannot parse SLURM tasks-per-node {spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def expand_nodelist(spec: str) -> list[str]:
    """Expand a SLURM host list: ``"gpu[001-003,010],login1"`` → ``["gpu001", "gpu002", "gpu003",
    "gpu010", "login1"]``. Zero padding is kept; several bracket groups per name are allowed."""
    hosts: list[str] = []
    for item in _split_top_level(spec):
        hosts += _expand_host(item)
    if not hosts:
        raise HpcdiffError(f"empty SLURM node list {spec!r}")
    return hosts


def _split_top_level(spec: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(spec[start:i])
            start = i + 1
        if depth < 0:
            raise HpcdiffError(f"cannot parse SLURM node list {spec!r}")
    if depth != 0:
        raise HpcdiffError(f"cannot parse SLURM node list {spec!r}")
    items.append(spec[start:])
    return [s.strip() for s in items if s.strip()]


def _expand_host(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        return [item]
    head, tail = item[: match.start()], item[match.end():]
    out = []
    for rng in match.group(1).split(","):
        lo, _, hi = rng.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise HpcdiffError(f"cannot parse SLURM node range {rng!r} in {item!r}")
        width = len(lo)
        for n in range(int(lo), int(hi or lo) + 1):
            out += [h for h in _expand_host(f"{head}{n:0{width}d}{tail}")]
    return out


def set_threads(environ: MutableMapping[str, str] | None = None, *, default: int = 1) -> int:
    """Set this process's CPU thread count; returns it.

    The count is ``OMP_NUM_THREADS`` if set (an explicit choice), else SLURM's ``SLURM_CPUS_PER_TASK``
    (the allocation), else ``default``. It is written to ``OMP_NUM_THREADS``, which OpenMP reads when
    torch is first imported, and passed to ``torch.set_num_threads``, which also works afterwards.
    """
    env = os.environ if environ is None else environ
    name = "OMP_NUM_THREADS" if "OMP_NUM_THREADS" in env else "SLURM_CPUS_PER_TASK"
    threads = _int(env, name, default)
    if threads < 1:
        raise HpcdiffError(f"environment variable {name}={env[name]!r} must be at least 1")
    env["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    return threads


def set_up_task() -> int:
    """The first call of every task a launcher starts (a submitit rank or array task): this process's
    thread count (:func:`set_threads`) and its C heap (:func:`hpcdiff.allocator.tune_malloc`, as
    ``hpcdiff``'s command line does). Returns the thread count."""
    threads = set_threads()
    allocator.tune_malloc()
    return threads


def barrier() -> None:
    """Wait for every rank (nothing to wait for without ``torch.distributed``)."""
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over ranks; the identity on a single rank. NCCL reduces on the GPU, so the
    values travel there and back."""
    import torch.distributed as torch_dist

    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return values
    on_gpu = torch_dist.get_backend() == "nccl"
    tensor = values.cuda() if on_gpu else values.clone()
    torch_dist.all_reduce(tensor)
    return tensor.cpu()
