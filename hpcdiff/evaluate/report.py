"""``report.md`` and ``report.html``: per variable a headline table (the common pixel support, all
dates), the bootstrap intervals with the verdict against each baseline, the categorical scores, the
climate indices, and the figures, linked relatively (the report folder moves as one piece). Plain string
building, no template engine.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HEADLINE = ("crps", "crps_ratio_to_oracle", "bias", "rmse", "mae", "spread_skill", "psd_high_ratio",
            "truth_spatial_std", "wet_day_frequency", "wet_day_frequency_truth", "q99", "q99_truth", "q999",
            "q999_truth")
NOTES = (
    "Scores are over the common pixel support (land pixels, lsm > 0.5, where the truth and every method "
    "are finite on every date) and all sample dates; `metrics_detail.json` holds all pixels, each season, "
    "rank histograms, spectra, quantiles, FSS, categorical scores, indices and intervals.",
    "Methods: model; bilinear (the ERA5 field interpolated); qm (bilinear quantile-mapped onto the truth's "
    "distribution, fitted on the training split); oracle (draws from the exact law, synthetic worlds only).",
    "Intervals are 95 % block-bootstrap intervals over dates. The model beats a baseline beyond the "
    "interval when the whole interval of (model − baseline) CRPS lies below 0.",
    "bias, rmse and mae are those of the ensemble mean; crps is the fair CRPS (the MAE for the one-member "
    "bilinear and qm baselines); spread_skill is 1 for a calibrated ensemble (0 for a deterministic one).",
    "psd_high_ratio is the power of single members over the truth's in the upper half of wavenumbers, "
    "over the full domain (1: the right small-scale variability, < 1: too smooth).",
)

Figures = Mapping[str, Sequence[tuple[str, str]]]  # variable -> [(caption, file name in the report)]
Table = tuple[str, list[str], list[list[str]]]  # (title, header, rows)


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}"


def headline_rows(scores: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[list[str]]]:
    """``(methods, rows)``: one row per headline metric any method has, ``[metric, value, ...]``."""
    methods = list(scores)
    rows = [[metric, *(_number(scores[m].get(metric)) for m in methods)]
            for metric in HEADLINE if any(metric in scores[m] for m in methods)]
    return methods, rows


def _range(entry: Mapping[str, Any]) -> str:
    return f"{_number(entry['value'])} [{_number(entry['lo'])}, {_number(entry['hi'])}]"


def interval_tables(intervals: Mapping[str, Any]) -> list[Table]:
    """The scores with their intervals, and the model-minus-baseline differences with the verdicts."""
    level = f"{intervals['level']:.0%}"
    methods = [[name, _range(v["crps"]), _range(v["rmse"])] for name, v in intervals["methods"].items()]
    differences = [[name, _range(v["crps"]), _range(v["rmse"]), v["verdict"]]
                   for name, v in intervals["differences"].items()]
    note = f"{level} intervals, block bootstrap over dates ({intervals['block_days']}-day blocks, " \
           f"{intervals['reps']} resamples)"
    return [(f"Scores with {note}", ["method", "crps", "rmse"], methods),
            ("Model minus baseline (negative: the model is better)",
             ["difference", "crps", "rmse", "verdict"], differences)]


def categorical_table(spatial: Mapping[str, Any]) -> list[Table]:
    """POD / FAR / CSI per method and threshold (precipitation only)."""
    table = spatial.get("categorical")
    if not table:
        return []
    rows = [[name, threshold, *(_number(v[k]) for k in ("pod", "far", "csi", "frequency_bias"))]
            for name, by_threshold in table.items() for threshold, v in by_threshold.items()]
    return [("Categorical scores (events >= threshold, members pooled)",
             ["method", "threshold", "POD", "FAR", "CSI", "frequency bias"], rows)]


def indices_table(entry: Mapping[str, Any]) -> list[Table]:
    """Per index: the truth's mean, each method's bias and how often the truth lies within its range."""
    found = entry.get("indices")
    if not found:
        return []
    methods = list(next(iter(found.values())))
    rows = [[index, _number(next(iter(v.values()))["truth_mean"]),
             *(f"{_number(v[m]['bias'])} ({_number(v[m]['in_range'])})" for m in methods)]
            for index, v in found.items()]
    return [(f"Climate indices: bias (truth within the members' range). {entry['period']}",
             ["index", "truth", *methods], rows)]


def detail_tables(detail: Mapping[str, Any]) -> list[Table]:
    """Every table of one variable's ``metrics_detail.json`` entry beyond the headline."""
    return [*interval_tables(detail["intervals"]), *categorical_table(detail["spatial"]),
            *indices_table(detail["indices"])]


