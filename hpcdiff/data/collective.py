"""The few MPI collectives preprocessing needs, and agreement on failure so no rank ever hangs.

Every step that can fail runs through :meth:`Collective.agreed`: each rank runs its part, then all
ranks exchange their error (or ``None``); if any rank failed, *every* rank raises the same
:class:`~hpcdiff.errors.HpcdiffError` (the lowest failing rank's message), so all of them exit 1 and
none waits in a collective that the others never reach. mpi4py is imported only for world size > 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hpcdiff.dist import DistEnv
from hpcdiff.errors import HpcdiffError

T = TypeVar("T")


class Collective:
    """Rank, world size and object collectives over ``MPI.COMM_WORLD`` (or a single process)."""

    def __init__(self, comm: Any | None, *, rank: int, world_size: int) -> None:
        self.comm, self.rank, self.world_size = comm, rank, world_size

    @classmethod
    def connect(cls, env: DistEnv) -> Collective:
        """The world of ``env``; for world size > 1 it must match MPI's (launched by mpiexec / srun)."""
        if env.world_size == 1:
            return cls(None, rank=0, world_size=1)
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise HpcdiffError(f"{env.world_size} ranks ({env.launcher}) need mpi4py: {err}") from None
        comm = MPI.COMM_WORLD
        if (comm.Get_rank(), comm.Get_size()) != (env.rank, env.world_size):
            raise HpcdiffError(f"the {env.launcher} environment says rank {env.rank} of {env.world_size} "
                               f"but MPI says rank {comm.Get_rank()} of {comm.Get_size()}; launch with "
                               "mpiexec, or srun --mpi=pmi2 with an MPI-enabled mpi4py")
        return cls(comm, rank=env.rank, world_size=env.world_size)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allgather(self, value: T) -> list[T]:
        return [value] if self.comm is None else self.comm.allgather(value)

    def bcast(self, value: T) -> T:
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.barrier()

    def raise_if_any(self, error: str | None) -> None:
        """Exchange this rank's error; raise the first one on every rank if any rank has one."""
        errors = self.allgather(error)
        for rank, message in enumerate(errors):
            if message is not None:
                where = f" (rank {rank} of {self.world_size})" if self.world_size > 1 and rank else ""
                raise HpcdiffError(f"{message}{where}")

    def agreed(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank; if it fails anywhere, raise the same error everywhere. An unexpected
        exception (a bug) is announced to the other ranks, then re-raised here with its traceback."""
        try:
            result, error = fn(), None
        except HpcdiffError as err:
            result, error = None, str(err)
        except Exception as err:
            self.allgather(f"unexpected {type(err).__name__}: {err}")  # the others raise this message
            raise
        self.raise_if_any(error)
        return result

    def on_root(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only (agreed), and broadcast its result."""
        result = self.agreed(lambda: fn() if self.is_root else None)
        return self.bcast(result)
