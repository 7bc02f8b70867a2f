"""``hpcdiff submit sample``: a submitit job array over chunks of the dates still missing.

The driver resolves the checkpoint and the dataset once and writes ``plan.json`` before anything is
queued, so every task samples from the same checkpoint; each task (:class:`SampleTask`) loads it once
and writes its dates' parts. A task requeued after its time limit, or the same command run again
after a failure, skips the dates whose part is complete: rerunning resubmits only what is missing.
``debug`` runs the tasks one after another in this process.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from hpcdiff import dist
from hpcdiff.config import from_dict, to_dict
from hpcdiff.errors import HpcdiffError
from hpcdiff.launch.slurm import job_name
from hpcdiff.launch.submit import make_executor
from hpcdiff.sample import parts
from hpcdiff.sample.dates import chunks, name_some
from hpcdiff.sample.job import SampleJob


class SampleTask(submitit.helpers.Checkpointable):
    """One array task: sample ``dates`` (a chunk). Picklable: carries the resolved job as a plain dict.
    On the time-limit signal submitit requeues it with the same chunk, and the finished dates are
    skipped."""

    def __init__(self, job: dict[str, Any], run_dir: str, out: str) -> None:
        self.job, self.run_dir, self.out = job, run_dir, out

    def __call__(self, dates: list[str]) -> dict[str, Any]:
        dist.set_up_task()  # first: it sets OMP_NUM_THREADS before the sampler's import starts torch
        from hpcdiff.sample.ensemble import sample_ensemble

        job = from_dict(SampleJob, self.job, where=f"{self.out}/config.yaml")
        summary = sample_ensemble(job, Path(self.run_dir), Path(self.out), dates=dates, progress=False)
        print(f"hpcdiff sample task: {summary.describe()}", flush=True)
        return {"written": summary.written, "skipped": summary.skipped, "samples": summary.samples,
                "startup_s": summary.startup_s, "seconds": summary.seconds}


@dataclasses.dataclass
class SubmittedArray:
    """The tasks of one submission: ``chunks[i]`` are the dates of ``jobs[i]`` (``jobs`` is empty for
    the debug executor, whose tasks run at :func:`wait_array`)."""

    out: Path
    executor: str
    task: SampleTask
    chunks: list[list[str]]
    jobs: list[Any]
    planned: list[str]
    members: int

    @property
    def folder(self) -> Path:
        return self.out / "submitit"

    def progress(self) -> str:
        done = parts.finished_dates(self.out, members=self.members) & set(self.planned)
        line = f"sampling: {len(done)}/{len(self.planned)} dates done"
        if not self.jobs:  # debug: the tasks ran in this process
            return line
        return f"{line}; {sum(1 for j in self.jobs if _done(j))}/{len(self.chunks)} tasks finished"


def submit_sample(job: SampleJob, run_dir: Path, out: Path, *, executor: str,
                  task_type: type[SampleTask] = SampleTask) -> SubmittedArray | None:
    """Write the plan, then submit one array task per chunk of the missing dates (``array.tasks``
    chunks, at most ``array.parallelism`` running); ``None`` when nothing is missing. ``task_type``: a
    :class:`SampleTask` that reports more (``hpcdiff profile sample``'s)."""
    from hpcdiff.launch.preflight import preflight_sample
    from hpcdiff.sample.ensemble import pending_dates, write_prepared
    from hpcdiff.sample.run import open_run

    out = Path(out).resolve()
    job, run = open_run(job, run_dir)
    preflight_sample(job, run.spec)  # before the plan is written: a refused job can change precision
    plan = write_prepared(job, run, out)
    missing = pending_dates(out, plan, None)
    if not missing:
        return None
    task = task_type(to_dict(job), str(run.run_dir), str(out))
    date_chunks = chunks(missing, job.array.tasks)
    submitted = SubmittedArray(out=out, executor=executor, task=task, chunks=date_chunks, jobs=[],
                               planned=plan.dates, members=plan.members)
    if executor != "debug":
        # one process per array task, whatever the training layout of the slurm section
        slurm = dataclasses.replace(job.slurm, nodes=1, tasks_per_node=1)
        ex = make_executor(executor, submitted.folder, slurm, name=job_name("hpcdiff-sample", out.name))
        if executor == "slurm":
            ex.update_parameters(slurm_array_parallelism=job.array.parallelism)
        submitted.jobs = ex.map_array(task, date_chunks)
    ids = ", ".join(str(j.job_id) for j in submitted.jobs[:3]) + (" ..." if len(submitted.jobs) > 3 else "")
    print(f"submitted sampling array ({executor}): {len(date_chunks)} task(s) over {len(missing)} missing "
          f"of {len(plan.dates)} dates x {plan.members} members" + (f"; jobs {ids}" if ids else "")
          + f"; logs in {submitted.folder}", file=sys.stderr, flush=True)
    return submitted


def deadline_for(job: SampleJob, tasks: int) -> float:
    """Default wait: the tasks' time limit per wave of ``array.parallelism`` tasks, x 1.5, + 10 min."""
    waves = math.ceil(tasks / job.array.parallelism)
    return waves * job.slurm.time_limit_min * 60 * 1.5 + 600


def _done(job: Any) -> bool:
    try:
        return job.done()
    except Exception:  # a broken job state counts as finished; its exception() says what happened
        return True


def _failure(error: BaseException) -> str:
    """The most telling line of a task's error (the exception line at the end of its trace)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    trace = [line for line in lines if not line.startswith(("-", "You can check", "or at paths", "- /"))]
    return (trace[-1] if trace else type(error).__name__)[:300]


def _run_inline(submitted: SubmittedArray) -> dict[int, str]:
    """Debug executor: run the tasks here, in order; returns {task index: error}."""
    failed = {}
    for i, dates in enumerate(submitted.chunks):
        try:
            submitted.task(dates)
        except Exception as err:  # report all failed tasks together, as for a real array
            failed[i] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    return failed


VANISHED_POLLS = 5  # consecutive polls a task must be missing from squeue before it counts as lost


def in_slurm_queue(job_id: str) -> bool | None:
    """Whether ``squeue --states=all`` still lists ``job_id`` (pending, running or recently ended);
    ``None`` when squeue cannot answer (then nothing is concluded)."""
    try:
        proc = subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", job_id, "--format", "%i"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return False if "Invalid job id" in proc.stderr else None
    return bool(proc.stdout.strip())


class VanishedTasks:
    """Array tasks that left SLURM without a result: an element cancelled while still pending has no
    record afterwards, and without accounting (no slurmdbd) ``sacct`` cannot tell submitit about it."""

    def __init__(self, submitted: SubmittedArray) -> None:
        self.submitted, self.missing = submitted, dict.fromkeys(range(len(submitted.jobs)), 0)
        self.lost: set[int] = set()

    def update(self) -> None:
        if self.submitted.executor != "slurm":
            return
        for i, job in enumerate(self.submitted.jobs):
            if i in self.lost or _done(job):
                continue
            listed = in_slurm_queue(str(job.job_id))
            self.missing[i] = self.missing[i] + 1 if listed is False else 0
            if self.missing[i] >= VANISHED_POLLS:
                self.lost.add(i)

    def error(self, i: int) -> str:
        return (f"job {self.submitted.jobs[i].job_id} left the queue without a result (cancelled before it "
                "started?)")


def _poll(submitted: SubmittedArray, *, deadline_s: float, poll_s: float) -> dict[int, str]:
    """Wait for the array's jobs, printing the progress when it changes; returns {task index: error}."""
    end, last, vanished = time.monotonic() + deadline_s, None, VanishedTasks(submitted)
    while not all(_done(j) or i in vanished.lost for i, j in enumerate(submitted.jobs)):
        vanished.update()
        if time.monotonic() > end:
            raise HpcdiffError(f"{submitted.out}: sampling array did not finish within {deadline_s:.0f} s "
                               f"({submitted.progress()}); its jobs keep running; rerun the same command "
                               "later to resubmit what is missing")
        line = submitted.progress()
        if line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        time.sleep(poll_s)
    failed = {i: vanished.error(i) for i in vanished.lost}
    for i, job in enumerate(submitted.jobs):
        if i in vanished.lost:
            continue
        error = job.exception()
        if error is not None:
            # a task cancelled before it started has no log; submitit may see it end (and then says only
            # that no output stream exists) before it leaves squeue: the same fate, told the same way
            failed[i] = vanished.error(i) if _never_started(job) else _failure(error)
    return failed


def _never_started(job: Any) -> bool:
    paths = getattr(job, "paths", None)
    return paths is not None and not paths.stdout.exists() and not paths.stderr.exists()


def wait_array(submitted: SubmittedArray, *, deadline_s: float, poll_s: float = 2.0) -> None:
    """Wait, never forever; on failure one line naming the failed tasks, their dates and the fix."""
    if submitted.executor == "debug":
        failed = _run_inline(submitted)
    else:
        failed = _poll(submitted, deadline_s=deadline_s, poll_s=poll_s)
    print(submitted.progress(), file=sys.stderr, flush=True)
    if failed:
        detail = "; ".join(f"task {i} ({len(submitted.chunks[i])} dates: "
                           f"{name_some(submitted.chunks[i], show=3)})" for i in sorted(failed))
        first = failed[min(failed)]
        raise HpcdiffError(f"{len(failed)} of {len(submitted.chunks)} sampling tasks failed: {detail}; first "
                           f"error: {first}; rerunning the same command resubmits only the missing dates "
                           f"(logs: {submitted.folder})")