def _meta_lines(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    keys = ("samples", "dataset", "dates", "first_date", "last_date", "members", "oracle_members",
            "oracle_seed", "support", "qm", "hpcdiff_run", "hpcdiff_checkpoint", "hpcdiff_sampler",
            "hpcdiff_steps")
    lines = [(k, str(meta[k])) for k in keys if k in meta]
    bad = {name: n for name, n in meta.get("non_finite", {}).items() if n}
    if bad:
        lines.append(("WARNING non-finite sample values (replaced by the truth's extremes)", str(bad)))
    outside = {name: n for name, n in meta.get("outside_bounds", {}).items() if n}
    if outside:
        lines.append(("WARNING sample values outside the physical bounds (scored as they are)", str(outside)))
    return lines


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def render_markdown(headline: Mapping[str, Mapping[str, Mapping[str, float]]], *, meta: Mapping[str, Any],
                    figures: Figures, units: Mapping[str, str],
                    tables: Mapping[str, Sequence[Table]] | None = None) -> str:
    lines = ["# hpcdiff evaluation", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in _meta_lines(meta)] + [""]
    lines += [f"> {note}" for note in NOTES] + [""]
    for variable, scores in headline.items():
        methods, rows = headline_rows(scores)
        lines += [f"## {variable} [{units.get(variable, '')}]", "",
                  "| metric | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        for title, header, body in (tables or {}).get(variable, ()):
            lines += [f"**{title}**", "", *_markdown_table(header, body)]
        lines += [f"![{caption}]({name})" for caption, name in figures.get(variable, ())] + [""]
    return "\n".join(lines)


def _html_table(methods: Sequence[str], rows: Sequence[Sequence[str]], *, first: str = "metric") -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in (first, *methods))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 8px;"
         "text-align:right}td:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}"
         ".note{color:#444;font-size:90%}")


def render_html(headline: Mapping[str, Mapping[str, Mapping[str, float]]], *, meta: Mapping[str, Any],
                figures: Figures, units: Mapping[str, str],
                tables: Mapping[str, Sequence[Table]] | None = None) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>hpcdiff evaluation</title>"
             f"<style>{STYLE}</style></head><body><h1>hpcdiff evaluation</h1><ul>"]
    parts += [f"<li><b>{esc(k)}</b>: <code>{esc(v)}</code></li>" for k, v in _meta_lines(meta)]
    parts += ["</ul>"] + [f"<p class='note'>{esc(note)}</p>" for note in NOTES]
    for variable, scores in headline.items():
        parts.append(f"<h2>{esc(variable)} [{esc(units.get(variable, ''))}]</h2>")
        parts.append(_html_table(*headline_rows(scores)))
        for title, header, body in (tables or {}).get(variable, ()):
            parts.append(f"<p><b>{esc(title)}</b></p>" + _html_table(header[1:], body, first=header[0]))
        parts += [f"<figure><img src='{esc(name)}' alt='{esc(caption)}'><figcaption>{esc(caption)}"
                  "</figcaption></figure>" for caption, name in figures.get(variable, ())]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(folder: Path, headline: Mapping, *, meta: Mapping[str, Any], figures: Figures,
                  units: Mapping[str, str],
                  tables: Mapping[str, Sequence[Table]] | None = None) -> list[Path]:
    """``report.md`` and ``report.html`` in ``folder``; the figures must already be there."""
    md = Path(folder) / "report.md"
    md.write_text(render_markdown(headline, meta=meta, figures=figures, units=units, tables=tables) + "\n")
    page = Path(folder) / "report.html"
    page.write_text(render_html(headline, meta=meta, figures=figures, units=units, tables=tables) + "\n")
    return [md, page]
