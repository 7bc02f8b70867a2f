"""The metric table: scalar scores of every method, per region (land, all pixels) and season.

A method is an ensemble ``[T, M, H, W]`` in physical units (``M = 1``: deterministic, whose CRPS is its
MAE and whose spread–skill ratio is 0). ``obs`` is the truth ``[T, H, W]``. Scores of one variable::

    {region: {season: {method: {metric: float}}}}     region: land (the pixels of ``land``: the
                                                       evaluation passes its common support) | all_pixels
                                                       season: all | DJF | MAM | JJA | SON (present ones)

Metrics: ``crps`` (fair CRPS), ``bias``, ``rmse``, ``mae`` (of the ensemble mean), ``spread_skill``,
``psd_high_ratio`` (single members against the truth, over the full domain: spectra need the whole
rectangle, so this one does not depend on the region), ``crps_ratio_to_oracle`` (when an ``oracle``
method is present), and the truth's ``truth_mean`` and ``truth_spatial_std`` (the RMS over dates of the
spatial std over the region's pixels). Precipitation adds ``wet_day_frequency`` (members' pixel-days
≥ the threshold), ``q99``/``q999`` (quantiles of member values) and their ``*_truth`` counterparts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hpcdiff.evaluate import metrics

SEASONS = {"DJF": (12, 1, 2), "MAM": (3, 4, 5), "JJA": (6, 7, 8), "SON": (9, 10, 11)}
EXTREME_QUANTILES = {"q99": 0.99, "q999": 0.999}
ORACLE = "oracle"


def season_index(dates: np.ndarray) -> dict[str, np.ndarray]:
    """``{"all": all dates, season: indices of its dates}`` for the seasons that have dates."""
    months = np.asarray(dates, "datetime64[M]").astype(np.int64) % 12 + 1
    out = {"all": np.arange(months.size)}
    for name, members in SEASONS.items():
        index = np.flatnonzero(np.isin(months, members))
        if index.size:
            out[name] = index
    return out


def regions(land: np.ndarray) -> dict[str, np.ndarray | None]:
    """The pixel masks scores are computed over: ``land`` ``[H, W]`` bool and all pixels (None)."""
    return {"land": land, "all_pixels": None}


def truth_scores(obs: np.ndarray, mask: np.ndarray | None, *, precipitation: bool,
                 wet_threshold: float) -> dict[str, float]:
    """Properties of the truth ``[T, H, W]`` over ``mask`` that scores are read against."""
    values = obs.reshape(obs.shape[0], -1) if mask is None else obs[:, mask]
    out = {"truth_mean": float(values.mean()), "truth_spatial_std": float(np.sqrt(values.var(axis=1).mean()))}
    if precipitation:
        out["wet_day_frequency_truth"] = metrics.wet_day_frequency(obs, mask, threshold=wet_threshold)
        levels = metrics.quantiles(obs, np.array(list(EXTREME_QUANTILES.values())), mask)
        out.update({f"{k}_truth": float(v) for k, v in zip(EXTREME_QUANTILES, levels, strict=True)})
    return out


def ensemble_scores(ens: np.ndarray, obs: np.ndarray, mask: np.ndarray | None, *, precipitation: bool,
                    wet_threshold: float) -> dict[str, float]:
    """Scores of one method ``[T, M, H, W]`` against ``obs`` ``[T, H, W]`` over ``mask`` (no spectra)."""
    assert ens.ndim == 4 and ens.shape[0] == obs.shape[0] and ens.shape[2:] == obs.shape[1:], (ens.shape,
                                                                                               obs.shape)
    mean = ens.mean(axis=1, dtype=np.float64)
    deterministic = ens.shape[1] == 1
    out = {
        "crps": metrics.mae_deterministic(ens[:, 0], obs, mask) if deterministic
        else metrics.crps_fair(ens, obs, mask),
        "bias": metrics.bias(mean, obs, mask),
        "rmse": metrics.rmse(mean, obs, mask),
        "mae": metrics.mae(mean, obs, mask),
        "spread_skill": 0.0 if deterministic else metrics.spread_skill(ens, obs, mask),
    }
    if precipitation:
        out["wet_day_frequency"] = metrics.wet_day_frequency(ens, mask, threshold=wet_threshold)
        levels = metrics.quantiles(ens, np.array(list(EXTREME_QUANTILES.values())), mask)
        out.update({k: float(v) for k, v in zip(EXTREME_QUANTILES, levels, strict=True)})
    return out


def with_oracle_ratio(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Adds ``crps_ratio_to_oracle`` (method CRPS / oracle CRPS) to every method of ``table`` when an
    oracle is in it."""
    if ORACLE not in table:
        return table
    reference = table[ORACLE]["crps"]
    return {method: {**scores, "crps_ratio_to_oracle": scores["crps"] / reference if reference > 0
                     else float("nan")} for method, scores in table.items()}


def variable_scores(methods: Mapping[str, np.ndarray], obs: np.ndarray, *, land: np.ndarray,
                    dates: np.ndarray, precipitation: bool = False, wet_threshold: float = 1.0) -> dict:
    """``{region: {season: {method: {metric: float}}}}`` of one variable (see the module docstring)."""
    out: dict = {region: {} for region in regions(land)}
    for season, index in season_index(dates).items():
        sub_obs = obs[index]
        psd = {name: metrics.psd_high_ratio(ens[index], sub_obs) for name, ens in methods.items()}
        for region, mask in regions(land).items():
            truth = truth_scores(sub_obs, mask, precipitation=precipitation, wet_threshold=wet_threshold)
            table = {name: {**ensemble_scores(ens[index], sub_obs, mask, precipitation=precipitation,
                                              wet_threshold=wet_threshold),
                            "psd_high_ratio": psd[name], **truth}
                     for name, ens in methods.items()}
            out[region][season] = with_oracle_ratio(table)
    return out
