"""Evaluation of samples of a conditions-only dataset (:mod:`hpcdiff.data.conditions_only`): there is no
truth, so no skill score (CRPS, bias, RMSE, spread–skill, rank histograms, Q–Q against the truth) can be
computed. The report says so and gives only what needs no truth, over land (lsm > 0.5) and all sample dates:

- per method (``model``: the ensemble; ``bilinear``: the ERA5 condition of the same name, regridded, as
  the preprocessing gave it to the network): mean, standard deviation, 1 / 50 / 99 % quantiles, minimum,
  maximum of the pooled finite values; for precipitation the wet-day frequency;
- for the model: the ensemble spread (square root of the mean member variance), and the counts of
  non-finite values and of values outside the variable's physical bounds;
- in ``metrics_detail.json``: the radially averaged power spectra of single members and of bilinear.

The report folder has the same files as one with truth, but for the figures: ``metrics.json``
(``{variable: {method: {metric: value}}}``), ``metrics_detail.json`` (``meta`` with ``truth: false``),
``evaluate.yaml``, ``report.md`` and ``report.html``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcdiff import __version__
from hpcdiff.config import dump_config
from hpcdiff.data.manifest import Manifest
from hpcdiff.data.transforms import Bounds
from hpcdiff.evaluate import baselines, metrics
from hpcdiff.evaluate.samples import Samples, read_samples
from hpcdiff.evaluate.truth import Static, read_static
from hpcdiff.fsutil import atomic_dir
from hpcdiff.provenance import provenance
from hpcdiff.timeaxis import iso_dates, to_days
from hpcdiff.variables import count_outside

if TYPE_CHECKING:
    from hpcdiff.evaluate.run import EvaluateOptions

QUANTILES = {"q01": 0.01, "q50": 0.5, "q99": 0.99}


def no_truth_line(manifest: Manifest) -> str:
    """What the command says about a conditions-only dataset, on one line."""
    source = manifest.normalization_from.dataset if manifest.normalization_from else "?"
    return (f"{manifest.root} is a conditions-only dataset (normalization of {source}): there is no truth "
            "to score against; reporting only what needs none (value statistics, ensemble spread, bounds, "
            "spectra), no skill scores")


def value_stats(values: np.ndarray, land: np.ndarray, *, precipitation: bool, wet_threshold: float) -> dict:
    """Statistics of the finite land values of ``values`` ``[T, M, H, W]`` (pooled over members)."""
    pooled = values[..., land].astype(np.float64).ravel()
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        return {}
    out = {"mean": float(pooled.mean()), "std": float(pooled.std()), "min": float(pooled.min()),
           "max": float(pooled.max())}
    out.update({name: float(q) for name, q in zip(QUANTILES, np.quantile(pooled, list(QUANTILES.values())),
                                                  strict=True)})
    if precipitation:
        out["wet_day_frequency"] = float((pooled >= wet_threshold).mean())
    return out


def spread(ens: np.ndarray, land: np.ndarray) -> float | None:
    """Square root of the mean member variance over land (``None`` for one member)."""
    if ens.shape[1] < 2:
        return None
    return float(np.sqrt(np.nanmean(np.nanvar(ens[..., land].astype(np.float64), axis=1, ddof=1))))


def variable_report(name: str, methods: Mapping[str, np.ndarray], *, static: Static,
                    options: EvaluateOptions, bounds: Bounds, units: str) -> tuple[dict, dict]:
    """``(metrics.json entry, metrics_detail.json entry)`` of one variable."""
    land, precipitation = static.land, name in options.precipitation
    headline = {method: value_stats(values, land, precipitation=precipitation,
                                    wet_threshold=options.wet_threshold_kg_m2)
                for method, values in methods.items()}
    model = methods["model"]
    headline["model"].update({"spread": spread(model, land),
                              "non_finite": int(model.size - np.isfinite(model).sum()),
                              "outside_bounds": count_outside(model, bounds)})
    spectra = {method: metrics.radial_psd(np.nan_to_num(values), dx_km=static.dx_km)
               for method, values in methods.items()}
    k = next(iter(spectra.values()))[0]
    detail = {"units": units, "scores": {"land": {"all": headline}},
              "spectrum": {"k_cycles_per_km": k.tolist(),
                           "psd": {method: psd.tolist() for method, (_, psd) in spectra.items()}}}
    return headline, detail


def run_without_truth(samples_path: Path, manifest: Manifest, out: Path, *, options: EvaluateOptions) -> Path:
    """Write the truth-free report of ``samples_path`` (sampled from the conditions-only ``manifest``'s
    dataset) to ``out``, atomically; returns ``out``."""
    static = read_static(manifest)
    units = {c.name: c.units for c in manifest.targets}
    samples = read_samples(samples_path, variables=units, shape=manifest.grid.shape, x=static.x, y=static.y)
    bilinear = baselines.bilinear(manifest, samples.dates)
    headline, detail = {}, {"meta": meta(samples, manifest)}
    for channel in manifest.targets:
        methods = {"model": samples.fields[channel.name],
                   **({"bilinear": bilinear[channel.name]} if channel.name in bilinear else {})}
        headline[channel.name], detail[channel.name] = variable_report(
            channel.name, methods, static=static, options=options, bounds=channel.bounds, units=channel.units)
    with atomic_dir(Path(out)) as tmp:
        write_json(tmp / "metrics.json", headline)
        write_json(tmp / "metrics_detail.json", detail)
        dump_config(options, tmp / "evaluate.yaml")
        (tmp / "report.md").write_text(markdown(headline, detail["meta"], units) + "\n")
        (tmp / "report.html").write_text(page(headline, detail["meta"], units) + "\n")
    return Path(out)


def meta(samples: Samples, manifest: Manifest) -> dict[str, Any]:
    dates = samples.dates
    return {"hpcdiff_version": __version__, "provenance": provenance(), "truth": False,
            "note": no_truth_line(manifest), "samples": str(Path(samples.path).resolve()),
            "dataset": str(Path(manifest.root).resolve()),
            "normalization_from": (manifest.normalization_from.dataset if manifest.normalization_from
                                   else None),
            "dates": int(dates.size), "calendar": manifest.calendar,
            "first_date": iso_dates(to_days(dates.min()), manifest.calendar)[0],
            "last_date": iso_dates(to_days(dates.max()), manifest.calendar)[0],
            "members": samples.members, "non_finite": samples.non_finite, **samples.attrs}


def _finite(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_finite(data), indent=1, allow_nan=False) + "\n")


def _rows(scores: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    methods = list(scores)
    names = list(dict.fromkeys(k for m in methods for k in scores[m]))
    rows = [[name, *(_cell(scores[m].get(name)) for m in methods)] for name in names]
    return methods, rows


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}"


def markdown(headline: Mapping, info: Mapping[str, Any], units: Mapping[str, str]) -> str:
    lines = ["# hpcdiff evaluation (no truth)", "", f"> {info['note']}.", ""]
    lines += [f"- **{k}**: `{info[k]}`" for k in ("samples", "dataset", "normalization_from", "dates",
                                                 "calendar", "first_date", "last_date", "members")] + [""]
    for variable, scores in headline.items():
        methods, rows = _rows(scores)
        lines += [f"## {variable} [{units.get(variable, '')}] (land, all dates)", "",
                  "| statistic | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def page(headline: Mapping, info: Mapping[str, Any], units: Mapping[str, str]) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>hpcdiff evaluation (no truth)</title>"
             "</head><body><h1>hpcdiff evaluation (no truth)</h1>", f"<p><b>{esc(info['note'])}.</b></p>"]
    for variable, scores in headline.items():
        methods, rows = _rows(scores)
        head = "".join(f"<th>{esc(m)}</th>" for m in ("statistic", *methods))
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
        parts.append(f"<h2>{esc(variable)} [{esc(units.get(variable, ''))}] (land, all dates)</h2>"
                     f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join([*parts, "</body></html>"])
