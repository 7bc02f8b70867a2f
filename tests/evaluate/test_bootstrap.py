"""Block bootstrap over dates: runs and blocks of a hand-made calendar, coverage of a known mean,
verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.evaluate import bootstrap

START = np.datetime64("2001-01-01")


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """A stationary AR(1) series of mean 0 (unit innovations)."""
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / np.sqrt(1 - phi ** 2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    return x


def test_runs_and_blocks_of_a_hand_made_calendar():
    """Dates out of order: a run of 9 consecutive days and a run of 1 (block length round(10^(1/3)) = 2)."""
    days = np.array([3, 0, 1, 2, 20, 4, 5, 6, 7, 8])
    dates = START + days
    assert [days[r].tolist() for r in bootstrap.runs(dates)] == [[0, 1, 2, 3, 4, 5, 6, 7, 8], [20]]
    blocks = bootstrap.blocks(dates)
    assert blocks.shape == (10, 2)  # 9 circular blocks of the long run, the short run padded
    assert [days[b[0]] for b in blocks[:9]] == list(range(9))
    assert days[blocks[8]].tolist() == [8, 0]  # wraps round inside its run
    assert blocks[9].tolist() == [4, -1]
    index = bootstrap.resample_indices(dates, reps=50, seed=3)
    assert index.shape == (50, 10) and index.min() >= 0
    assert np.array_equal(index, bootstrap.resample_indices(dates, reps=50, seed=3))  # seeded
    pairs = np.diff(days[index], axis=1)  # consecutive picks inside a block are consecutive days
    assert (pairs == 1).mean() > 0.4


def coverage(series: list[np.ndarray], dates: np.ndarray, *, reps: int = 400) -> float:
    hits = 0
    for seed, x in enumerate(series):
        interval = bootstrap.mean_interval(x, bootstrap.resample_indices(dates, reps=reps, seed=seed))
        hits += interval.lo <= 0.0 <= interval.hi
    return hits / len(series)


def test_the_interval_covers_a_known_mean_at_about_the_right_rate():
    """300 independent series of known mean 0: the 95 % interval covers it about 95 % of the time (binomial
    sd 1.3 %). For correlated days (AR(1), lag-1 correlation 0.5) blocks of consecutive days keep most of
    the coverage that resampling day by day loses."""
    rng = np.random.default_rng(11)
    contiguous, scattered = START + np.arange(125), START + 2 * np.arange(125)
    independent = [rng.normal(size=125) for _ in range(300)]
    assert 0.90 <= coverage(independent, contiguous) <= 0.98
    assert 0.90 <= coverage(independent, scattered) <= 0.98
    correlated = [ar1(rng, 125, 0.5) for _ in range(300)]
    blocked, one_by_one = coverage(correlated, contiguous), coverage(correlated, scattered)
    assert blocked >= 0.82 and one_by_one <= 0.80 and blocked - one_by_one >= 0.08, (blocked, one_by_one)


def test_intervals_differences_and_verdicts():
    dates = START + np.arange(40)
    rng = np.random.default_rng(0)
    base = rng.gamma(4.0, 0.25, size=40)
    per_date = {"model": {"crps": base, "se": base ** 2},
                "bilinear": {"crps": base + 0.5, "se": (base + 0.5) ** 2},  # worse on every date
                "qm": {"crps": base + rng.normal(0, 0.3, 40), "se": base ** 2}}
    out = bootstrap.score_intervals(per_date, dates, reps=500, seed=1)
    assert out["block_days"] == 3 and out["reps"] == 500
    crps = out["methods"]["model"]["crps"]
    assert crps["value"] == pytest.approx(base.mean()) and crps["lo"] < crps["value"] < crps["hi"]
    rmse = out["methods"]["bilinear"]["rmse"]["value"]
    assert rmse == pytest.approx(np.sqrt(((base + 0.5) ** 2).mean()))
    difference = out["differences"]["model-bilinear"]
    assert difference["crps"] == pytest.approx({"value": -0.5, "lo": -0.5, "hi": -0.5})
    assert difference["verdict"] == "beats bilinear beyond the interval"
    assert out["differences"]["model-qm"]["verdict"] == "not distinguishable from qm within the interval"
    assert "model-oracle" not in out["differences"]
    worse = bootstrap.Interval(0.2, 0.1, 0.3)
    assert bootstrap.verdict(worse, "qm") == "worse than qm beyond the interval"
