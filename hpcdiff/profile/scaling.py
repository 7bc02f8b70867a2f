"""``hpcdiff profile train`` end to end: run the points, summarize, project, validate, write ``PROFILE/``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpcdiff.config import to_dict
from hpcdiff.profile import plots, report
from hpcdiff.profile import projection as proj
from hpcdiff.profile.metrics import scaling_table
from hpcdiff.profile.runner import TrainProfileOptions, bucket_bytes, overlaps, run_points
from hpcdiff.train.job import TrainJob

DEFAULT_INTERCONNECTS = ("4gpu-nvlink-ib200", "8gpu-nvlink-4xib200")


def profile_train(job: TrainJob, out: Path, opts: TrainProfileOptions, *,
                  interconnects: Sequence[str] = DEFAULT_INTERCONNECTS) -> list[str]:
    """Run every point and write the report; returns the lines to print (table, validation, advice)."""
    fabrics = [proj.load_interconnect(name) for name in interconnects]  # refuse a bad name before running
    done = run_points(job, Path(out), opts)
    return write_report(job, Path(out), done, modes=opts.modes, warmup=opts.warmup, fabrics=fabrics)


def write_report(job: TrainJob, out: Path, done: Sequence[dict[str, Any]], *, modes: Sequence[str],
                 warmup: int, fabrics: Sequence[proj.Interconnect]) -> list[str]:
    """Summarize the points' records (``ranks.json`` of every point), project, validate against the
    α–β fit in ``out/comm.json`` if there is one, and write the report into ``out``."""
    points = report.summarize(done, warmup=warmup)
    table = scaling_table(points)
    first = done[0]["records"][0]
    bucket = bucket_bytes(job, int(first["grad_bytes_per_element"]))
    models = {}
    for mode in modes:
        base = min((p for p in points if p.mode == mode), key=lambda p: p.ranks)
        rec = next(d for d in done if d["point"]["mode"] == mode and d["point"]["ranks"] == base.ranks)
        models[mode] = report.step_model(base, rec["records"][0], bucket_bytes=bucket, overlap=overlaps(job),
                                         shard_optimizer=job.train.zero_stage > 0)
    fit = report.fit_from(out)
    measured_ic = proj.Interconnect.from_fit(fit) if fit is not None else None
    validation = report.validate(points, models, measured_ic) if measured_ic else []
    curves, advice = _projections(points, models, [*([measured_ic] if measured_ic else []), *fabrics])
    _write(out, job, done, points, table, validation, curves, advice, fit)
    return _summary_lines(out, table, validation, advice, fit)


def _projections(points: Sequence[Any], models: dict[str, proj.StepModel],
                 fabrics: Sequence[proj.Interconnect]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    curves, advice = {}, []
    for mode, model in models.items():
        base = min((p for p in points if p.mode == mode), key=lambda p: p.ranks)
        setting = report.setting_of(base)
        for ic in fabrics:
            rows = proj.project(model, setting, ic)
            curves[f"{mode}, {ic.name}"] = rows
            advice.append(proj.advice(model, setting, ic, rows))
    return curves, advice


def _write(out: Path, job: TrainJob, done: Sequence[dict[str, Any]], points: Sequence[Any],
           table: list[dict[str, Any]], validation: list[dict[str, Any]],
           curves: dict[str, list[dict[str, Any]]], advice: list[str], fit: Any) -> None:
    report.write_csv(out / "scaling.csv", report.scaling_rows(points, done), report.SCALING_COLUMNS)
    fabric = f"α–β fitted by `hpcdiff profile comm` on {fit.ranks} ranks" if fit else ""
    text = report.scaling_markdown(table, validation, fabric=fabric, advice=advice, curves=curves)
    report.write_text(out / "scaling.md", text)
    report.write_csv(out / "projection.csv", [r for rows in curves.values() for r in rows],
                     report.PROJECTION_COLUMNS)
    if validation:
        report.write_csv(out / "validation.csv", validation, list(validation[0]))
    report.write_json(out / "environment.json", report.environment(to_dict(job), done, extra=_nccl()))
    plots.throughput_efficiency(table, out / "scaling.png")
    plots.step_breakdown(points, out / "step_breakdown.png")
    plots.projection_curves(curves, table, out / "projection.png")


def _nccl() -> dict[str, Any]:
    try:
        import torch

        if torch.cuda.is_available():
            return {"nccl": ".".join(str(v) for v in torch.cuda.nccl.version())}
    except (ImportError, RuntimeError, AttributeError):
        pass
    return {"nccl": None}


def _summary_lines(out: Path, table: list[dict[str, Any]], validation: list[dict[str, Any]],
                   advice: list[str], fit: Any) -> list[str]:
    lines = [report.markdown_table(table, report.SCALING_MD[:10])]
    if validation:
        lines += ["projection against the measured points:",
                  report.markdown_table(validation, report.VALIDATION_MD)]
    else:
        print(f"hpcdiff profile: no {out / 'comm.json'}: run `hpcdiff profile comm --out {out}` first to "
              "validate the projection against these points", file=sys.stderr)
    lines += advice
    lines.append(f"report in {out} (scaling.md, scaling.csv, projection.csv, environment.json, *.png)")
    return lines
