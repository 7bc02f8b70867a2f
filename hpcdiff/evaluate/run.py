"""``hpcdiff evaluate SAMPLES.nc --dataset DATASET --out REPORT``: load the ensemble, the truth and the
baselines for the sample dates, score them, draw the figures, write the report folder atomically.

REPORT holds ``metrics.json`` (``{variable: {method: {metric: float}}}``, the common pixel support (land,
finite everywhere), all dates; methods
``model``, ``bilinear``, ``qm`` and, on synthetic worlds, ``oracle``), ``metrics_detail.json`` (``meta``
and, per variable, ``scores[region][season][method][metric]``, ``intervals``
(:mod:`hpcdiff.evaluate.bootstrap`), ``spatial`` (:mod:`hpcdiff.evaluate.spatial`), ``indices``
(:mod:`hpcdiff.evaluate.indices`) plus the curves of
:func:`hpcdiff.evaluate.diagnostics.variable_diagnostics`), ``evaluate.yaml`` (the resolved options),
the PNG figures, ``report.md`` and ``report.html``. A conditions-only dataset has no truth: the report
(:mod:`hpcdiff.evaluate.notruth`) says so and holds only what needs none.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hpcdiff import __version__
from hpcdiff.config import apply_overrides, dump_config, from_dict
from hpcdiff.data.manifest import Manifest, read_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.evaluate import baselines, bootstrap, indices, metrics, notruth, plots, qm, spatial
from hpcdiff.evaluate.diagnostics import variable_diagnostics
from hpcdiff.evaluate.report import detail_tables, write_reports
from hpcdiff.evaluate.samples import Samples, read_samples, replace_non_finite
from hpcdiff.evaluate.scores import season_index, variable_scores
from hpcdiff.evaluate.truth import Static, load_truth, read_static
from hpcdiff.fsutil import atomic_dir
from hpcdiff.provenance import provenance
from hpcdiff.variables import count_outside


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    oracle_members: int | None = None  # None: as many members as the samples have
    oracle_seed: int = 0
    map_dates: int = 3  # dates shown in the sample maps, evenly spread over the sample dates
    wet_threshold_kg_m2: float = 1.0  # a wet day has at least this much precipitation
    precipitation: list[str] = dataclasses.field(default_factory=lambda: ["tp"])  # precipitation targets
    qm_group: str = "season"  # quantile mapping per season or month
    qm_pooling: str = "pixel"  # one mapping per pixel, or one pooled over land (docs/evaluation.md)
    qm_quantiles: int = 50
    qm_training_stride: int = 1  # fit qm on every n-th training date (memory on large grids)
    bootstrap_reps: int = 1000
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        if self.oracle_members is not None and self.oracle_members < 1:
            raise ValueError("oracle_members must be at least 1")
        if self.oracle_seed < 0:
            raise ValueError("oracle_seed must be >= 0")
        if self.map_dates < 1:
            raise ValueError("map_dates must be at least 1")
        if not self.wet_threshold_kg_m2 > 0:
            raise ValueError("wet_threshold_kg_m2 must be positive")
        if self.qm_group not in qm.GROUPS:
            raise ValueError(f"qm_group must be one of {', '.join(qm.GROUPS)}")
        if self.qm_pooling not in qm.POOLINGS:
            raise ValueError(f"qm_pooling must be one of {', '.join(qm.POOLINGS)}")
        if self.qm_training_stride < 1:
            raise ValueError("qm_training_stride must be at least 1")
        if self.qm_quantiles < 2:
            raise ValueError("qm_quantiles must be at least 2")
        if self.bootstrap_reps < 100:
            raise ValueError("bootstrap_reps must be at least 100")


def evaluate_options(overrides: Sequence[str] = (), **flags: Any) -> EvaluateOptions:
    """Options from command-line flags (None: not given) and ``--set key=value`` overrides."""
    data = {key: value for key, value in flags.items() if value is not None}
    return from_dict(EvaluateOptions, apply_overrides(data, overrides), where="hpcdiff evaluate")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything scored: ``methods[variable][method]`` ``[T, M, H, W]`` and ``truth[variable]``
    ``[T, H, W]`` in physical units, for ``samples.dates``; ``support`` ``[H, W]`` the pixels every score
    counts (land, and the truth and every method finite on every date); ``training`` the training
    split's fields (the qm fit, the R95pTOT base)."""

    manifest: Manifest
    static: Static
    samples: Samples
    truth: dict[str, np.ndarray]
    methods: dict[str, dict[str, np.ndarray]]
    oracle_members: int | None
    outside_bounds: dict[str, int]  # sample values outside the variable's physical bounds (reported)
    support: np.ndarray
    training: qm.Training


