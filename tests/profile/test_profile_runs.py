"""``hpcdiff profile comm`` and ``hpcdiff profile train`` for real: the local executor (ranks as processes
on this machine) and the single-host SLURM test cluster (two nodes), each point a short training run
submitted through ``submit train``'s path with DeepSpeed's timers and comms logger."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from trainrun import TINY, TRAIN_JOB

from hpcdiff.cli import main

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(480)]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the executors pass the environment on
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")


def train_args(dataset: Path, out: Path, executor: str, *extra: str) -> list[str]:
    sets = [f"data.dataset={dataset}", *TINY, "slurm.gpus_per_node=0", "slurm.cpus_per_task=1",
            "slurm.time_limit_min=5"]
    return ["profile", "train", str(TRAIN_JOB), "--out", str(out), "--executor", executor, "--steps", "2",
            "--warmup", "1", "--no-progress", *[a for s in sets for a in ("--set", s)], *extra]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def ranks_json(out: Path, name: str) -> dict:
    return json.loads((out / "points" / name / "ranks.json").read_text())


def test_local_comm_then_train_weak_with_traces_and_a_rerun_that_reuses_the_points(tiny_dataset, tmp_path,
                                                                                   capsys):
    out = tmp_path / "prof"
    assert main(["profile", "comm", "--out", str(out), "--executor", "local", "--ranks", "2",
                 "--max-bytes", "65536"]) == 0
    comm = read_csv(out / "comm.csv")
    assert [int(r["size_bytes"]) for r in comm] == [2**k for k in range(10, 17)]
    assert all(float(r["algbw_gb_per_s"]) == pytest.approx(float(r["busbw_gb_per_s"])) for r in comm)  # n=2
    fit = json.loads((out / "comm.json").read_text())["fit"]
    assert fit["ranks"] == 2 and fit["alpha_s"] > 0 and fit["beta_s_per_byte"] >= 0 and fit["residual"] >= 0

    assert main(train_args(tiny_dataset, out, "local", "--ranks", "1,2", "--mode", "weak",
                           "--trace-steps", "1")) == 0
    printed = capsys.readouterr().out
    assert "projection against the measured points" in printed
    two = ranks_json(out, "weak-r2")
    assert [r["rank"] for r in two["records"]] == [0, 1]
    for record in two["records"]:
        assert len(record["steps"]) == 3 and record["micro_batch"] == 2  # global batch 4 over 2 ranks
        for step in record["steps"]:
            # one bucket of fp32 gradients per step, as DeepSpeed's comms logger counted it, and the
            # 4-byte scalar that DeepSpeed all-reduces besides (the gradient norm for clipping)
            assert step["allreduce_bytes"] == record["parameters"] * 4 + 4
            assert step["forward_ms"] > 0 and step["backward_ms"] > 0 and step["allreduce_total_ms"] > 0
            assert step["step_ms"] >= step["forward_ms"] + step["backward_ms"]
    rows = read_csv(out / "scaling.csv")
    assert [(r["ranks"], r["rank"]) for r in rows] == [("1", "0"), ("2", "0"), ("2", "1")]
    assert {r["global_batch"] for r in rows if r["ranks"] == "2"} == {"4"}
    for rank in (0, 1):
        trace = json.loads((out / "traces" / "weak-r2" / f"rank-{rank}.json").read_text())
        assert trace["traceEvents"]
    validation = read_csv(out / "validation.csv")
    assert [v["ranks"] for v in validation] == ["1", "2"]
    env = json.loads((out / "environment.json").read_text())
    assert env["backends"] == ["gloo"] and env["versions"]["deepspeed"]

    mtime = (out / "points" / "weak-r2" / "ranks.json").stat().st_mtime_ns
    assert main(train_args(tiny_dataset, out, "local", "--ranks", "1,2", "--mode", "weak",
                           "--trace-steps", "1")) == 0
    assert capsys.readouterr().err.count("reusing") == 2
    assert (out / "points" / "weak-r2" / "ranks.json").stat().st_mtime_ns == mtime


def test_bad_requests_fail_before_anything_runs(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "prof"
    assert main(train_args(tiny_dataset, out, "local", "--nodes", "1,2")) == 1
    assert "the local executor runs on one node" in capsys.readouterr().err
    assert main(train_args(tiny_dataset, out, "local", "--ranks", "3", "--mode", "strong")) == 1
    assert "train.global_batch 4 is not divisible by the world size 3" in capsys.readouterr().err
    assert main(train_args(tiny_dataset, out, "local", "--ranks", "1", "--interconnect", "nope")) == 1
    assert "nope: no such interconnect file or shipped profile" in capsys.readouterr().err
    assert main(["profile", "comm", "--out", str(out), "--executor", "local", "--ranks", "1"]) == 1
    assert "an all-reduce needs at least 2 ranks" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slurm
def test_slurm_two_nodes_strong_and_comm(tiny_dataset, tmp_path):
    out = tmp_path / "prof"
    slurm = ["--master-addr", "127.0.0.1"]
    assert main(["profile", "comm", "--out", str(out), "--executor", "slurm", "--nodes", "2",
                 "--tasks-per-node", "1", "--max-bytes", "16384", *slurm]) == 0
    assert json.loads((out / "comm.json").read_text())["fit"]["ranks"] == 2
    args = train_args(tiny_dataset, out, "slurm", "--nodes", "1,2", "--mode", "strong", *slurm,
                      "--set", "slurm.partition=debug", "--set", "slurm.tasks_per_node=1")
    assert main(args) == 0
    rows = read_csv(out / "scaling.csv")
    assert [(r["ranks"], r["nodes"], r["rank"]) for r in rows] == [("1", "1", "0"), ("2", "2", "0"),
                                                                   ("2", "2", "1")]
    two = ranks_json(out, "strong-r2")
    assert two["job"]["slurm"]["nodes"] == 2 and int(two["job_id"]) > 0
    assert all(r["micro_batch"] == 2 and r["world_size"] == 2 for r in two["records"])
    ids = json.loads((out / "environment.json").read_text())["slurm_job_ids"]
    assert set(ids) == {"strong-r1", "strong-r2"} and all(v.isdigit() for v in ids.values())

