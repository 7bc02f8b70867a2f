"""``PROFILE/``: scaling.csv, scaling.md, projection.csv, environment.json and PNG plots, each written
atomically (a temporary next to it, renamed when complete)."""

from __future__ import annotations

import csv
import json
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from hpcdiff.fsutil import atomic_file
from hpcdiff.profile import projection as proj
from hpcdiff.profile.commfit import AlphaBeta
from hpcdiff.profile.metrics import PHASES, PointSummary, summarize_rank
from hpcdiff.provenance import provenance

# scaling.csv: one row per point and rank; units in the names (ms, samples/s, MB, shares in [0, 1]).
SCALING_COLUMNS = ("mode", "ranks", "nodes", "rank", "host", "global_batch", "micro_batch", "accum_steps",
                   "measured_steps", *PHASES, "allreduce_total_ms", "samples_per_s_rank",
                   "samples_per_s_total", "comm_share", "data_wait_share", "straggler_spread",
                   "peak_host_mb", "peak_device_mb", "slurm_job_id")
PROJECTION_COLUMNS = ("mode", "interconnect", "gpus", "nodes", "micro_batch", "accum_steps", "global_batch",
                      "step_ms", "comm_ms", "exposed_comm_ms", "samples_per_s", "efficiency")


def summarize(done: Sequence[dict[str, Any]], *, warmup: int) -> list[PointSummary]:
    out = []
    for d in done:
        p, first = d["point"], d["records"][0]
        out.append(PointSummary(mode=p["mode"], ranks=p["ranks"], nodes=p["nodes"],
                                global_batch=first["global_batch"], micro_batch=first["micro_batch"],
                                accum_steps=first["accum_steps"],
                                per_rank=[summarize_rank(r, warmup=warmup) for r in d["records"]]))
    return out


def scaling_rows(points: Sequence[PointSummary], done: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for p, d in zip(points, done, strict=True):
        for r in p.per_rank:
            rows.append({"mode": p.mode, "ranks": p.ranks, "nodes": p.nodes, "rank": r.rank, "host": r.host,
                         "global_batch": p.global_batch, "micro_batch": p.micro_batch,
                         "accum_steps": p.accum_steps, "measured_steps": d["steps"], **r.phases,
                         "allreduce_total_ms": r.allreduce_total_ms, "samples_per_s_rank": r.samples_per_s,
                         "samples_per_s_total": p.samples_per_s,
                         "comm_share": r.phases["allreduce_exposed_ms"] / r.phases["step_ms"],
                         "data_wait_share": r.phases["data_wait_ms"] / r.phases["step_ms"],
                         "straggler_spread": p.spread, "peak_host_mb": r.peak_host_mb,
                         "peak_device_mb": r.peak_device_mb, "slurm_job_id": d.get("job_id", "")})
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    with atomic_file(path, suffix=".csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()
                             if k in columns})
    return path


def write_text(path: Path, text: str) -> Path:
    with atomic_file(path, suffix=path.suffix) as tmp:
        tmp.write_text(text)
    return path


def step_model(point: PointSummary, record: dict[str, Any], *, bucket_bytes: int, overlap: bool,
               shard_optimizer: bool = False) -> proj.StepModel:
    """The projection's per-sample costs, from one measured point (its median rank)."""
    samples = point.micro_batch * point.accum_steps
    grad_bytes = int(record["parameters"]) * int(record["grad_bytes_per_element"])
    return proj.StepModel(
        forward_s_per_sample=point.phase("forward_ms") / 1e3 / samples,
        backward_s_per_sample=point.phase("backward_ms") / 1e3 / samples,
        other_s_per_sample=(point.phase("data_wait_ms") + point.phase("other_ms")) / 1e3 / samples,
        optimizer_s=point.phase("optimizer_ms") / 1e3 * (point.ranks if shard_optimizer else 1),
        grad_bytes=grad_bytes, bucket_bytes=bucket_bytes, overlap=overlap, shard_optimizer=shard_optimizer)


def setting_of(point: PointSummary) -> proj.Setting:
    if point.mode == "weak":
        return proj.Setting("weak", micro_batch=point.micro_batch, accum_steps=point.accum_steps)
    micro = point.micro_batch if point.accum_steps > 1 else point.global_batch  # the job's cap, if it set one
    return proj.Setting("strong", micro_batch=micro, global_batch=point.global_batch)


