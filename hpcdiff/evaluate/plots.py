"""PNG figures of an evaluation, drawn with matplotlib's object API on the Agg canvas (no pyplot, no
global backend state, no display needed). Every function writes one file and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

COLORS = {"truth": "black", "model": "tab:blue", "bilinear": "tab:green", "qm": "tab:purple",
          "oracle": "tab:orange"}
CMAPS = {"t2m": "RdYlBu_r", "tp": "Blues", "e": "BrBG"}
DPI = 90


def _figure(width: float, height: float) -> Figure:
    # fixed margins (subplots_adjust): an automatic layout engine triples the drawing time
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.15, top=0.88, wspace=0.3)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def map_panels(truth: np.ndarray, methods: Mapping[str, np.ndarray], t: int) -> list[tuple[str, np.ndarray]]:
    """``(title, field [H, W])`` for date index ``t``: truth, two model members, the model's ensemble
    mean, the bilinear field and an oracle member (those that exist)."""
    panels = [("truth", truth[t])]
    model = methods.get("model")
    if model is not None:
        panels += [(f"model member {m}", model[t, m]) for m in range(min(2, model.shape[1]))]
        panels.append(("model ensemble mean", model[t].mean(axis=0)))
    if "bilinear" in methods:
        panels.append(("bilinear", methods["bilinear"][t, 0]))
    if "oracle" in methods:
        panels.append(("oracle member 0", methods["oracle"][t, 0]))
    return panels


def plot_maps(path: Path, *, variable: str, units: str, dates: np.ndarray, truth: np.ndarray,
              methods: Mapping[str, np.ndarray], lsm: np.ndarray, rows: Sequence[int],
              precipitation: bool = False) -> Path:
    """Sample maps: one row per date index in ``rows``, one colour scale per row (the truth's 0.5th..99.5th
    percentiles; 0..max for precipitation), the coastline (lsm = 0.5) drawn on every panel."""
    n_cols = len(map_panels(truth, methods, rows[0]))
    height = 2.3 * len(rows) + 0.7
    fig = _figure(2.1 * n_cols + 0.8, height)
    fig.subplots_adjust(left=0.01, right=0.93, bottom=0.02, top=1 - 0.75 / height, wspace=0.08, hspace=0.3)
    axes = fig.subplots(len(rows), n_cols + 1, squeeze=False,
                        gridspec_kw={"width_ratios": [1.0] * n_cols + [0.07]})  # last column: colour bars
    for r, t in enumerate(rows):
        lo, hi = np.percentile(truth[t], [0.5, 99.5])
        lo, hi = (0.0, max(truth[t].max(), 1e-6)) if precipitation else (lo, hi if hi > lo else lo + 1.0)
        for c, (title, field) in enumerate(map_panels(truth, methods, t)):
            ax = axes[r, c]
            image = ax.imshow(field, origin="lower", cmap=CMAPS.get(variable, "viridis"), vmin=lo, vmax=hi)
            ax.contour(lsm, levels=[0.5], colors="0.3", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}\n{dates[t]}" if c == 0 else title, fontsize=8)
        fig.colorbar(image, cax=axes[r, -1], label=f"{variable} [{units}]")
    fig.suptitle(f"{variable}: sample maps")
    return _save(fig, path)


def plot_spectra(path: Path, *, variable: str, spectrum: Mapping) -> Path:
    """Log–log radially averaged power spectra, and each method's ratio to the truth's."""
    k = np.asarray(spectrum["k_cycles_per_km"])
    truth = np.asarray(spectrum["psd"]["truth"])
    fig = _figure(9.0, 3.6)
    ax_psd, ax_ratio = fig.subplots(1, 2)
    for name, psd in spectrum["psd"].items():
        psd = np.asarray(psd)
        ax_psd.loglog(k, psd, color=COLORS.get(name), label=name, lw=1.8 if name == "truth" else 1.2)
        if name != "truth":
            ax_ratio.semilogx(k, psd / np.maximum(truth, 1e-300), color=COLORS.get(name), label=name)
    ax_psd.set(xlabel="wavenumber [cycles km$^{-1}$]", ylabel="power", title=f"{variable}: power spectrum")
    ax_ratio.axhline(1.0, color="black", lw=0.8)
    ax_ratio.axvline(k[-1] / 2, color="0.6", lw=0.8, ls="--")  # psd_high_ratio counts what lies right of it
    ax_ratio.set(xlabel="wavenumber [cycles km$^{-1}$]", ylabel="method / truth", title="ratio to truth")
    for ax in (ax_psd, ax_ratio):
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short log axes
    ax_psd.legend(fontsize=8)
    return _save(fig, path)


def plot_rank_histograms(path: Path, *, variable: str, ranks: Mapping[str, Sequence[int]]) -> Path:
    """Rank histograms (land) as relative frequency × (M + 1): a calibrated ensemble is flat at 1."""
    fig = _figure(4.2 * len(ranks), 3.2)
    axes = fig.subplots(1, len(ranks), squeeze=False)[0]
    for ax, (name, counts) in zip(axes, ranks.items(), strict=True):
        counts = np.asarray(counts, np.float64)
        ax.bar(np.arange(counts.size), counts / counts.sum() * counts.size, color=COLORS.get(name), width=0.9)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set(xlabel="rank of the truth among the members", ylabel="frequency × (M + 1)",
               title=f"{variable}: {name} (land)")
    return _save(fig, path)


def plot_distributions(path: Path, *, variable: str, units: str, histogram: Mapping, quantiles: Mapping,
                       log: bool) -> Path:
    """Value densities (land) and a Q–Q plot of each method against the truth, extremes marked."""
    fig = _figure(9.0, 3.8)
    ax_hist, ax_qq = fig.subplots(1, 2)
    edges = np.asarray(histogram["edges"])
    centres = (edges[1:] + edges[:-1]) / 2
    for name, density in histogram["land"].items():
        ax_hist.step(centres, density, where="mid", color=COLORS.get(name), label=name)
    ax_hist.set(xlabel=f"{variable} [{units}]", ylabel="density", title=f"{variable}: distribution (land)")
    if log:
        ax_hist.set_yscale("log")
    levels = np.asarray(quantiles["levels"])
    truth = np.asarray(quantiles["land"]["truth"])
    extreme = levels >= 0.99
    for name, values in quantiles["land"].items():
        if name != "truth":
            values = np.asarray(values)
            ax_qq.plot(truth, values, ".", ms=3, color=COLORS.get(name), label=name)
            ax_qq.plot(truth[extreme], values[extreme], "x", ms=6, color=COLORS.get(name))
    lims = [min(truth.min(), ax_qq.get_xlim()[0]), max(truth.max(), ax_qq.get_ylim()[1])]
    ax_qq.plot(lims, lims, color="black", lw=0.8)
    ax_qq.set(xlabel=f"truth quantile [{units}]", ylabel=f"method quantile [{units}]",
              title="Q–Q (land; × = 0.99, 0.999)")
    ax_hist.legend(fontsize=8)
    return _save(fig, path)


def plot_fss(path: Path, *, variable: str, units: str, spatial: Mapping) -> Path:
    """FSS against the window, one panel per threshold: members (solid) and, for ensembles, the
    exceedance probability (dashed)."""
    thresholds = spatial["thresholds"]
    fig = _figure(3.2 * len(thresholds) + 0.6, 3.2)
    axes = fig.subplots(1, len(thresholds), squeeze=False, sharey=True)[0]
    for ax, (key, value) in zip(axes, thresholds.items(), strict=True):
        for name, by_threshold in spatial["fss"].items():
            for kind, style in (("member", "-"), ("probability", "--")):
                curve = by_threshold[key][kind]
                if kind == "probability" and curve == by_threshold[key]["member"]:
                    continue  # a one-member method: the same curve
                windows = [int(w) for w in curve]
                ax.plot(windows, [np.nan if v is None else v for v in curve.values()], style, marker=".",
                        color=COLORS.get(name), label=f"{name} {kind}")
        windows = [int(w) for w in spatial["windows"]]
        ax.set_xscale("log", base=2)
        ax.set_xticks(windows, [str(w) for w in windows])
        ax.xaxis.set_minor_formatter(NullFormatter())
        label = f" ({key})" if key.startswith("p") else ""  # a percentile of the truth
        ax.set(xlabel="window [pixels]", title=f">= {value:.4g} {units}{label}", ylim=(0, 1))
    axes[0].set_ylabel("FSS")
    axes[0].legend(fontsize=7)
    fig.subplots_adjust(top=0.8)
    fig.suptitle(f"{variable}: fractions skill score (solid: members, dashed: exceedance probability)")
    return _save(fig, path)


def plot_intervals(path: Path, *, variable: str, units: str, intervals: Mapping) -> Path:
    """The 95 % intervals: each method's CRPS (left) and the model-minus-baseline CRPS differences with
    the zero line (right: an interval wholly left of 0 means the model beats that baseline)."""
    fig = _figure(9.0, 0.5 + 0.45 * max(len(intervals["methods"]), len(intervals["differences"])) + 1.2)
    fig.subplots_adjust(left=0.14, wspace=0.6)
    ax_scores, ax_diff = fig.subplots(1, 2)
    for ax, entries, title in ((ax_scores, intervals["methods"], f"CRPS [{units}]"),
                               (ax_diff, intervals["differences"], f"model − baseline CRPS [{units}]")):
        names = list(entries)
        for row, name in enumerate(names):
            crps = entries[name]["crps"]
            color = COLORS.get(name.removeprefix("model-"))
            ax.errorbar(crps["value"], row, xerr=[[crps["value"] - crps["lo"]], [crps["hi"] - crps["value"]]],
                        fmt="o", color=color, capsize=3)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.set(xlabel=title)
    ax_diff.axvline(0.0, color="black", lw=0.8)
    fig.suptitle(f"{variable}: {intervals['level']:.0%} block-bootstrap intervals over dates")
    return _save(fig, path)
