"""Ensemble verification metrics: CRPS and rank histograms from the ``scores`` package (imported inside
the functions), the rest numpy. docs/evaluation.md has the measured cost against the former hand-written
versions. Arrays follow ``ens [T, M, H, W]`` (dates, members) and
``obs [T, H, W]``; ``mask [H, W]`` (bool, e.g. land) selects the pixels that count. Units are those of
the inputs (K, kg m-2) unless said otherwise.
"""

from __future__ import annotations

import numpy as np


def _masked(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Flatten the trailing ``[H, W]`` of ``values`` to the masked pixels: ``[..., P]``."""
    if mask is None:
        return values.reshape(*values.shape[:-2], -1)
    assert mask.shape == values.shape[-2:], (mask.shape, values.shape)
    return values[..., mask]


def _ensemble_arrays(ens: np.ndarray, obs: np.ndarray, mask: np.ndarray | None):
    """``ens [T, M, H, W]`` and ``obs [T, H, W]`` as xarrays ``(time, member, pixel)`` / ``(time, pixel)``
    over the masked pixels, float64."""
    import xarray as xr

    x = xr.DataArray(_masked(ens, mask).astype(np.float64), dims=("time", "member", "pixel"))
    y = xr.DataArray(_masked(obs, mask).astype(np.float64), dims=("time", "pixel"))
    return x, y


def crps_per_date(ens: np.ndarray, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Fair CRPS (Ferro 2014: E|X − y| − E|X − X'| / 2 with the unbiased M(M−1) pair count) averaged over
    the masked pixels of each date: ``[T]``. Computed by ``scores.probability.crps_for_ensemble``."""
    from scores.probability import crps_for_ensemble

    if ens.shape[1] < 2:
        raise ValueError("fair CRPS needs at least 2 members")
    x, y = _ensemble_arrays(ens, obs, mask)
    return np.asarray(crps_for_ensemble(x, y, "member", method="fair", preserve_dims=["time"]).values)


def crps_fair(ens: np.ndarray, obs: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean fair CRPS over dates and masked pixels (:func:`crps_per_date`)."""
    return float(crps_per_date(ens, obs, mask).mean())


def mae_deterministic(pred: np.ndarray, obs: np.ndarray, mask: np.ndarray | None = None) -> float:
    """CRPS of a deterministic forecast is its absolute error."""
    return float(np.abs(_masked(pred, mask) - _masked(obs, mask)).mean())


def bias(pred_mean: np.ndarray, obs: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean error of the (ensemble-mean) prediction ``[T, H, W]``."""
    return float((_masked(pred_mean, mask).astype(np.float64) - _masked(obs, mask)).mean())


def rmse(pred_mean: np.ndarray, obs: np.ndarray, mask: np.ndarray | None = None) -> float:
    return float(np.sqrt(((_masked(pred_mean, mask).astype(np.float64) - _masked(obs, mask)) ** 2).mean()))


def mae(pred_mean: np.ndarray, obs: np.ndarray, mask: np.ndarray | None = None) -> float:
    return float(np.abs(_masked(pred_mean, mask).astype(np.float64) - _masked(obs, mask)).mean())


def spread_skill(ens: np.ndarray, obs: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spread–skill ratio with the finite-ensemble correction (Fortin et al. 2014):
    sqrt((M+1)/M · mean variance) / RMSE of the ensemble mean. 1 for a calibrated ensemble."""
    x = _masked(ens, mask).astype(np.float64)
    y = _masked(obs, mask).astype(np.float64)
    m = x.shape[1]
    spread = np.sqrt((m + 1) / m * x.var(axis=1, ddof=1).mean())
    skill = np.sqrt(((x.mean(axis=1) - y) ** 2).mean())
    return float(spread / skill) if skill > 0 else float("nan")


def rank_histogram(ens: np.ndarray, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Counts ``[M + 1]`` (float) of the observation's rank among the members, over dates and masked
    pixels: ``scores.probability.rank_histogram``'s relative frequencies times the number of cases; a tie
    shares its case equally among the ranks it spans."""
    from scores.probability import rank_histogram as relative_frequencies

    x, y = _ensemble_arrays(ens, obs, mask)
    frequencies = relative_frequencies(x, y, "member").values
    return np.asarray(frequencies, np.float64) * y.size


def radial_psd(fields: np.ndarray, *, dx_km: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectral density of ``fields [..., H, W]`` (mean over leading dims).

    Returns ``(k, psd)``: wavenumbers in cycles per km (bins of width 1/(N·dx) up to Nyquist) and the
    mean power in each annulus. Each field's mean is removed first."""
    f = np.asarray(fields, dtype=np.float64)
    f = f.reshape(-1, *f.shape[-2:])
    h, w = f.shape[-2:]
    f = f - f.mean(axis=(-2, -1), keepdims=True)
    power = (np.abs(np.fft.fft2(f)) ** 2).mean(axis=0) / (h * w)
    ky = np.fft.fftfreq(h, d=dx_km)
    kx = np.fft.fftfreq(w, d=dx_km)
    kr = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    dk = 1.0 / (max(h, w) * dx_km)
    n_bins = min(h, w) // 2
    idx = np.rint(kr / dk).astype(int)
    sel = (idx >= 1) & (idx <= n_bins)
    sums = np.bincount(idx[sel], weights=power[sel], minlength=n_bins + 1)
    counts = np.bincount(idx[sel], minlength=n_bins + 1)
    k = np.arange(1, n_bins + 1) * dk
    return k, sums[1:] / np.maximum(counts[1:], 1)


def psd_high_ratio(pred: np.ndarray, obs: np.ndarray, *, fraction: float = 0.5) -> float:
    """Power of ``pred`` over power of ``obs`` in the highest ``fraction`` of wavenumbers (≥ ``1 −
    fraction`` of Nyquist). 1 = the right amount of small-scale variability; ≪ 1 = too smooth."""
    k, p_pred = radial_psd(pred)
    _, p_obs = radial_psd(obs)
    return high_power_ratio(k, p_pred, p_obs, fraction=fraction)


def high_power_ratio(k: np.ndarray, p_pred: np.ndarray, p_obs: np.ndarray, *, fraction: float = 0.5) -> float:
    """The ratio :func:`psd_high_ratio` reports, from spectra ``p_pred``, ``p_obs`` ``[K]`` on the wavenumbers
    ``k [K]`` of :func:`radial_psd` (e.g. sums of spectra over batches)."""
    high = k >= (1.0 - fraction) * k[-1]
    return float(p_pred[high].sum() / p_obs[high].sum())


def quantiles(values: np.ndarray, qs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Quantiles of all masked values (for Q–Q plots)."""
    return np.quantile(_masked(values, mask).astype(np.float64).ravel(), qs)


def wet_day_frequency(values: np.ndarray, mask: np.ndarray | None = None, *, threshold: float = 1.0) -> float:
    """Fraction of masked pixel-days with precipitation ≥ ``threshold`` (kg m-2 per day)."""
    return float((_masked(values, mask) >= threshold).mean())