def validate(points: Sequence[PointSummary], models: dict[str, proj.StepModel],
             ic: proj.Interconnect) -> list[dict[str, Any]]:
    """Predicted against measured step time and samples/s at every measured point."""
    rows = []
    for p in points:
        setting = setting_of(p)
        batch = setting.batch_at(p.ranks)
        assert batch is not None
        model = models[p.mode]
        pred = model.predict(p.ranks, micro_batch=batch[0], accum_steps=batch[1], ic=ic)
        compute = (p.phase("forward_ms") + p.phase("backward_ms")) / (p.micro_batch * p.accum_steps)
        model_compute = (model.forward_s_per_sample + model.backward_s_per_sample) * 1e3
        rows.append({"mode": p.mode, "ranks": p.ranks, "measured_step_ms": p.step_ms,
                     "predicted_step_ms": pred["step_s"] * 1e3,
                     "measured_exposed_comm_ms": p.phase("allreduce_exposed_ms"),
                     "predicted_exposed_comm_ms": pred["exposed_s"] * 1e3,
                     "measured_samples_per_s": p.samples_per_s,
                     "predicted_samples_per_s": pred["samples_per_s"],
                     "error": pred["step_s"] * 1e3 / p.step_ms - 1.0,
                     # forward + backward per sample against the model's: how far compute itself moved
                     # (cores shared with other ranks or jobs), which no communication model predicts
                     "compute_ratio": compute / model_compute})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---:" for _ in columns) + "|"
    body = ["| " + " | ".join(format(r[k], f) if f else str(r[k]) for k, _, f in columns) + " |"
            for r in rows]
    return "\n".join([head, rule, *body])


SCALING_MD = (("mode", "mode", ""), ("ranks", "ranks", ""), ("nodes", "nodes", ""),
              ("global_batch", "global batch", ""), ("step_ms", "step ms", ".1f"),
              ("samples_per_s", "samples/s", ".2f"), ("speedup", "speed-up", ".2f"),
              ("efficiency", "efficiency", ".0%"), ("comm_share", "comm share", ".1%"),
              ("data_wait_share", "data-wait share", ".1%"), ("straggler_spread", "straggler spread", ".2f"),
              ("peak_host_mb", "peak host MB", ".0f"), ("peak_device_mb", "peak device MB", ".0f"))
VALIDATION_MD = (("mode", "mode", ""), ("ranks", "ranks", ""),
                 ("measured_step_ms", "measured step ms", ".1f"),
                 ("predicted_step_ms", "predicted step ms", ".1f"),
                 ("measured_exposed_comm_ms", "measured exposed comm ms", ".2f"),
                 ("predicted_exposed_comm_ms", "predicted exposed comm ms", ".2f"),
                 ("error", "error", "+.1%"), ("compute_ratio", "compute per sample vs model", ".2f"))
PROJECTION_MD = (("gpus", "GPUs", ""), ("nodes", "nodes", ""), ("global_batch", "global batch", ".0f"),
                 ("step_ms", "step ms", ".1f"), ("exposed_comm_ms", "exposed comm ms", ".2f"),
                 ("samples_per_s", "samples/s", ".1f"), ("efficiency", "efficiency", ".0%"))


def scaling_markdown(table: Sequence[dict[str, Any]], validation: Sequence[dict[str, Any]], *,
                     fabric: str, advice: Sequence[str], curves: dict[str, list[dict[str, Any]]]) -> str:
    parts = ["# Scaling profile", "",
             "Speed-up and efficiency are against each mode's smallest point; efficiency = speed-up / "
             "(ranks / base ranks). Step time is the slowest rank's (median over measured steps); comm "
             "share is the exposed gradient all-reduce (DeepSpeed's `bwd_allreduce` timer) over the step.",
             "", markdown_table(table, SCALING_MD), ""]
    if validation:
        parts += [f"## Projection against the measured points ({fabric})", "",
                  "Each mode's model is calibrated on its smallest point (whose error is then the "
                  "communication term alone); error = predicted / measured step time - 1.", "",
                  markdown_table(validation, VALIDATION_MD), ""]
    parts += ["## Projection to 1 ... 1024 GPUs", ""] + [f"- {line}" for line in advice] + [""]
    for key, rows in curves.items():
        parts += [f"### {key}", "", markdown_table(rows, PROJECTION_MD), ""]
    return "\n".join(parts)


def environment(job_dict: dict[str, Any], done: Sequence[dict[str, Any]], *,
                extra: dict[str, Any]) -> dict[str, Any]:
    records = [r for d in done for r in d["records"]]
    versions = {}
    for pkg in ("torch", "deepspeed", "mpi4py", "mpich", "submitit", "HolisticTraceAnalysis"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"provenance": provenance(), "versions": versions, "python": platform.python_version(),
            "backends": sorted({r["backend"] for r in records}), "nccl": extra.get("nccl"),
            "hosts": sorted({r["host"] for r in records}), "devices": sorted({r["device"] for r in records}),
            "slurm_job_ids": {d["point"]["mode"] + f"-r{d['point']['ranks']}": d.get("job_id") for d in done},
            "job": job_dict, **{k: v for k, v in extra.items() if k != "nccl"}}


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def fit_from(out: Path) -> AlphaBeta | None:
    """The α–β fit of ``hpcdiff profile comm`` in the same folder, if it ran there."""
    path = out / "comm.json"
    if not path.is_file():
        return None
    fit = json.loads(path.read_text())["fit"]
    return AlphaBeta(**{k: fit[k] for k in ("alpha_s", "beta_s_per_byte", "residual", "ranks")})
