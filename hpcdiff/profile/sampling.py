"""``hpcdiff profile sample``: sampling throughput against the number of array tasks, and the share of
each task spent starting up.

Each task count runs the sampling job into its own ``PROFILE/sample/tasks-<T>/`` through
:func:`hpcdiff.launch.array.submit_sample` (the path of ``hpcdiff submit sample``); the array's samples/s
is its samples over the wall time from submission to the last task's end (queueing included), and the
ideal line is the smallest count's rate scaled by the task ratio. A task's start-up is interpreter start
and unpickling (from the process's creation time), the sampler's imports, and the sampler's own start-up
(checkpoint load, plan, network build, date index); the first network call's one-off set-up is in the
sampling time.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from hpcdiff import dist
from hpcdiff.config import from_dict, to_dict
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import ensure_writable_dir
from hpcdiff.launch.array import SampleTask, deadline_for, submit_sample, wait_array
from hpcdiff.profile import plots, report
from hpcdiff.profile.runner import POINT_MARKER
from hpcdiff.sample.job import SampleJob

SAMPLE_COLUMNS = ("tasks", "samples", "wall_s", "samples_per_s", "ideal_samples_per_s", "efficiency",
                  "startup_share", "startup_share_max", "startup_s_mean")


def _process_age_s() -> float:
    """Seconds since this process was created (0 where that cannot be read)."""
    try:
        import psutil

        return max(time.time() - psutil.Process().create_time(), 0.0)
    except (ImportError, OSError):
        return 0.0


class ProfileSampleTask(SampleTask):
    """:class:`SampleTask` that also reports its start-up: process start to ready to sample."""

    def __call__(self, dates: list[str]) -> dict[str, Any]:
        before = _process_age_s()
        t0 = time.perf_counter()
        dist.set_up_task()
        from hpcdiff.sample.ensemble import sample_ensemble

        imports = time.perf_counter() - t0
        job = from_dict(SampleJob, self.job, where=f"{self.out}/config.yaml")
        summary = sample_ensemble(job, Path(self.run_dir), Path(self.out), dates=dates, progress=False)
        return {"samples": summary.samples, "startup_s": before + imports + summary.startup_s,
                "seconds": before + imports + summary.seconds}


def run_tasks(job: SampleJob, run: Path, out: Path, tasks: int, *, executor: str) -> dict[str, Any]:
    folder = out / "sample" / f"tasks-{tasks}"
    result_path = folder / "result.json"
    job_t = dataclasses.replace(job, array=dataclasses.replace(job.array, tasks=tasks,
                                                               parallelism=max(tasks, job.array.parallelism)))
    want = {"job": json.loads(json.dumps(to_dict(job_t), default=str)), "run": str(Path(run).resolve()),
            "executor": executor}
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if {k: done.get(k) for k in want} == want:
            print(f"hpcdiff profile sample: {tasks} task(s): reusing {result_path}", file=sys.stderr,
                  flush=True)
            return done
    if folder.exists():
        if not (folder / POINT_MARKER).is_file():
            raise HpcdiffError(f"{folder}: exists and was not made by hpcdiff profile; choose another --out")
        shutil.rmtree(folder)
    ensure_writable_dir(folder)
    (folder / POINT_MARKER).write_text("")
    start = time.perf_counter()
    submitted = submit_sample(job_t, run, folder / "samples", executor=executor, task_type=ProfileSampleTask)
    if submitted is None:
        raise HpcdiffError(f"{folder}: nothing to sample")
    wait_array(submitted, deadline_s=deadline_for(job_t, tasks))
    wall = time.perf_counter() - start
    results = [j.result() for j in submitted.jobs]
    done = {**want, "tasks": tasks, "wall_s": wall, "results": results,
            "job_ids": [str(j.job_id) for j in submitted.jobs]}
    report.write_json(result_path, done)
    return done


def sample_rows(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows, base = [], None
    for d in sorted(done, key=lambda d: d["tasks"]):
        samples = sum(r["samples"] for r in d["results"])
        rate = samples / d["wall_s"]
        base = base or (d["tasks"], rate)
        ideal = base[1] * d["tasks"] / base[0]
        shares = [r["startup_s"] / r["seconds"] for r in d["results"]]
        rows.append({"tasks": d["tasks"], "samples": samples, "wall_s": d["wall_s"], "samples_per_s": rate,
                     "ideal_samples_per_s": ideal, "efficiency": rate / ideal,
                     "startup_share": sum(shares) / len(shares), "startup_share_max": max(shares),
                     "startup_s_mean": sum(r["startup_s"] for r in d["results"]) / len(d["results"])})
    return rows


def profile_sample(job: SampleJob, run: Path, out: Path, tasks: list[int], *, executor: str) -> list[str]:
    if executor not in ("slurm", "local"):
        raise HpcdiffError(f"--executor must be slurm or local, got {executor!r}")
    if not tasks or min(tasks) < 1:
        raise HpcdiffError(f"--tasks must be positive counts, got {tasks}")
    out = Path(out).resolve()
    done = []
    for t in sorted(set(tasks)):
        print(f"hpcdiff profile sample: {t} array task(s)", file=sys.stderr, flush=True)
        done.append(run_tasks(job, run, out, t, executor=executor))
    rows = sample_rows(done)
    report.write_csv(out / "sample_scaling.csv", rows, SAMPLE_COLUMNS)
    table = report.markdown_table(rows, (("tasks", "array tasks", ""), ("samples", "samples", ""),
                                         ("wall_s", "wall s", ".1f"), ("samples_per_s", "samples/s", ".2f"),
                                         ("ideal_samples_per_s", "ideal samples/s", ".2f"),
                                         ("efficiency", "efficiency", ".0%"),
                                         ("startup_share", "start-up share", ".1%")))
    report.write_text(out / "sample_scaling.md", "# Sampling arrays\n\n" + table + "\n")
    plots.sampling_tasks(rows, out / "sample_scaling.png")
    return [table, f"report in {out} (sample_scaling.md, sample_scaling.csv, sample_scaling.png)"]
