"""Scaling arithmetic from per-rank step records: medians, throughput, speed-up, efficiency, spread.

A *point* is one training run at a number of ranks. Each rank reports one record per measured step
(milliseconds, see :data:`PHASES`); a rank's value of a phase is the median over its measured steps,
and the point's value is the median over ranks, except the step time, whose point value is the
slowest rank's (every rank waits for it in the all-reduce). The straggler spread is max over median
across ranks of each rank's own work (its step without the exposed all-reduce, where it waits).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

# Phases of one optimizer step, milliseconds. ``allreduce_exposed_ms`` is DeepSpeed's
# ``bwd_allreduce`` timer: from the end of the backward computation to the end of the gradient
# reduction, i.e. the communication that was not hidden behind backward (plus waiting for slower ranks).
PHASES = ("data_wait_ms", "forward_ms", "backward_ms", "allreduce_exposed_ms", "optimizer_ms", "other_ms",
          "step_ms")
STACKED = ("data_wait_ms", "forward_ms", "backward_ms", "allreduce_exposed_ms", "optimizer_ms", "other_ms")


@dataclasses.dataclass(frozen=True)
class RankSummary:
    """One rank of one point: medians over its measured steps (ms), its throughput and memory."""

    rank: int
    host: str
    phases: dict[str, float]
    allreduce_total_ms: float  # DeepSpeed comms logger: every all-reduce of the step, hidden or not
    samples_per_step: int
    peak_host_mb: float
    peak_device_mb: float

    @property
    def samples_per_s(self) -> float:
        return self.samples_per_step / (self.phases["step_ms"] / 1e3)


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no values")
    return float(statistics.median(values))


def summarize_rank(record: dict[str, Any], *, warmup: int) -> RankSummary:
    """Medians over the steps after the first ``warmup`` of one rank's record (as returned by
    :func:`hpcdiff.profile.instrument.profiled_train`)."""
    steps = record["steps"][warmup:]
    if not steps:
        raise ValueError(f"rank {record['rank']}: no measured steps after {warmup} warm-up steps")
    phases = {name: median([s[name] for s in steps]) for name in PHASES}
    return RankSummary(rank=int(record["rank"]), host=str(record["host"]), phases=phases,
                       allreduce_total_ms=median([s["allreduce_total_ms"] for s in steps]),
                       samples_per_step=int(record["samples_per_step"]),
                       peak_host_mb=float(record["peak_host_mb"]),
                       peak_device_mb=float(record["peak_device_mb"]))


def straggler_spread(step_ms: Sequence[float]) -> float:
    """Slowest over median rank step time (1.0: no straggler)."""
    return max(step_ms) / median(step_ms)


@dataclasses.dataclass(frozen=True)
class PointSummary:
    """One point: ``ranks`` ranks on ``nodes`` nodes, in ``mode`` (weak or strong)."""

    mode: str
    ranks: int
    nodes: int
    global_batch: int
    micro_batch: int
    accum_steps: int
    per_rank: list[RankSummary]

    def phase(self, name: str) -> float:
        """Point value of a phase (ms): median over ranks; the step time is the slowest rank's."""
        values = [r.phases[name] for r in self.per_rank]
        return max(values) if name == "step_ms" else median(values)

    @property
    def step_ms(self) -> float:
        return self.phase("step_ms")

    @property
    def samples_per_s(self) -> float:
        """Total throughput: the global batch over the slowest rank's step."""
        return self.global_batch / (self.step_ms / 1e3)

    @property
    def spread(self) -> float:
        """Straggler spread of the ranks' own work (step minus exposed all-reduce): whole steps are equal
        on every rank, since the fast ranks wait for the slow one inside the all-reduce."""
        own = [r.phases["step_ms"] - r.phases["allreduce_exposed_ms"] for r in self.per_rank]
        return straggler_spread(own)

    def share(self, name: str) -> float:
        return self.phase(name) / self.phase("step_ms")

    @property
    def peak_host_mb(self) -> float:
        return max(r.peak_host_mb for r in self.per_rank)

    @property
    def peak_device_mb(self) -> float:
        return max(r.peak_device_mb for r in self.per_rank)


def speedup(throughput: float, base_throughput: float) -> float:
    """Throughput relative to the base point's."""
    return throughput / base_throughput


def efficiency(throughput: float, ranks: int, *, base_throughput: float, base_ranks: int) -> float:
    """Parallel efficiency: speed-up over the ideal ``ranks / base_ranks``. The same formula serves weak
    scaling (where it equals base step time over step time) and strong scaling (where it equals
    ``base_ranks x base step time / (ranks x step time)``)."""
    return speedup(throughput, base_throughput) / (ranks / base_ranks)


def scaling_table(points: Sequence[PointSummary]) -> list[dict[str, Any]]:
    """One row per point for ``scaling.md``: speed-up and efficiency against the mode's smallest point."""
    rows = []
    for mode in sorted({p.mode for p in points}):
        same = sorted((p for p in points if p.mode == mode), key=lambda p: p.ranks)
        base = same[0]
        for p in same:
            rows.append({
                "mode": mode, "ranks": p.ranks, "nodes": p.nodes, "global_batch": p.global_batch,
                "micro_batch": p.micro_batch, "accum_steps": p.accum_steps, "step_ms": p.step_ms,
                "samples_per_s": p.samples_per_s, "speedup": speedup(p.samples_per_s, base.samples_per_s),
                "efficiency": efficiency(p.samples_per_s, p.ranks, base_throughput=base.samples_per_s,
                                         base_ranks=base.ranks),
                "comm_share": p.share("allreduce_exposed_ms"), "data_wait_share": p.share("data_wait_ms"),
                "straggler_spread": p.spread, "peak_host_mb": p.peak_host_mb,
                "peak_device_mb": p.peak_device_mb})
    return rows
