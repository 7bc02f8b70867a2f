"""The report written from given per-rank records: scaling.csv's columns and units, scaling.md, the
projection validated against the alpha-beta fit in comm.json, plots, nothing half-written."""

from __future__ import annotations

import csv
import json

import pytest
from trainrun import TRAIN_JOB

from hpcdiff.config import load_config
from hpcdiff.profile.projection import load_interconnect, ring_allreduce_s
from hpcdiff.profile.report import PROJECTION_COLUMNS, SCALING_COLUMNS
from hpcdiff.profile.scaling import write_report
from hpcdiff.train.job import TrainJob

PARAMS = 250_000  # 1 MB of fp32 gradients


def steps(n: int, *, fwd: float, bwd: float, comm: float, opt: float = 2.0) -> list[dict]:
    step = {"data_wait_ms": 1.0, "forward_ms": fwd, "backward_ms": bwd, "allreduce_exposed_ms": comm,
            "optimizer_ms": opt, "other_ms": 3.0, "allreduce_total_ms": comm, "allreduce_bytes": PARAMS * 4}
    step["step_ms"] = sum(v for k, v in step.items() if k.endswith("_ms") and k != "allreduce_total_ms")
    return [dict(step) for _ in range(n)]


def done_point(mode: str, ranks: int, micro: int, *, fwd: float, bwd: float, comm: float) -> dict:
    records = [{"rank": r, "host": f"n{r + 1}", "samples_per_step": micro, "micro_batch": micro,
                "accum_steps": 1, "global_batch": micro * ranks, "parameters": PARAMS,
                "grad_bytes_per_element": 4,
                "peak_host_mb": 700.0, "peak_device_mb": 0.0, "device": "cpu", "backend": "gloo",
                "steps": steps(5, fwd=fwd, bwd=bwd, comm=comm)} for r in range(ranks)]
    return {"point": {"mode": mode, "ranks": ranks, "nodes": ranks}, "steps": 4, "job_id": f"{mode}{ranks}",
            "records": records}


@pytest.fixture
def job() -> TrainJob:
    return load_config(TrainJob, TRAIN_JOB)


def write_fit(out, *, alpha_s: float, beta: float) -> None:
    out.mkdir(exist_ok=True)
    (out / "comm.json").write_text(json.dumps({"fit": {"alpha_s": alpha_s, "beta_s_per_byte": beta,
                                                       "residual": 0.0, "ranks": 2}}))


def test_scaling_csv_columns_units_and_values(job, tmp_path):
    out = tmp_path / "prof"
    done = [done_point("weak", 1, 8, fwd=40.0, bwd=80.0, comm=0.0),
            done_point("weak", 2, 8, fwd=40.0, bwd=80.0, comm=10.0)]
    lines = write_report(job, out, done, modes=("weak",), warmup=1,
                         fabrics=[load_interconnect("4gpu-nvlink-ib200")])
    with (out / "scaling.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == SCALING_COLUMNS
    assert all(c.endswith(("_ms", "_mb", "_share", "_s_rank", "_s_total")) or c in (
        "mode", "ranks", "nodes", "rank", "host", "global_batch", "micro_batch", "accum_steps",
        "measured_steps", "straggler_spread", "slurm_job_id") for c in SCALING_COLUMNS)
    assert [(r["ranks"], r["rank"]) for r in rows] == [("1", "0"), ("2", "0"), ("2", "1")]
    two = rows[1]
    assert float(two["step_ms"]) == pytest.approx(1 + 40 + 80 + 10 + 2 + 3)  # milliseconds
    assert float(two["samples_per_s_rank"]) == pytest.approx(8 / 0.136)
    assert float(two["samples_per_s_total"]) == pytest.approx(16 / 0.136)
    assert float(two["comm_share"]) == pytest.approx(10 / 136)
    assert two["slurm_job_id"] == "weak2"
    with (out / "projection.csv").open() as fh:
        proj = list(csv.DictReader(fh))
    assert tuple(proj[0]) == PROJECTION_COLUMNS
    assert [int(r["gpus"]) for r in proj] == [2**k for k in range(11)]
    md = (out / "scaling.md").read_text()
    assert "| weak | 2 | 2 | 16 | 136.0 |" in md and "| 88% |" in md  # efficiency 126 / 136 ms
    assert "no single change" in md or "lifted there by" in md or "stays at or above" in md
    for png in ("scaling.png", "step_breakdown.png", "projection.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    env = json.loads((out / "environment.json").read_text())
    assert env["backends"] == ["gloo"] and env["hosts"] == ["n1", "n2"]
    assert env["slurm_job_ids"] == {"weak-r1": "weak1", "weak-r2": "weak2"}
    assert env["job"]["model"]["preset"] == "small"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert any("efficiency" in line for line in lines)


def test_validation_against_the_fitted_alpha_beta(job, tmp_path):
    out = tmp_path / "prof"
    alpha, beta = 4e-4, 2e-9
    comm_ms = ring_allreduce_s(PARAMS * 4, 2, alpha_s=alpha / 2, beta_s_per_byte=beta) * 1e3  # per hop
    write_fit(out, alpha_s=alpha, beta=beta)
    done = [done_point("strong", 1, 16, fwd=80.0, bwd=160.0, comm=0.0),
            done_point("strong", 2, 8, fwd=40.0, bwd=80.0, comm=comm_ms)]
    lines = write_report(job, out, done, modes=("strong",), warmup=0, fabrics=[])
    with (out / "validation.csv").open() as fh:
        rows = {int(r["ranks"]): r for r in csv.DictReader(fh)}
    assert float(rows[2]["predicted_exposed_comm_ms"]) == pytest.approx(comm_ms, rel=1e-4)
    # the 2-rank point is the 1-rank point's per-sample costs at half the batch plus the modelled comm,
    # except the fixed costs (optimizer, per-step 'other'), which the model scales per sample: 3 ms
    measured = 1 + 40 + 80 + comm_ms + 2 + 3
    predicted = (1 + 80 + 160 + 3) / 2 + 2 + comm_ms
    assert float(rows[2]["measured_step_ms"]) == pytest.approx(measured, rel=1e-4)
    assert float(rows[2]["predicted_step_ms"]) == pytest.approx(predicted, rel=1e-4)
    assert float(rows[2]["error"]) == pytest.approx(predicted / measured - 1, abs=1e-4)
    assert any("projection against the measured points" in line for line in lines)
    assert float(rows[2]["compute_ratio"]) == pytest.approx(1.0)  # the same per-sample compute
