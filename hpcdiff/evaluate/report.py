"""``report.md`` and ``report.html``: a headline table per variable (land, all dates) and the figures,
linked relatively (the report folder moves as one piece). Plain string building, no template engine.
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
    "Scores are over land pixels (lsm > 0.5) and all sample dates; `metrics_detail.json` holds all "
    "pixels, each season, rank histograms, spectra and quantiles.",
    "bias, rmse and mae are those of the ensemble mean; crps is the fair CRPS (the MAE for the one-member "
    "bilinear baseline); spread_skill is 1 for a calibrated ensemble (0 for a deterministic one).",
    "psd_high_ratio is the power of single members over the truth's in the upper half of wavenumbers, "
    "over the full domain (1: the right small-scale variability, < 1: too smooth).",
)

Figures = Mapping[str, Sequence[tuple[str, str]]]  # variable -> [(caption, file name in the report)]


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}"


def headline_rows(scores: Mapping[str, Mapping[str, float]]) -> tuple[list[str], list[list[str]]]:
    """``(methods, rows)``: one row per headline metric any method has, ``[metric, value, ...]``."""
    methods = list(scores)
    rows = [[metric, *(_number(scores[m].get(metric)) for m in methods)]
            for metric in HEADLINE if any(metric in scores[m] for m in methods)]
    return methods, rows


def _meta_lines(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    keys = ("samples", "dataset", "dates", "first_date", "last_date", "members", "oracle_members",
            "oracle_seed", "hpcdiff_run", "hpcdiff_checkpoint", "hpcdiff_sampler", "hpcdiff_steps")
    lines = [(k, str(meta[k])) for k in keys if k in meta]
    bad = {name: n for name, n in meta.get("non_finite", {}).items() if n}
    if bad:
        lines.append(("WARNING non-finite sample values (replaced by the truth's extremes)", str(bad)))
    outside = {name: n for name, n in meta.get("outside_bounds", {}).items() if n}
    if outside:
        lines.append(("WARNING sample values outside the physical bounds (scored as they are)", str(outside)))
    return lines


def render_markdown(headline: Mapping[str, Mapping[str, Mapping[str, float]]], *, meta: Mapping[str, Any],
                    figures: Figures, units: Mapping[str, str]) -> str:
    lines = ["# hpcdiff evaluation", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in _meta_lines(meta)] + [""]
    lines += [f"> {note}" for note in NOTES] + [""]
    for variable, scores in headline.items():
        methods, rows = headline_rows(scores)
        lines += [f"## {variable} [{units.get(variable, '')}]", "",
                  "| metric | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        lines += [f"![{caption}]({name})" for caption, name in figures.get(variable, ())] + [""]
    return "\n".join(lines)


def _html_table(methods: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in ("metric", *methods))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 8px;"
         "text-align:right}td:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}"
         ".note{color:#444;font-size:90%}")


def render_html(headline: Mapping[str, Mapping[str, Mapping[str, float]]], *, meta: Mapping[str, Any],
                figures: Figures, units: Mapping[str, str]) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>hpcdiff evaluation</title>"
             f"<style>{STYLE}</style></head><body><h1>hpcdiff evaluation</h1><ul>"]
    parts += [f"<li><b>{esc(k)}</b>: <code>{esc(v)}</code></li>" for k, v in _meta_lines(meta)]
    parts += ["</ul>"] + [f"<p class='note'>{esc(note)}</p>" for note in NOTES]
    for variable, scores in headline.items():
        parts.append(f"<h2>{esc(variable)} [{esc(units.get(variable, ''))}]</h2>")
        parts.append(_html_table(*headline_rows(scores)))
        parts += [f"<figure><img src='{esc(name)}' alt='{esc(caption)}'><figcaption>{esc(caption)}"
                  "</figcaption></figure>" for caption, name in figures.get(variable, ())]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(folder: Path, headline: Mapping, *, meta: Mapping[str, Any], figures: Figures,
                  units: Mapping[str, str]) -> list[Path]:
    """``report.md`` and ``report.html`` in ``folder``; the figures must already be there."""
    md = Path(folder) / "report.md"
    md.write_text(render_markdown(headline, meta=meta, figures=figures, units=units) + "\n")
    page = Path(folder) / "report.html"
    page.write_text(render_html(headline, meta=meta, figures=figures, units=units) + "\n")
    return [md, page]
