"""Climate indices with ``xclim``, of every member and of the truth, on the support pixels.

Precipitation (``tp``, a daily amount in kg m-2, handed to xclim as the flux ``kg m-2 d-1``): Rx1day
(largest daily amount), R95pTOT (fraction of the wet-day total from days above the training split's
95th percentile of wet days, per pixel), R10mm (days >= 10 mm), the wet-day frequency (days >= 1 mm),
CDD and CWD (longest dry and wet spells, 1 mm). Temperature (``t2m``, K): the largest and smallest
daily-mean temperature (TXx-like ``tg_max``, ``tg_min``).

Over a contiguous period (the sample dates are consecutive days: ``dates.start``/``dates.end``) indices
are per calendar year (``YS``). Otherwise the order-free indices are computed over the sample dates
as one period (laid on consecutive days, so that xclim counts days rather than calendar gaps) and the
spell indices CDD and CWD are absent: a spell needs every day of the period.

Per index and method: ``mean`` and ``truth_mean`` (over periods and pixels; members pooled), ``bias``
(mean of member minus truth) and ``in_range`` (how often the truth lies within the members' range, over
periods and pixels; for a one-member method how often it equals it). xclim is imported inside the
functions: ``hpcdiff --help`` does not pay for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

WET_MM = "1 mm/day"
SPELLS = ("cdd", "cwd")
TEMPERATURE = ("t2m",)
PRECIPITATION = ("tp",)
UNITS = {"tp": "kg m-2 d-1", "t2m": "K"}  # what xclim is told the daily values are


def contiguous(dates: np.ndarray) -> bool:
    """The dates (any order, no repeats) are consecutive days."""
    days = np.sort(np.asarray(dates, "datetime64[D]").astype(np.int64))
    return bool(days.size > 1 and np.all(np.diff(days) == 1))


def period_note(dates: np.ndarray) -> str:
    """One sentence for the report: over which period the indices are, and why spells may be absent."""
    days = np.sort(np.asarray(dates, "datetime64[D]"))
    if contiguous(dates):
        return (f"Indices per calendar year over the contiguous period {days[0]} .. {days[-1]} "
                f"({days.size} days).")
    span = int((days[-1] - days[0]).astype(int)) + 1
    return (f"The {days.size} sample dates are not contiguous (they span {span} days): indices are over the "
            "sample dates as one period, and the spell indices CDD and CWD are absent, because a spell "
            "needs every day of the period; sample with dates.start/dates.end to get them.")


def _array(values: np.ndarray, dates: np.ndarray, units: str, *, relabel: bool):
    """``values [T, ..., P]`` as an xarray with a daily ``time`` (consecutive days if ``relabel``)."""
    import xarray as xr

    days = np.sort(np.asarray(dates, "datetime64[D]"))
    if relabel:
        days = days[0] + np.arange(days.size).astype("timedelta64[D]")
    dims = ("time", "member", "pixel") if values.ndim == 3 else ("time", "pixel")
    return xr.DataArray(values.astype(np.float64), dims=dims, coords={"time": days.astype("datetime64[ns]")},
                        attrs={"units": units})


def _indices(x, *, variable: str, freq: str, spells: bool, wet_p95) -> dict:
    """``{index: DataArray (time, ...)}`` of the daily series ``x``."""
    import xclim.indices as xi

    if variable in TEMPERATURE:
        return {"tg_max": xi.tg_max(x, freq=freq), "tg_min": xi.tg_min(x, freq=freq)}
    out = {"rx1day": xi.max_1day_precipitation_amount(x, freq=freq),
           "r95ptot": xi.fraction_over_precip_thresh(x, wet_p95, thresh=WET_MM, freq=freq),
           "r10mm": xi.wetdays(x, thresh="10 mm/day", freq=freq),
           "wet_day_frequency": xi.wetdays_prop(x, thresh=WET_MM, freq=freq)}
    if spells:
        out["cdd"] = xi.maximum_consecutive_dry_days(x, thresh=WET_MM, freq=freq)
        out["cwd"] = xi.maximum_consecutive_wet_days(x, thresh=WET_MM, freq=freq)
    return out


def wet_day_p95(train_truth: np.ndarray, support: np.ndarray):
    """Per support pixel, the 95th percentile of the training truth's wet days (> 1 mm, as xclim's
    R95pTOT counts them) ``[P]`` as an xarray in ``kg m-2 d-1`` (NaN where a pixel has no wet day)."""
    import xarray as xr

    values = train_truth[:, support].astype(np.float64)
    wet = np.where(values > 1.0, values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        p95 = np.nanpercentile(wet, 95, axis=0)
    return xr.DataArray(p95, dims=("pixel",), attrs={"units": UNITS["tp"]})


def summarize(member: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``member [Y, M, P]`` against ``truth [Y, P]``: mean, truth_mean, bias, in_range."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(member, axis=1), np.nanmax(member, axis=1)
        valid = np.isfinite(truth) & np.isfinite(lo)
        inside = ((lo <= truth) & (truth <= hi))[valid]
        return {"mean": float(np.nanmean(member)), "truth_mean": float(np.nanmean(truth)),
                "bias": float(np.nanmean(member - truth[:, None])),
                "in_range": float(inside.mean()) if inside.size else float("nan")}


def climate_indices(methods: Mapping[str, np.ndarray], obs: np.ndarray, *, dates: np.ndarray,
                    support: np.ndarray, variable: str, train_truth: np.ndarray | None = None) -> dict:
    """``{"period": note, "contiguous": bool, "indices": {index: {method: summary}}}`` for ``t2m`` or
    ``tp`` (methods ``[T, M, H, W]``, truth ``[T, H, W]``, in the dates' order); ``{}`` for other
    variables. R95pTOT needs ``train_truth [N, H, W]`` (it is left out without it)."""
    if variable not in TEMPERATURE + PRECIPITATION:
        return {}
    order = np.argsort(np.asarray(dates, "datetime64[D]"))
    run = contiguous(dates)
    freq = "YS" if run else f"{dates.size}D"  # one bin holding every relabelled day
    wet_p95 = wet_day_p95(train_truth, support) if train_truth is not None else None
    units = UNITS[variable]

    def compute(values: np.ndarray) -> dict[str, np.ndarray]:
        x = _array(values[order], dates, units, relabel=not run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # xclim's notes on missing-value checks of indices
            found = _indices(x, variable=variable, freq=freq, spells=run, wet_p95=wet_p95)
        if wet_p95 is None:
            found.pop("r95ptot", None)
        return {k: np.asarray(v.values, np.float64) for k, v in found.items()}

    truth = compute(obs[:, support])
    members = {name: compute(ens[..., support]) for name, ens in methods.items()}
    indices = {k: {name: summarize(members[name][k], truth[k]) for name in methods} for k in truth}
    return {"period": period_note(dates), "contiguous": run, "indices": indices}
