"""Stationary Gaussian random fields with a known spectrum: the small-scale noise of the fine law, the
relief of the orography and the latent coarse weather. Fields are drawn periodic by filtering white
noise in Fourier space, so their covariance is known exactly (:func:`noise_covariance`)."""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

from hpcdiff.data.synth.law import NoiseSpec


def padded_shape(shape: tuple[int, int], *, corr_km: float, dx_km: float, pad_corr: float) -> tuple[int, int]:
    """``shape`` grown by ``pad_corr * corr_km`` on each axis (to an FFT-friendly size), so that the
    periodic field's wrap-around correlation is negligible inside the cut."""
    pad = int(np.ceil(pad_corr * corr_km / dx_km))
    return tuple(scipy.fft.next_fast_len(n + pad, real=True) for n in shape)


def noise_psd(kappa: np.ndarray, spec: NoiseSpec) -> np.ndarray:
    """Unnormalized 2-D power spectral density at angular wavenumbers ``kappa`` (rad km-1)."""
    return (spec.corr_km ** -2.0 + np.asarray(kappa, np.float64) ** 2) ** (-spec.beta / 2)


@functools.lru_cache(maxsize=32)
def _amplitude(shape: tuple[int, int], spec: NoiseSpec, dx_km: float) -> np.ndarray:
    """rFFT filter ``[H, W // 2 + 1]`` such that filtered unit white noise has variance ``spec.std**2``."""
    ky = 2 * np.pi * np.fft.fftfreq(shape[0], d=dx_km)
    kx = 2 * np.pi * np.fft.fftfreq(shape[1], d=dx_km)
    psd = noise_psd(np.hypot(ky[:, None], kx[None, :]), spec)
    amp = spec.std * np.sqrt(psd / psd.mean())  # pixel variance = mean of amp**2 over the full grid
    return amp[:, : shape[1] // 2 + 1]


def gaussian_field(rng: np.random.Generator, shape: tuple[int, int], *, spec: NoiseSpec,
                   dx_km: float) -> np.ndarray:
    """A periodic stationary Gaussian random field ``[H, W]`` float64 of marginal std ``spec.std``
    exactly and 2-D spectrum ``noise_psd`` (grid spacing ``dx_km``); consumes ``H * W`` normals."""
    white = rng.standard_normal(shape)
    return np.fft.irfft2(np.fft.rfft2(white) * _amplitude(tuple(shape), spec, float(dx_km)), s=shape)


def noise_covariance(shape: tuple[int, int], *, spec: NoiseSpec, dx_km: float) -> np.ndarray:
    """The exact covariance ``C[dy, dx]`` ``[H, W]`` of :func:`gaussian_field` of ``shape`` between pixels
    offset by ``(dy, dx)`` (periodic); ``C[0, 0] == spec.std**2``."""
    return np.fft.irfft2(_amplitude(tuple(shape), spec, float(dx_km)) ** 2, s=shape)

