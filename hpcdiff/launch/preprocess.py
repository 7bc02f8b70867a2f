"""``hpcdiff submit preprocess``: preprocessing through submitit, on the path ``submit train`` takes.

The submitting process loads and checks the recipe, resolves its ``root`` against the recipe's folder
and refuses an ``--out`` that it may not replace, all before anything is queued. The job itself is
:class:`PreprocessTask`, one per MPI rank, which runs :func:`hpcdiff.data.preprocess.run_preprocess`;
that writes the resolved recipe into the dataset (``recipe.yaml``) and renames the finished dataset
onto ``--out``. submitit's job files and logs go to a folder beside the dataset, ``DATASET.submitit``,
because the dataset folder is replaced as a whole when the job finishes.

Ranks per executor:

- ``slurm``: ``nodes x tasks_per_node`` ranks. submitit starts the tasks with ``srun``; we ask for
  ``--mpi=pmi2`` explicitly (:data:`SRUN_MPI`) instead of relying on the site's ``MpiDefault``, so
  the MPICH that mpi4py ships with sees every task in ``MPI.COMM_WORLD``.
- ``local``: one rank. submitit's local executor starts its N processes itself, without a process
  manager, so they would not form an MPI world; the ranks' statistics merge to the same dataset up to
  float rounding, so one rank is the robust choice here (run ``mpiexec -n N hpcdiff preprocess`` for
  local ranks).
- ``debug``: one rank, in this process.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from hpcdiff import dist
from hpcdiff.config import from_dict, to_dict
from hpcdiff.data.recipe import PreprocessRecipe, resolve_root
from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.slurm import SlurmSection, job_name
from hpcdiff.launch.submit import make_executor, world_size_of

SRUN_MPI = ("--mpi=pmi2",)  # the PMI that the MPICH wheel (mpi4py's MPI) speaks


class PreprocessTask:
    """One rank of a preprocessing job. Picklable: carries the resolved recipe as a plain dict."""

    def __init__(self, recipe: dict[str, Any], out: str) -> None:
        self.recipe, self.out = recipe, out

    def __call__(self) -> dict[str, Any]:
        dist.set_up_task()  # first: OMP_NUM_THREADS must be set before numpy's BLAS starts its threads
        from hpcdiff.data.preprocess import run_preprocess

        env = dist.detect()
        recipe = from_dict(PreprocessRecipe, self.recipe, where=f"the recipe submitted for {self.out}")
        out = run_preprocess(recipe, Path(self.out), env=env, progress=False)
        return {"rank": env.rank, "world_size": env.world_size, "out": str(out)}


def job_resources(slurm: SlurmSection, executor: str) -> SlurmSection:
    """The resources a job of ``executor`` really gets: one rank unless SLURM starts the tasks (see the
    module docstring)."""
    if executor == "slurm":
        return slurm
    return dataclasses.replace(slurm, nodes=1, tasks_per_node=1)


def submitit_folder_for(out: Path) -> Path:
    """Where submitit keeps the job files and logs of a dataset: ``DATASET.submitit`` beside it."""
    return out.with_name(f"{out.name}.submitit")


def check_output(out: Path) -> None:
    """Refuse an ``out`` that preprocessing would refuse to replace (before anything is queued)."""
    from hpcdiff.data.manifest import check_replaceable  # here: numpy comes after the thread count is set

    check_replaceable(out)


def check_root(recipe: PreprocessRecipe) -> None:
    """Refuse a recipe whose (resolved) ``root`` is not a folder here: the job would fail in the queue."""
    if not Path(recipe.root).is_dir():
        raise HpcdiffError(f"recipe root {recipe.root} is not a folder")


def deadline_s(slurm: SlurmSection) -> float:
    """How long the submitting process waits at most: the time limit x 1.5, plus 10 min in the queue."""
    return slurm.time_limit_min * 60 * 1.5 + 600


def submit_preprocess(recipe: PreprocessRecipe, out: Path, *, executor: str, recipe_path: Path | None,
                      folder: Path | None = None) -> Any:
    """Check the recipe and ``out``, then submit the preprocessing job; returns the submitit job.
    ``folder`` holds submitit's files (default :func:`submitit_folder_for`)."""
    out = Path(out).absolute()
    recipe = resolve_root(recipe, recipe_path)
    check_root(recipe)
    check_output(out)
    slurm = job_resources(recipe.slurm, executor)
    folder = submitit_folder_for(out) if folder is None else Path(folder)
    ex = make_executor(executor, folder, slurm, name=job_name("hpcdiff-preprocess", out.name))
    if executor == "slurm":
        ex.update_parameters(slurm_srun_args=list(SRUN_MPI))
    submitted = ex.submit(PreprocessTask(to_dict(recipe), str(out)))
    ranks = (f"{world_size_of(slurm, executor)} MPI rank(s)" if executor == "slurm" else
             f"1 rank: slurm.tasks_per_node={recipe.slurm.ntasks_per_node} applies on SLURM only")
    print(f"submitted preprocessing job {submitted.job_id} ({executor}, {ranks}); logs in {folder}",
          file=sys.stderr)
    return submitted


def finished_line(results: list[dict[str, Any]]) -> str:
    """What the submitting process prints when the job has finished."""
    first = min(results, key=lambda r: r["rank"])
    return f"dataset written to {first['out']} by {first['world_size']} rank(s)"

