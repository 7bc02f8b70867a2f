"""``hpcdiff submit sample``: a job array over chunks of the missing dates, through submitit's local
executor, in-process (debug, with a failing task), and on the single-host SLURM test cluster."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sample_helpers import REPO, SMALL

from hpcdiff.cli import main
from hpcdiff.launch.array import submit_sample, wait_array
from hpcdiff.sample import parts
from hpcdiff.sample.ensemble import EnsembleSampler
from hpcdiff.sample.merge import merge_samples
from hpcdiff.sample.plan import read_plan

JOB = str(REPO / "jobs" / "demo_sample.yaml")


def submit_args(tiny_run, out, executor, *extra):
    sets = [a for s in SMALL for a in ("--set", s)]
    return ["submit", "sample", JOB, "--run", str(tiny_run.run), "--out", str(out), "--executor", executor,
            *sets, *extra]


@pytest.mark.slow
def test_local_array_of_two_tasks_merges_complete_and_a_rerun_submits_nothing(tiny_run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(submit_args(tiny_run, out, "local")) == 0
    captured = capsys.readouterr()
    assert "2 task(s) over 6 missing of 6 dates x 3 members" in captured.err
    assert "sampling: 6/6 dates done; 2/2 tasks finished" in captured.err
    assert len(list((out / "submitit").glob("*_result.pkl"))) == 2  # two array tasks ran
    assert parts.missing_dates(out) == []
    merged = merge_samples(out)
    assert merged.is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    assert main(submit_args(tiny_run, out, "local")) == 0
    assert "nothing submitted" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()} == mtimes
    assert len(list((out / "submitit").glob("*_result.pkl"))) == 2  # no new task


def test_failed_tasks_are_named_and_a_rerun_fills_only_what_is_missing(tiny_run, tmp_path, capsys,
                                                                     monkeypatch):
    out = tmp_path / "samples"
    manifest = json.loads((tiny_run.dataset / "manifest.json").read_text())
    dates = sorted(manifest["splits"]["test"]["dates"])[:6]  # the plan: chunks dates[:3], dates[3:]
    real_draw = EnsembleSampler.draw

    def failing_draw(self, rows):
        if any(date in dates[3:] for date, _ in rows):
            raise RuntimeError("simulated node failure")
        return real_draw(self, rows)

    monkeypatch.setattr(EnsembleSampler, "draw", failing_draw)
    assert main(submit_args(tiny_run, out, "debug")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hpcdiff: error: 1 of 2 sampling tasks failed: task 1 (3 dates: "
                          f"{', '.join(dates[3:])})")
    assert "simulated node failure" in err and "rerunning the same command resubmits only the missing" in err
    assert parts.missing_dates(out) == dates[3:]
    done = {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}

    monkeypatch.setattr(EnsembleSampler, "draw", real_draw)
    assert main(submit_args(tiny_run, out, "debug")) == 0
    assert "2 task(s) over 3 missing of 6 dates" in capsys.readouterr().err
    assert parts.missing_dates(out) == []
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # task 0's parts were not redone


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_slurm_job_array(tiny_run, make_job, tmp_path):
    out = tmp_path / "samples"
    submitted = submit_sample(make_job("array.tasks=2", "array.parallelism=2"), tiny_run.run, out,
                              executor="slurm")
    assert len(submitted.jobs) == 2 and all("_" in str(j.job_id) for j in submitted.jobs)  # one array
    wait_array(submitted, deadline_s=180)
    merged = merge_samples(out)
    assert parts.missing_dates(out) == [] and merged.is_file()
    reference = tmp_path / "reference"
    from hpcdiff.sample.ensemble import sample_ensemble

    sample_ensemble(make_job(), tiny_run.run, reference, progress=False)
    # The same members, wherever they were drawn. Bit for bit within one process (the chunking tests);
    # across processes the CPU kernels may split reductions by thread count, so equal to rounding.
    for date in read_plan(out).dates:
        np.testing.assert_allclose(parts.read_part(out, date), parts.read_part(reference, date),
                                   rtol=1e-5, atol=1e-6)


def squeue_state(job_id: str) -> str:
    import subprocess

    return subprocess.run(["squeue", "--noheader", "--states=all", "--jobs", job_id, "--format", "%T"],
                          capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(300)
@pytest.mark.parametrize("when", ["running", "pending"])
def test_slurm_cancelled_array_task_is_resubmitted_alone(tiny_run, make_job, tmp_path, when):
    """Task 1 of a 2-task array is cancelled while it runs, or while it still waits (parallelism 1: it
    then leaves no record, and without accounting only its absence from the queue tells); the wait
    names it and its dates, and the resubmission covers exactly those dates, leaving task 0's parts
    untouched."""
    import subprocess
    import time

    from hpcdiff.errors import HpcdiffError

    # running: long enough to be cancelled while it runs; pending: task 0 runs while task 1 waits
    slow = ("sample.sampler=ddpm", "sample.steps=250") if when == "running" else ()
    parallel = "array.parallelism=2" if when == "running" else "array.parallelism=1"
    out, job = tmp_path / "samples", make_job("array.tasks=2", parallel, *slow)
    submitted = submit_sample(job, tiny_run.run, out, executor="slurm")
    cancelled = str(submitted.jobs[1].job_id)
    deadline = time.monotonic() + 120
    while squeue_state(cancelled) != when.upper():
        assert time.monotonic() < deadline, f"task {cancelled} is not {when}"
        time.sleep(0.2)
    subprocess.run(["scancel", cancelled], check=True, timeout=30)
    start = time.monotonic()
    with pytest.raises(HpcdiffError, match=r"1 of 2 sampling tasks failed: task 1 \(3 dates") as err:
        wait_array(submitted, deadline_s=200)
    assert time.monotonic() - start < 150  # told by the scheduler (or its silence), not by the deadline
    if when == "pending":
        assert "left the queue without a result" in str(err.value)
    lost = submitted.chunks[1]
    assert parts.missing_dates(out) == lost
    kept = {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir()}
    again = submit_sample(make_job("array.tasks=1", *slow), tiny_run.run, out, executor="slurm")
    assert again.chunks == [lost] and len(again.jobs) == 1
    wait_array(again, deadline_s=200)
    assert parts.missing_dates(out) == []
    assert {p: p.stat().st_mtime_ns for p in (out / "parts").iterdir() if p in kept} == kept
    assert merge_samples(out).is_file()
