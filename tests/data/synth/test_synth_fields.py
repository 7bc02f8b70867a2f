"""Gaussian random fields: the drawn noise has the stated marginal std and spectrum."""

from __future__ import annotations

import numpy as np

from hpcdiff.data.synth.fields import gaussian_field, noise_psd
from hpcdiff.data.synth.law import NoiseSpec


def radial_psd(fields: np.ndarray, dx_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged periodogram of periodic fields ``[N, H, H]``: angular wavenumbers, power."""
    n = fields.shape[-1]
    power = (np.abs(np.fft.fft2(fields)) ** 2).mean(axis=0)
    k = np.fft.fftfreq(n)
    ring = np.rint(np.hypot(k[:, None], k[None, :]) * n).astype(int)
    bins = np.arange(1, n // 2)
    psd = np.array([power[ring == b].mean() for b in bins])
    return 2 * np.pi * bins / (n * dx_km), psd


def test_noise_has_the_known_spectrum_and_std() -> None:
    spec = NoiseSpec(std=0.6, corr_km=15.0, beta=3.0)
    rng = np.random.default_rng(0)
    fields = np.stack([gaussian_field(rng, (64, 64), spec=spec, dx_km=2.5) for _ in range(40)])
    assert abs(fields.std() / spec.std - 1) < 0.03
    kappa, psd = radial_psd(fields, 2.5)
    model = noise_psd(kappa, spec)
    ratio = np.log(psd / model)
    assert np.abs(ratio - np.median(ratio)).max() < 0.3
    high = kappa > 4 / spec.corr_km
    slope = np.polyfit(np.log(kappa[high]), np.log(psd[high]), 1)[0]
    model_slope = np.polyfit(np.log(kappa[high]), np.log(model[high]), 1)[0]
    assert abs(slope - model_slope) < 0.25 and model_slope < -0.9 * spec.beta
