"""Curves behind the plots, JSON-able: rank histograms, power spectra, quantiles and value histograms of
every method next to the truth. Methods are ensembles ``[T, M, H, W]``, the truth ``[T, H, W]``, in
physical units; distributions pool the members' values (single fields, never the ensemble mean).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hpcdiff.evaluate import metrics
from hpcdiff.evaluate.scores import regions

QQ_LEVELS = np.unique(np.concatenate([[0.001], np.linspace(0.01, 0.99, 99), [0.999]]))
HISTOGRAM_BINS = 60
TRUTH = "truth"


def rank_histograms(methods: Mapping[str, np.ndarray], obs: np.ndarray, *, land: np.ndarray) -> dict:
    """``{region: {method: counts [M + 1]}}`` of the ensembles (``M >= 2``)."""
    return {region: {name: metrics.rank_histogram(ens, obs, mask).tolist()
                     for name, ens in methods.items() if ens.shape[1] > 1}
            for region, mask in regions(land).items()}


def spectra(methods: Mapping[str, np.ndarray], obs: np.ndarray, *, dx_km: float) -> dict:
    """Radially averaged power spectra over the full domain: ``{"k_cycles_per_km": [...], "psd":
    {"truth": [...], method: [...]}}``, each method's the mean over its single members."""
    k, truth = metrics.radial_psd(obs, dx_km=dx_km)
    psd = {TRUTH: truth.tolist()}
    psd.update({name: metrics.radial_psd(ens, dx_km=dx_km)[1].tolist() for name, ens in methods.items()})
    return {"k_cycles_per_km": k.tolist(), "psd": psd}


def quantile_curves(methods: Mapping[str, np.ndarray], obs: np.ndarray, *, land: np.ndarray) -> dict:
    """Q–Q data: ``{"levels": [...], region: {"truth": [...], method: [...]}}``."""
    out: dict = {"levels": QQ_LEVELS.tolist()}
    for region, mask in regions(land).items():
        out[region] = {TRUTH: metrics.quantiles(obs, QQ_LEVELS, mask).tolist()}
        out[region].update({name: metrics.quantiles(ens, QQ_LEVELS, mask).tolist()
                            for name, ens in methods.items()})
    return out


def _values(field: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return (field.reshape(-1) if mask is None else field[..., mask].reshape(-1)).astype(np.float64)


def histograms(methods: Mapping[str, np.ndarray], obs: np.ndarray, *, land: np.ndarray) -> dict:
    """Value densities on shared bins spanning all values: ``{"edges": [...], region: {"truth": density,
    method: density}}`` (density: integrates to 1 over the bins)."""
    fields = {TRUTH: obs, **methods}
    lo = min(float(np.min(v)) for v in fields.values())
    hi = max(float(np.max(v)) for v in fields.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HISTOGRAM_BINS + 1)
    out: dict = {"edges": edges.tolist()}
    for region, mask in regions(land).items():
        out[region] = {name: np.histogram(_values(v, mask), bins=edges, density=True)[0].tolist()
                       for name, v in fields.items()}
    return out


def variable_diagnostics(methods: Mapping[str, np.ndarray], obs: np.ndarray, *, land: np.ndarray,
                         dx_km: float) -> dict:
    """All curves of one variable: ``rank_histogram``, ``spectrum``, ``quantiles``, ``histogram``."""
    return {"rank_histogram": rank_histograms(methods, obs, land=land),
            "spectrum": spectra(methods, obs, dx_km=dx_km),
            "quantiles": quantile_curves(methods, obs, land=land),
            "histogram": histograms(methods, obs, land=land)}
