"""The profile's PNG plots: throughput and efficiency against GPUs with the ideal line, stacked step-time
bars, projection curves with the measured points on them, all-reduce bandwidth, sampling arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hpcdiff.fsutil import atomic_file
from hpcdiff.profile.metrics import STACKED

COLORS = {"weak": "tab:blue", "strong": "tab:orange"}


def _figure(ncols: int, figsize: tuple[float, float]) -> tuple[Figure, Any]:
    """A figure on the Agg canvas (matplotlib's object API: no pyplot state)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def throughput_efficiency(table: Sequence[dict[str, Any]], path: Path) -> Path:
    fig, (ax1, ax2) = _figure(2, (10, 4))
    for mode in sorted({r["mode"] for r in table}):
        rows = [r for r in table if r["mode"] == mode]
        ranks = [r["ranks"] for r in rows]
        base = rows[0]["samples_per_s"] / rows[0]["ranks"]
        ax1.plot(ranks, [r["samples_per_s"] for r in rows], "o-", color=COLORS.get(mode), label=f"{mode}")
        ax1.plot(ranks, [base * n for n in ranks], "--", color=COLORS.get(mode), alpha=0.5,
                 label=f"{mode} ideal")
        ax2.plot(ranks, [r["efficiency"] for r in rows], "o-", color=COLORS.get(mode), label=mode)
    ax2.axhline(1.0, ls="--", color="gray", label="ideal")
    ax1.set(xlabel="GPUs (ranks)", ylabel="samples/s", title="throughput")
    ax2.set(xlabel="GPUs (ranks)", ylabel="parallel efficiency", title="efficiency", ylim=(0, 1.2))
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, path)


def step_breakdown(points: Sequence[Any], path: Path) -> Path:
    """Stacked median phases (ms) per point."""
    fig, ax = _figure(1, (max(5, 1.2 * len(points)), 4))
    labels = [f"{p.mode}\n{p.ranks} rk" for p in points]
    bottom = [0.0] * len(points)
    for name in STACKED:
        values = [p.phase(name) for p in points]
        ax.bar(labels, values, bottom=bottom, label=name.removesuffix("_ms").replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(ylabel="ms per optimizer step", title="step time breakdown (median rank)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def projection_curves(curves: dict[str, list[dict[str, Any]]], measured: Sequence[dict[str, Any]],
                      path: Path) -> Path:
    """Efficiency against GPUs for every (interconnect, mode) curve; measured points as markers."""
    fig, ax = _figure(1, (7, 4.5))
    for key, rows in curves.items():
        mode = rows[0]["mode"] if rows else ""
        style = "-" if "measured" in key else ":"
        ax.plot([r["gpus"] for r in rows], [r["efficiency"] for r in rows], style, color=COLORS.get(mode),
                label=key, alpha=0.9 if "measured" in key else 0.6)
    for mode in sorted({r["mode"] for r in measured}):
        rows = [r for r in measured if r["mode"] == mode]
        ax.plot([r["ranks"] for r in rows], [r["efficiency"] for r in rows], "o", color=COLORS.get(mode),
                markersize=8, label=f"{mode} measured")
    ax.axhline(0.9, ls="--", color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="GPUs", ylabel="parallel efficiency", ylim=(0, 1.1), title="projection")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def comm_bandwidth(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    fig, ax = _figure(1, (6, 4))
    sizes = [r["size_bytes"] for r in rows]
    ax.plot(sizes, [r["algbw_gb_per_s"] for r in rows], "o-", label="algbw")
    ax.plot(sizes, [r["busbw_gb_per_s"] for r in rows], "s-", label="busbw")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="message size (bytes)", ylabel="GB/s", title="all-reduce bandwidth")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def sampling_tasks(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    fig, (ax1, ax2) = _figure(2, (10, 4))
    tasks = [r["tasks"] for r in rows]
    ax1.plot(tasks, [r["samples_per_s"] for r in rows], "o-", label="measured")
    ax1.plot(tasks, [r["ideal_samples_per_s"] for r in rows], "--", color="gray", label="ideal")
    ax1.set(xlabel="array tasks", ylabel="samples/s", title="sampling throughput")
    ax2.bar([str(t) for t in tasks], [r["startup_share"] for r in rows])
    ax2.set(xlabel="array tasks", ylabel="share of task time", title="start-up share (mean task)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend()
    return _save(fig, path)
