"""The single-host SLURM test cluster (slurm/testcluster), and submitit against it.

Every wait has a deadline: a broken cluster must fail these tests, never hang them.
"""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]

# The jobs unpickle the functions below in an interpreter that cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run(*cmd: str, timeout_s: float = 30) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True).stdout


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """fn() in a daemon thread: its result or its exception, or a failure after `seconds`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test's thread below
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{fn} still waiting after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.5)


def squeue_state(job_id: str) -> str:
    return run("squeue", "--noheader", "--states=all", "--jobs", job_id, "--format", "%T").strip()


@pytest.fixture
def executor(submitit_folder: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=submitit_folder, cluster="slurm")
    ex.update_parameters(timeout_min=5, slurm_partition="debug", cpus_per_task=1)
    return ex


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def where_am_i() -> dict[str, Any]:
    env = submitit.JobEnvironment()
    return {
        "rank": env.global_rank,
        "world": env.num_tasks,
        "node": env.node,
        "hostnames": env.hostnames,
        "nodename": os.environ["SLURMD_NODENAME"],
        "nodelist": os.environ["SLURM_JOB_NODELIST"],
    }


class Resumable(submitit.helpers.Checkpointable):
    """Waits to be preempted; once requeued, returns at once what it was resumed with."""

    def __call__(self, marker: str, resumed: bool = False) -> dict[str, Any]:
        if not resumed:
            Path(marker).touch()  # tells the test that the signal handler is in place
            time.sleep(300)
        return {"resumed": resumed, "restarts": os.environ.get("SLURM_RESTART_COUNT")}

    def checkpoint(self, marker: str, resumed: bool = False) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, marker, resumed=True)


def test_two_nodes_idle() -> None:
    def states() -> list[str]:
        return sorted(run("sinfo", "--noheader", "--Node", "--format", "%N %t").splitlines())

    wait_until(lambda: states() == ["n1 idle", "n2 idle"], 30, "n1 and n2 idle")


def test_sbatch_wrap(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    wrap = "echo hello from $SLURMD_NODENAME"
    job_id = run("sbatch", "--parsable", "--output", str(out), "--wrap", wrap).strip()
    wait_until(lambda: squeue_state(job_id) == "COMPLETED", 30, f"job {job_id} to complete")
    assert out.read_text().strip() in {"hello from n1", "hello from n2"}


def test_submitit_result(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(add, 2, 3)
    assert within(60, job.result) == 5
    # The sacct stand-in tells submitit the final state.
    wait_until(lambda: job.get_info().get("State") == "COMPLETED", 30, "sacct to say COMPLETED")


def test_map_array(executor: submitit.AutoExecutor) -> None:
    jobs = executor.map_array(square, [1, 2, 3, 4])
    assert [within(60, job.result) for job in jobs] == [1, 4, 9, 16]
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(4)]


def test_two_nodes_one_task_each(executor: submitit.AutoExecutor) -> None:
    executor.update_parameters(nodes=2, tasks_per_node=1)
    job = executor.submit(where_am_i)
    reports = sorted(within(60, job.results), key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == [0, 1]
    assert [r["node"] for r in reports] == [0, 1]
    assert [r["nodename"] for r in reports] == ["n1", "n2"]
    assert all(r["world"] == 2 and r["nodelist"] == "n[1-2]" for r in reports)
    assert all(r["hostnames"] == ["n1", "n2"] for r in reports)


def test_cancelled_job_raises(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(time.sleep, 300)
    wait_until(lambda: squeue_state(job.job_id) == "RUNNING", 30, "the job to run")
    job.cancel()
    start = time.monotonic()
    with pytest.raises(submitit.core.utils.UncompletedJobError, match="has not produced any output"):
        within(90, job.result)
    print(f"cancelled job raised after {time.monotonic() - start:.1f} s")
    assert job.state.startswith("CANCELLED")


def test_checkpointable_requeued_after_preemption(executor: submitit.AutoExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    job = executor.submit(Resumable(), str(marker))
    wait_until(marker.exists, 60, "the function to start")
    # The signal submitit's handler waits for (Slurm sends it ahead of a time limit). Not
    # job._interrupt(): its SIGTERM and USR2 may arrive in either order, and a late SIGTERM also
    # kills the `scontrol requeue` that the USR2 handler is running.
    run("scancel", "--signal=USR2", job.job_id)
    start = time.monotonic()
    assert within(90, job.result) == {"resumed": True, "restarts": "1"}
    print(f"requeued job finished {time.monotonic() - start:.1f} s after the signal")


def test_sacct_stand_in_states() -> None:
    def sbatch(*args: str) -> str:
        return run("sbatch", "--parsable", "--output", "/dev/null", *args).strip()

    done, failed = sbatch("--wrap", "true"), sbatch("--wrap", "exit 3")
    cancelled, array = sbatch("--wrap", "sleep 300"), sbatch("--array", "0-3%1", "--wrap", "sleep 300")
    wait_until(lambda: squeue_state(f"{array}_0") == "RUNNING", 30, "the first array task to run")
    run("scancel", cancelled)
    ids = [done, failed, cancelled, array]
    wait_until(lambda: squeue_state(done) == "COMPLETED", 30, "the first job to complete")
    wait_until(lambda: squeue_state(failed) == "FAILED", 30, "the failing job to fail")
    wait_until(lambda: squeue_state(cancelled) == "CANCELLED", 30, "the cancelled job to end")
    out = run("sacct", "-o", "JobID,State,NodeList", "--parsable2", *[a for i in ids for a in ("-j", i)])
    run("scancel", array)
    states = {job_id: info["State"] for job_id, info in SlurmInfoWatcher().read_info(out).items()}
    assert states == {
        done: "COMPLETED",
        failed: "FAILED",
        cancelled: "CANCELLED",
        f"{array}_0": "RUNNING",
        **{f"{array}_{i}": "PENDING" for i in (1, 2, 3)},
    }
