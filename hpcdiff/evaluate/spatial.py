"""Spatial and categorical verification with the ``scores`` package: the fractions skill score (FSS) per
event threshold and neighbourhood window, and POD, FAR (false alarm *ratio*) and CSI.

An event is a value ``>=`` the threshold. Pixels outside the support ``[H, W]`` (land, finite everywhere)
never hold an event, in the truth or in any method: the neighbourhoods cover the full rectangle (FSS
needs it) while only the support's events count. Windows are in pixels, without zero padding.

- ``fss.member``: every member's field against the truth, aggregated over dates and members (Roberts and
  Lean 2008, the aggregate over many forecasts that ``scores.spatial.fss_2d`` computes).
- ``fss.probability``: the ensemble's exceedance probability (the fraction of members with an event) as
  the forecast fraction field (``scores.spatial.fss_2d_binary`` with non-binary input).
- ``categorical``: POD, FAR, CSI of every member's events over the support pixels, the contingency table
  pooled over dates and members (``scores.categorical``).

``scores`` is imported inside the functions: ``hpcdiff --help`` does not pay for it.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence

import numpy as np

WINDOWS = (1, 3, 5, 9, 17)
PRECIPITATION_THRESHOLDS = (1.0, 5.0, 10.0, 20.0)  # kg m-2 (per day)
CATEGORICAL_THRESHOLDS = (1.0, 10.0, 20.0)  # kg m-2 (per day)
PERCENTILES = (50.0, 90.0, 99.0)  # of the truth over the support, for variables other than precipitation


def _key(value: float) -> str:
    return f"{value:g}"


def percentile_thresholds(obs: np.ndarray, support: np.ndarray,
                          percentiles: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``{"p90": value}``: percentiles of the truth ``[T, H, W]`` over the support pixels."""
    levels = np.percentile(obs[:, support], list(percentiles))
    return {f"p{_key(p)}": float(v) for p, v in zip(percentiles, levels, strict=True)}


def _events(values: np.ndarray, threshold: float, support: np.ndarray) -> np.ndarray:
    """``values [..., H, W] >= threshold`` within the support, False outside it."""
    return (values >= threshold) & support


def fss(ens: np.ndarray, obs: np.ndarray, *, support: np.ndarray, threshold: float,
        windows: Sequence[int] = WINDOWS) -> dict[str, dict[str, float]]:
    """``{"member": {window: fss}, "probability": {window: fss}}`` of ``ens [T, M, H, W]`` against
    ``obs [T, H, W]`` for events ``>= threshold``; windows not smaller than the grid are left out."""
    import xarray as xr
    from scores.spatial import fss_2d_binary

    assert ens.ndim == 4 and ens.shape[0] == obs.shape[0] and ens.shape[2:] == obs.shape[1:], (ens.shape,
                                                                                               obs.shape)
    members = xr.DataArray(_events(ens, threshold, support), dims=("time", "member", "y", "x"))
    truth = xr.DataArray(_events(obs, threshold, support), dims=("time", "y", "x"))
    probability = members.mean("member", dtype=np.float64)
    out: dict[str, dict[str, float]] = {"member": {}, "probability": {}}
    for window in (w for w in windows if w < min(obs.shape[-2:])):
        common = {"window_size": (window, window), "spatial_dims": ("y", "x"), "reduce_dims": None}
        out["member"][str(window)] = float(fss_2d_binary(members, truth.broadcast_like(members), **common))
        out["probability"][str(window)] = (  # one member: the probability is its 0/1 field
            out["member"][str(window)] if ens.shape[1] == 1
            else float(fss_2d_binary(probability, truth, check_boolean=False, **common)))
    return out


def categorical(ens: np.ndarray, obs: np.ndarray, *, support: np.ndarray,
                threshold: float) -> dict[str, float]:
    """``{"pod", "far", "csi", "frequency_bias"}`` of ``ens [T, M, H, W]``'s members against ``obs
    [T, H, W]`` for events ``>= threshold`` over the support pixels (NaN where undefined)."""
    import xarray as xr
    from scores.categorical import ThresholdEventOperator

    fcst = xr.DataArray(ens[..., support].astype(np.float64), dims=("time", "member", "pixel"))
    truth = xr.DataArray(obs[..., support].astype(np.float64), dims=("time", "pixel"))
    events = ThresholdEventOperator(default_event_threshold=threshold, default_op_fn=operator.ge)
    table = events.make_contingency_manager(fcst, truth.broadcast_like(fcst)).transform()
    return {"pod": float(table.probability_of_detection()), "far": float(table.false_alarm_ratio()),
            "csi": float(table.critical_success_index()), "frequency_bias": float(table.frequency_bias())}


def thresholds_of(obs: np.ndarray, support: np.ndarray, *, precipitation: bool) -> dict[str, float]:
    """Event thresholds of a variable: fixed amounts for precipitation, truth percentiles otherwise."""
    if precipitation:
        return {_key(t): t for t in PRECIPITATION_THRESHOLDS}
    return percentile_thresholds(obs, support)


def spatial_scores(methods: Mapping[str, np.ndarray], obs: np.ndarray, *, support: np.ndarray,
                   precipitation: bool) -> dict:
    """``{"thresholds": {name: value}, "windows": [...], "fss": {method: {threshold: {"member" |
    "probability": {window: fss}}}}, "categorical": {method: {threshold: {score: value}}}}``
    (categorical scores for precipitation only)."""
    thresholds = thresholds_of(obs, support, precipitation=precipitation)
    out: dict = {"thresholds": thresholds, "windows": list(WINDOWS),
                 "fss": {name: {key: fss(ens, obs, support=support, threshold=value)
                                for key, value in thresholds.items()} for name, ens in methods.items()}}
    if precipitation:
        out["categorical"] = {name: {_key(t): categorical(ens, obs, support=support, threshold=t)
                                     for t in CATEGORICAL_THRESHOLDS} for name, ens in methods.items()}
    return out
