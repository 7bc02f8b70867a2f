"""Scaling arithmetic from given timings: medians per rank, the slowest rank's step, speed-up, efficiency,
straggler spread."""

from __future__ import annotations

import pytest

from hpcdiff.profile.metrics import (
    PHASES,
    PointSummary,
    efficiency,
    scaling_table,
    speedup,
    straggler_spread,
    summarize_rank,
)


def record(rank: int, step_ms: list[float], *, samples: int = 8, comm_ms: float = 1.0) -> dict:
    steps = [{**dict.fromkeys(PHASES, 1.0), "step_ms": s, "allreduce_exposed_ms": comm_ms,
              "allreduce_total_ms": 2 * comm_ms} for s in step_ms]
    return {"rank": rank, "host": f"n{rank + 1}", "samples_per_step": samples, "peak_host_mb": 100.0 + rank,
            "peak_device_mb": 0.0, "steps": steps}


def point(mode: str, ranks: int, step_ms: list[float], *, micro: int = 8) -> PointSummary:
    per_rank = [summarize_rank(record(r, [s] * 3, samples=micro), warmup=0) for r, s in enumerate(step_ms)]
    global_batch = micro * ranks
    return PointSummary(mode=mode, ranks=ranks, nodes=ranks, global_batch=global_batch, micro_batch=micro,
                        accum_steps=1, per_rank=per_rank)


def test_rank_medians_skip_the_warmup_steps():
    rank = summarize_rank(record(0, [900.0, 800.0, 100.0, 300.0, 200.0]), warmup=2)
    assert rank.phases["step_ms"] == 200.0  # median of 100, 300, 200
    assert rank.samples_per_s == pytest.approx(8 / 0.2)
    with pytest.raises(ValueError, match="no measured steps"):
        summarize_rank(record(0, [1.0, 2.0]), warmup=2)


def test_speedup_and_efficiency_from_throughput():
    assert speedup(30.0, 10.0) == 3.0
    assert efficiency(30.0, 4, base_throughput=10.0, base_ranks=1) == 0.75
    assert efficiency(30.0, 4, base_throughput=20.0, base_ranks=2) == 0.75  # base at 2 ranks
    # weak scaling: step time 100 ms -> 125 ms at 4x the ranks (and 4x the samples): 80 %
    assert efficiency(4 * 8 / 0.125, 4, base_throughput=8 / 0.1, base_ranks=1) == pytest.approx(0.8)
    # strong scaling: 1 rank 400 ms, 4 ranks 125 ms for the same global batch: speed-up 3.2, 80 %
    assert efficiency(32 / 0.125, 4, base_throughput=32 / 0.4, base_ranks=1) == pytest.approx(0.8)


def test_point_takes_the_slowest_rank_and_reports_its_spread():
    p = point("weak", 4, [100.0, 100.0, 110.0, 150.0])
    assert p.step_ms == 150.0
    assert p.samples_per_s == pytest.approx(32 / 0.15)
    assert straggler_spread([100.0, 100.0, 110.0, 150.0]) == pytest.approx(150.0 / 105.0)
    assert p.spread == pytest.approx(149.0 / 104.0)  # without each rank's 1 ms of exposed all-reduce
    assert p.share("allreduce_exposed_ms") == pytest.approx(1.0 / 150.0)
    assert p.peak_host_mb == 103.0


def test_scaling_table_per_mode_against_its_smallest_point():
    rows = scaling_table([point("strong", 2, [50.0, 50.0], micro=4), point("strong", 1, [80.0], micro=8),
                          point("weak", 1, [100.0]), point("weak", 2, [125.0, 120.0])])
    by = {(r["mode"], r["ranks"]): r for r in rows}
    assert by["strong", 1]["speedup"] == 1.0 and by["strong", 1]["efficiency"] == 1.0
    assert by["strong", 2]["speedup"] == pytest.approx(80.0 / 50.0)
    assert by["strong", 2]["efficiency"] == pytest.approx(0.8)
    assert by["weak", 2]["efficiency"] == pytest.approx(100.0 / 125.0)
    assert [r["ranks"] for r in rows] == [1, 2, 1, 2]  # strong, then weak, each by ranks
