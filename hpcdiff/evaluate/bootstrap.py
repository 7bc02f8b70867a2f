"""Block bootstrap over dates: 95 % intervals of the headline scores and of model-minus-baseline
differences.

Scores are means over dates of per-date values (CRPS, squared error), so a resample of dates is a
resample of those values. Dates are cut into runs of consecutive days; the resample draws blocks of
``L = round(T ** (1/3))`` consecutive days from inside the runs (circularly within a run; a run shorter
than ``L`` is one block), which keeps the day-to-day correlation of weather inside a resample; scattered
dates are drawn one by one. The interval is the 2.5th..97.5th percentile of ``reps``
resampled values (percentile bootstrap), with a seeded generator.

A model *beats* a baseline beyond the interval when the whole interval of (model − baseline) CRPS lies
below 0; it is *worse* when it lies above 0; otherwise the two are not told apart by these dates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

LEVEL = 0.95
REPS = 1000
BASELINES = ("bilinear", "qm", "oracle")
# the purpose tag of the resampling stream, seeded (seed, PURPOSE) as every hpcdiff stream; a tag of its own
# (hpcdiff.seeding's tags live beside torch, which evaluation does not import)
PURPOSE = 0xB007


def runs(dates: np.ndarray) -> list[np.ndarray]:
    """Indices into ``dates`` ``[T]`` grouped into runs of consecutive days, in date order."""
    days = np.asarray(dates, "datetime64[D]").astype(np.int64)
    order = np.argsort(days, kind="stable")
    breaks = np.flatnonzero(np.diff(days[order]) != 1) + 1
    return np.split(order, breaks)


def block_length(n_dates: int) -> int:
    return max(1, int(round(n_dates ** (1.0 / 3.0))))


def blocks(dates: np.ndarray) -> np.ndarray:
    """The candidate blocks ``[K, L]`` of date indices (``-1`` pads): from every date of a run at least
    ``L = block_length`` long, the ``L`` days that follow it, wrapping round inside the run (a circular
    block bootstrap per run: every date is equally likely in a resample); a shorter run is one block."""
    length = block_length(len(dates))
    out = []
    for run in runs(dates):
        if run.size < length:
            out.append(np.concatenate([run, np.full(length - run.size, -1)]))
        else:
            steps = (np.arange(run.size)[:, None] + np.arange(length)[None, :]) % run.size
            out += list(run[steps])
    return np.array(out, np.int64).reshape(-1, length)


def resample_indices(dates: np.ndarray, *, reps: int = REPS, seed: int = 0) -> np.ndarray:
    """``[reps, T]`` date indices: each row concatenates random blocks until it holds ``T`` dates."""
    n = len(dates)
    candidates = blocks(dates)
    shortest = int((candidates >= 0).sum(axis=1).min())
    rng = np.random.default_rng([seed, PURPOSE])
    drawn = candidates[rng.integers(0, len(candidates), size=(reps, -(-n // shortest)))].reshape(reps, -1)
    # move the pads of short runs' blocks to the end of each row (stable: block order kept), keep T dates
    order = np.argsort(drawn < 0, axis=1, kind="stable")
    return np.take_along_axis(drawn, order, axis=1)[:, :n]


@dataclasses.dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def interval(value: float, resampled: np.ndarray, level: float = LEVEL) -> Interval:
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(resampled, [tail, 100 - tail])
    return Interval(float(value), float(lo), float(hi))


def mean_interval(per_date: np.ndarray, index: np.ndarray, level: float = LEVEL) -> Interval:
    """The interval of the mean of ``per_date [T]`` over the resamples ``index [reps, T]``."""
    return interval(per_date.mean(), per_date[index].mean(axis=1), level)


def rmse_interval(squared: np.ndarray, index: np.ndarray, level: float = LEVEL) -> Interval:
    """RMSE from per-date mean squared errors ``[T]``."""
    return interval(np.sqrt(squared.mean()), np.sqrt(squared[index].mean(axis=1)), level)


def verdict(difference: Interval, baseline: str) -> str:
    """What a (model − baseline) CRPS interval says (lower CRPS is better)."""
    if difference.hi < 0:
        return f"beats {baseline} beyond the interval"
    if difference.lo > 0:
        return f"worse than {baseline} beyond the interval"
    return f"not distinguishable from {baseline} within the interval"


def score_intervals(per_date: Mapping[str, Mapping[str, np.ndarray]], dates: np.ndarray, *,
                    reps: int = REPS, seed: int = 0) -> dict:
    """Intervals from ``per_date[method]`` ``{"crps": [T], "se": [T]}`` (mean CRPS and mean squared error
    of the ensemble mean over the support, per date): ``{"methods": {method: {"crps", "rmse"}},
    "differences": {"model-<baseline>": {"crps", "rmse", "verdict"}}, "block_days", "reps", "level"}``."""
    index = resample_indices(dates, reps=reps, seed=seed)
    out: dict = {"level": LEVEL, "reps": reps, "seed": seed, "block_days": block_length(len(dates))
                 if any(r.size > 1 for r in runs(dates)) else 1, "methods": {}, "differences": {}}
    for name, values in per_date.items():
        out["methods"][name] = {"crps": mean_interval(values["crps"], index).as_dict(),
                                "rmse": rmse_interval(values["se"], index).as_dict()}
    model = per_date.get("model")
    for baseline in (b for b in BASELINES if b in per_date and model is not None):
        base = per_date[baseline]
        crps = mean_interval(model["crps"] - base["crps"], index)
        rmse = interval(np.sqrt(model["se"].mean()) - np.sqrt(base["se"].mean()),
                        np.sqrt(model["se"][index].mean(axis=1)) - np.sqrt(base["se"][index].mean(axis=1)))
        out["differences"][f"model-{baseline}"] = {"crps": crps.as_dict(), "rmse": rmse.as_dict(),
                                                   "verdict": verdict(crps, baseline)}
    return out