def common_support(land: np.ndarray, truth: Mapping[str, np.ndarray],
                   methods: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
    """``[H, W]`` bool: land pixels where the truth and every method of every variable are finite on
    every date (and member)."""
    support = land.copy()
    for name, values in truth.items():
        support &= np.isfinite(values).all(axis=0)
        for ens in methods[name].values():
            support &= np.isfinite(ens).all(axis=(0, 1))
    return support


def load_inputs(samples_path: Path, dataset: Path, options: EvaluateOptions) -> Inputs:
    """Read and check the samples against ``dataset``; the truth, bilinear and (synthetic) oracle."""
    manifest = read_manifest(dataset)
    static = read_static(manifest)
    units = {c.name: c.units for c in manifest.targets}
    samples = read_samples(samples_path, variables=units, shape=manifest.grid.shape,
                           x=static.x, y=static.y)
    truth = load_truth(manifest, samples.dates)
    bilinear = baselines.bilinear(manifest, samples.dates)
    training = qm.read_training(manifest, stride=options.qm_training_stride)
    mapped = qm.qm_baseline(manifest, training, samples.dates, bilinear=bilinear, land=static.land,
                            group=options.qm_group, pooling=options.qm_pooling,
                            nquantiles=options.qm_quantiles)
    world = baselines.synthetic_world(manifest)
    oracle, members = {}, None
    if world is not None:
        baselines.check_world_truth(world, manifest, samples.dates, truth=truth)
        members = options.oracle_members or samples.members
        oracle = baselines.oracle(world, manifest, samples.dates, members=members, seed=options.oracle_seed)
    methods = {name: {"model": replace_non_finite(samples.fields[name], truth[name]),
                      **({"bilinear": bilinear[name]} if name in bilinear else {}),
                      **({"qm": mapped[name]} if name in mapped else {}),
                      **({"oracle": oracle[name]} if name in oracle else {})} for name in units}
    outside = {c.name: count_outside(samples.fields[c.name], c.bounds) for c in manifest.targets}
    support = common_support(static.land, truth, methods)
    if not support.any():
        raise HpcdiffError(f"{samples_path}: no land pixel where the truth and every method are finite on "
                           "every date; nothing to score")
    return Inputs(manifest=manifest, static=static, samples=samples, truth=truth, methods=methods,
                  oracle_members=members, outside_bounds=outside, support=support, training=training)


def per_date_errors(methods: Mapping[str, np.ndarray], obs: np.ndarray,
                    support: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """``{method: {"crps": [T], "se": [T]}}``: CRPS (the absolute error of a one-member method) and the
    squared error of the ensemble mean, each averaged over the support pixels of every date."""
    out = {}
    for name, ens in methods.items():
        crps = (np.abs(ens[:, 0, support] - obs[:, support]).mean(axis=1) if ens.shape[1] == 1
                else metrics.crps_per_date(ens, obs, support))
        error = ens.mean(axis=1, dtype=np.float64)[:, support] - obs[:, support]
        out[name] = {"crps": crps, "se": (error ** 2).mean(axis=1)}
    return out


def score_variable(inputs: Inputs, variable: str, options: EvaluateOptions) -> dict[str, Any]:
    """``metrics_detail.json`` entry of one variable: units, scores and curves."""
    methods, obs, support = inputs.methods[variable], inputs.truth[variable], inputs.support
    dates, precipitation = inputs.samples.dates, variable in options.precipitation
    scores = variable_scores(methods, obs, land=support, dates=dates, precipitation=precipitation,
                             wet_threshold=options.wet_threshold_kg_m2)
    units = next(c.units for c in inputs.manifest.targets if c.name == variable)
    intervals = bootstrap.score_intervals(per_date_errors(methods, obs, support), dates,
                                          reps=options.bootstrap_reps, seed=options.bootstrap_seed)
    return {"units": units, "scores": scores, "intervals": intervals,
            "spatial": spatial.spatial_scores(methods, obs, support=support, precipitation=precipitation),
            "indices": indices.climate_indices(methods, obs, dates=dates, support=support, variable=variable,
                                               train_truth=inputs.training.truth.get(variable)),
            **variable_diagnostics(methods, obs, land=support, dx_km=inputs.static.dx_km)}


def map_rows(n_dates: int, count: int) -> list[int]:
    """``count`` date indices evenly spread over ``n_dates`` (all of them when fewer)."""
    return sorted(set(np.linspace(0, n_dates - 1, min(count, n_dates)).round().astype(int).tolist()))


def draw_figures(folder: Path, inputs: Inputs, variable: str, *, detail: Mapping[str, Any],
                 options: EvaluateOptions) -> list[tuple[str, str]]:
    """The PNGs of one variable in ``folder``: ``[(caption, file name)]``."""
    units, methods = detail["units"], inputs.methods[variable]
    out = [(f"{variable}: sample maps", plots.plot_maps(
        folder / f"maps_{variable}.png", variable=variable, units=units, dates=inputs.samples.dates,
        truth=inputs.truth[variable], methods=methods, lsm=inputs.static.lsm,
        rows=map_rows(inputs.samples.dates.size, options.map_dates),
        precipitation=variable in options.precipitation))]
    out.append((f"{variable}: power spectra", plots.plot_spectra(
        folder / f"spectrum_{variable}.png", variable=variable, spectrum=detail["spectrum"])))
    if detail["rank_histogram"]["land"]:
        out.append((f"{variable}: rank histograms", plots.plot_rank_histograms(
            folder / f"rank_{variable}.png", variable=variable, ranks=detail["rank_histogram"]["land"])))
    out.append((f"{variable}: fractions skill score", plots.plot_fss(
        folder / f"fss_{variable}.png", variable=variable, units=units, spatial=detail["spatial"])))
    out.append((f"{variable}: intervals", plots.plot_intervals(
        folder / f"intervals_{variable}.png", variable=variable, units=units, intervals=detail["intervals"])))
    out.append((f"{variable}: distributions and Q–Q", plots.plot_distributions(
        folder / f"distribution_{variable}.png", variable=variable, units=units,
        histogram=detail["histogram"], quantiles=detail["quantiles"],
        log=variable in options.precipitation)))
    return [(caption, path.name) for caption, path in out]


def finite(value: Any) -> Any:
    """``value`` with NaN / inf replaced by None, recursively (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def meta(inputs: Inputs, dataset: Path, options: EvaluateOptions) -> dict[str, Any]:
    dates = inputs.samples.dates
    return {"hpcdiff_version": __version__, "provenance": provenance(),
            "samples": str(Path(inputs.samples.path).resolve()),
            "dataset": str(Path(dataset).resolve()), "dates": int(dates.size), "first_date": str(dates.min()),
            "last_date": str(dates.max()), "members": inputs.samples.members,
            "oracle_members": inputs.oracle_members,
            "oracle_seed": options.oracle_seed if inputs.oracle_members else None,
            "seasons": {k: int(v.size) for k, v in season_index(dates).items()},
            "land_pixels": int(inputs.static.land.sum()), "pixels": int(inputs.static.land.size),
            "support_pixels": int(inputs.support.sum()),
            "support": f"{int(inputs.support.sum())} of {int(inputs.static.land.sum())} land pixels (lsm > "
                       "0.5) where the truth and every method are finite on every date; every score counts "
                       "these pixels only",
            "qm": {"group": options.qm_group, "pooling": options.qm_pooling,
                   "quantiles": options.qm_quantiles, "training_stride": options.qm_training_stride,
                   "training_dates": int(inputs.training.dates.size)},
            "non_finite": inputs.samples.non_finite, "outside_bounds": inputs.outside_bounds,
            **inputs.samples.attrs}


def check_out(out: Path) -> None:
    """Refuse to replace something that is not an evaluation report (a safety net against ``--out ~``)."""
    if out.exists() and not (out / "metrics.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise HpcdiffError(f"{out}: exists and is not an evaluation report (no metrics.json); refusing to "
                           "replace it")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(finite(data), indent=1, allow_nan=False) + "\n")


def run_evaluate(samples: Path, dataset: Path, out: Path, *, options: EvaluateOptions | None = None,
                 progress: bool = True) -> Path:
    """Evaluate ``samples`` against ``dataset``; the report folder ``out`` appears complete or not at all
    (a rerun replaces it). Returns ``out``."""
    options, out = options or EvaluateOptions(), Path(out)
    check_out(out)
    manifest = read_manifest(dataset)
    if manifest.conditions_only:  # no truth: only what needs none (hpcdiff.evaluate.notruth)
        print(f"hpcdiff evaluate: {notruth.no_truth_line(manifest)}", file=sys.stderr)
        return notruth.run_without_truth(samples, manifest, out, options=options)
    inputs = load_inputs(samples, dataset, options)
    bad = {name: n for name, n in inputs.samples.non_finite.items() if n}
    if bad:
        print(f"hpcdiff evaluate: warning: {samples}: non-finite values (diverged samples?) replaced by the "
              f"truth's extremes: {bad}", file=sys.stderr)
    outside = {name: n for name, n in inputs.outside_bounds.items() if n}
    if outside:
        print(f"hpcdiff evaluate: warning: {samples}: values outside the variables' physical bounds "
              f"(scored as they are): {outside}", file=sys.stderr)
    detail: dict[str, Any] = {"meta": meta(inputs, dataset, options)}
    figures = {}
    with atomic_dir(out) as tmp:
        for variable in tqdm(inputs.methods, desc="evaluate", unit="variable", disable=not progress):
            detail[variable] = score_variable(inputs, variable, options)
            figures[variable] = draw_figures(tmp, inputs, variable, detail=detail[variable], options=options)
        headline = {v: detail[v]["scores"]["land"]["all"] for v in inputs.methods}
        write_json(tmp / "metrics.json", headline)
        write_json(tmp / "metrics_detail.json", detail)
        dump_config(options, tmp / "evaluate.yaml")
        units = {v: detail[v]["units"] for v in inputs.methods}
        tables = {v: detail_tables(finite(detail[v])) for v in inputs.methods}
        write_reports(tmp, finite(headline), meta=detail["meta"], figures=figures, units=units, tables=tables)
    return out
