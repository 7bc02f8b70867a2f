"""The quantile-mapping baseline ``qm``: the bilinear ERA5 field mapped onto the target's distribution by
empirical quantile mapping (``xsdba.EmpiricalQuantileMapping``), fitted on the dataset's *training*
split (truth against the bilinear field of the same dates) per season or month, applied to the evaluated
dates. A deterministic one-member "ensemble" ``[T, 1, H, W]``, in physical units, clipped to the
variable's physical bounds.

``pooling``: ``pixel`` fits one mapping per pixel (and group); ``land`` pools the land pixels' values
into one mapping per group and applies it to every pixel. docs/evaluation.md has the measured choice.
The mapping is additive (``kind="+"``) for every variable: a multiplicative mapping is undefined where
the bilinear quantile is 0 (dry days), and the clip keeps precipitation non-negative.

xsdba is imported inside the functions: ``hpcdiff --help`` does not pay for it.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from hpcdiff.data.manifest import Manifest
from hpcdiff.errors import HpcdiffError

GROUPS = ("season", "month")
POOLINGS = ("pixel", "land")


def _series(values: np.ndarray, dates: np.ndarray, units: str):
    """``values [T, H, W]`` as an xarray ``(time, loc)`` series with CF ``units``."""
    import xarray as xr

    return xr.DataArray(values.reshape(values.shape[0], -1).astype(np.float64), dims=("time", "loc"),
                        coords={"time": np.asarray(dates, "datetime64[D]").astype("datetime64[ns]")},
                        attrs={"units": units})


def _labels(dates: np.ndarray, group: str) -> np.ndarray:
    months = np.asarray(dates, "datetime64[M]").astype(np.int64) % 12 + 1
    if group == "month":
        return months
    return np.array([("DJF", "MAM", "JJA", "SON")[(m % 12) // 3] for m in months])


def check_groups(train_dates: np.ndarray, dates: np.ndarray, *, group: str, where: str) -> None:
    """Every season (month) of ``dates`` has training dates, or a one-line error naming the missing ones."""
    missing = sorted(set(_labels(dates, group).tolist()) - set(_labels(train_dates, group).tolist()))
    if missing:
        raise HpcdiffError(f"{where}: the training split has no date in {group}(s) "
                           f"{', '.join(map(str, missing))} of the evaluated dates; quantile mapping per "
                           f"{group} cannot be fitted (try --set qm_group=season)")


def _fit_apply(ref, hist, sim, *, land: np.ndarray, pooling: str, nquantiles: int) -> np.ndarray:
    """One group: EQM trained on ``ref``/``hist`` series, applied to ``sim``; ``[T, P]``."""
    import xsdba

    grouper = xsdba.Grouper("time")
    if pooling == "land":
        pixels = np.flatnonzero(land.ravel())
        ref, hist = ref.isel(loc=pixels), hist.isel(loc=pixels)
        grouper = xsdba.Grouper("time", add_dims=["loc"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xsdba's notes on chunking and calendars do not apply here
        eqm = xsdba.EmpiricalQuantileMapping.train(ref, hist, nquantiles=nquantiles, group=grouper, kind="+")
        out = eqm.adjust(sim, interp="linear", extrapolation="constant")
    return np.asarray(out.transpose("time", "loc").values)


def quantile_map(ref: np.ndarray, hist: np.ndarray, sim: np.ndarray, *, train_dates: np.ndarray,
                 dates: np.ndarray, units: str, land: np.ndarray, group: str = "season",
                 pooling: str = "pixel", nquantiles: int = 50) -> np.ndarray:
    """``sim [T, H, W]`` mapped by the quantiles of ``ref`` (truth) against ``hist`` (bilinear), both
    ``[N, H, W]`` on ``train_dates`` ``[N]``; ``land [H, W]`` bool is the pooled support. ``[T, H, W]``.

    Each season (month) is its own training and application: xsdba's grouped adjustment interpolates
    in 2-D (group and quantile) with ``scipy.interpolate.griddata`` once per pixel, ~23 ms each (70 s for
    the 32 x 32 x 3 tiny world), while one ungrouped mapping per group interpolates in 1-D."""
    assert ref.shape == hist.shape and ref.shape[1:] == sim.shape[1:] == land.shape, (ref.shape, sim.shape)
    if group not in GROUPS or pooling not in POOLINGS:
        raise ValueError(f"group must be one of {list(GROUPS)}, pooling one of {list(POOLINGS)}")
    train_labels, labels = _labels(train_dates, group), _labels(dates, group)
    out = np.full((sim.shape[0], sim[0].size), np.nan)
    for label in np.unique(labels):
        fit, rows = train_labels == label, np.flatnonzero(labels == label)
        out[rows] = _fit_apply(_series(ref[fit], train_dates[fit], units),
                               _series(hist[fit], train_dates[fit], units),
                               _series(sim[rows], dates[rows], units), land=land, pooling=pooling,
                               nquantiles=nquantiles)
    return out.reshape(sim.shape)


@dataclasses.dataclass(frozen=True)
class Training:
    """The training split's dates ``[N]``, truth and bilinear field ``{target: [N, H, W]}``."""

    dates: np.ndarray
    truth: dict[str, np.ndarray]
    bilinear: dict[str, np.ndarray]


def read_training(manifest: Manifest, *, stride: int = 1) -> Training:
    """Every ``stride``-th date of the training split (in date order): truth and bilinear field, in
    physical units. Memory: two float64 fields of ``[N, H, W]`` per target."""
    from hpcdiff.evaluate import baselines
    from hpcdiff.evaluate.truth import load_truth

    dates = np.sort(np.asarray(manifest.split("train").dates, "datetime64[D]"))[::stride]
    if dates.size == 0:
        raise HpcdiffError(f"{manifest.root}: the training split holds no dates; cannot fit the qm baseline")
    return Training(dates, load_truth(manifest, dates),
                    {k: v[:, 0] for k, v in baselines.bilinear(manifest, dates).items()})


def qm_baseline(manifest: Manifest, training: Training, dates: np.ndarray, *,
                bilinear: dict[str, np.ndarray], land: np.ndarray, group: str = "season",
                pooling: str = "pixel", nquantiles: int = 50) -> dict[str, np.ndarray]:
    """``{target: [T, 1, H, W] float64}``: ``bilinear`` ``{target: [T, 1, H, W]}`` on ``dates``
    quantile-mapped with the training split's truth and bilinear field."""
    check_groups(training.dates, dates, group=group, where=str(manifest.root))
    out = {}
    for channel in manifest.targets:
        if channel.name not in bilinear or channel.name not in training.bilinear:
            continue
        mapped = quantile_map(training.truth[channel.name], training.bilinear[channel.name],
                              bilinear[channel.name][:, 0], train_dates=training.dates, dates=dates,
                              units=channel.units, land=land, group=group, pooling=pooling,
                              nquantiles=nquantiles)
        lower, upper = channel.bounds
        if lower is not None or upper is not None:
            mapped = np.clip(mapped, lower, upper)
        out[channel.name] = mapped[:, None]
    return out
