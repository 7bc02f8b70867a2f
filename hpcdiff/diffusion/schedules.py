"""Noise schedules β_t (float64, computed once) and the respacing of a schedule onto a subset of steps.

Conventions follow improved DDPM (Nichol & Dhariwal 2021): steps are indexed ``t = 0 .. T-1``,
``alpha_bar[t] = prod_{s<=t} (1 - beta[s])``, so step ``t`` of the code is step ``t + 1`` of the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

EDM_SIGMA_MAX = 80.0  # Karras et al. 2022: noise beyond sigma = 80 no longer changes the denoised estimate
COSINE_OFFSET = 0.008  # the small offset s of the cosine schedule: keeps beta_0 from vanishing
MAX_BETA = 0.999  # clip of the cosine schedule: avoids the singularity at t = T


def cosine_alpha_bar(u: np.ndarray | float, *, s: float = COSINE_OFFSET) -> np.ndarray:
    """Unnormalized cosine ``f(u) = cos²((u + s)/(1 + s) · π/2)`` on ``u ∈ [0, 1]`` (improved DDPM eq. 17);
    ``alpha_bar`` at step ``t`` is ``f((t + 1)/T) / f(0)`` while no beta is clipped."""
    return np.cos((np.asarray(u, np.float64) + s) / (1 + s) * math.pi / 2) ** 2


def betas_for_alpha_bar(alpha_bar: Callable[[np.ndarray], np.ndarray], num_steps: int, *,
                        max_beta: float = MAX_BETA) -> np.ndarray:
    """``beta_t = min(1 - f((t+1)/T) / f(t/T), max_beta)`` for a continuous ``f`` on [0, 1]: ``[T]``."""
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = alpha_bar(u)
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def linear_betas(num_steps: int) -> np.ndarray:
    """Ho et al.'s linear schedule 1e-4 .. 0.02 at T = 1000, rescaled so other T span the same ᾱ range."""
    scale = 1000.0 / num_steps
    return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)


_KINDS: dict[str, Callable[[int], np.ndarray]] = {
    "cosine": lambda n: betas_for_alpha_bar(cosine_alpha_bar, n),
    "linear": linear_betas,
}


def make_betas(kind: str, num_steps: int) -> np.ndarray:
    """The noise schedule ``beta [T]`` (float64) of a named ``kind``: ``"cosine"`` or ``"linear"``."""
    if kind not in _KINDS:
        raise ValueError(f"unknown beta schedule {kind!r}; valid: {', '.join(sorted(_KINDS))}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    betas = _KINDS[kind](num_steps)
    assert betas.shape == (num_steps,) and np.all((betas > 0) & (betas < 1)), "betas must lie in (0, 1)"
    return betas


def space_timesteps(num_steps: int, count: int) -> list[int]:
    """``count`` steps of ``0 .. num_steps-1``, evenly strided and always including both ends (so the
    respaced chain starts from the same nearly pure-noise prior), ascending."""
    if not 2 <= count <= num_steps:
        raise ValueError(f"cannot respace {num_steps} steps to {count}; need 2 <= count <= {num_steps}")
    stride = (num_steps - 1) / (count - 1)
    steps = sorted({round(i * stride) for i in range(count)})
    assert len(steps) == count, (num_steps, count)
    return steps


def logsnr_timesteps(alpha_bar: np.ndarray, count: int, *, sigma_max: float = EDM_SIGMA_MAX) -> list[int]:
    """``count`` steps for a few-step sampler: the last step ``T-1`` (where the chain starts from the prior),
    then ``count - 1`` steps evenly spaced in log-SNR ``lambda = log(alpha / sigma) = -log sigma_edm``
    from ``-log(sigma_max)`` down to step 0 (DPM-Solver's "logSNR" spacing; ``sigma_edm`` =
    ``sqrt((1 - alpha_bar) / alpha_bar)``). Each lands on the nearest discrete step, made distinct.
    Even log-SNR steps resolve narrow and wide data distributions alike; even ``t`` strides leave few
    steps where ``sigma_edm`` is comparable to a narrow distribution's scale."""
    num_steps = alpha_bar.shape[0]
    if not 2 <= count <= num_steps:
        raise ValueError(f"cannot respace {num_steps} steps to {count}; need 2 <= count <= {num_steps}")
    if count == num_steps:
        return list(range(num_steps))
    lam = 0.5 * (np.log(alpha_bar) - np.log1p(-alpha_bar))  # decreasing in t
    targets = np.linspace(lam[0], max(lam[-2], -math.log(sigma_max)), count - 1)
    ts = np.rint(np.interp(targets, lam[-2::-1], np.arange(num_steps - 1, dtype=np.float64)[::-1]))
    steps = sorted(int(t) for t in ts)
    for k in range(1, len(steps)):  # distinct: push collisions (near t = 0) to later steps ...
        steps[k] = max(steps[k], steps[k - 1] + 1)
    steps[-1] = min(steps[-1], num_steps - 2)
    for k in range(len(steps) - 2, -1, -1):  # ... without running into the prior step
        steps[k] = min(steps[k], steps[k + 1] - 1)
    return [*steps, num_steps - 1]


SPACINGS: dict[str, Callable[[np.ndarray, int], list[int]]] = {
    "logsnr": logsnr_timesteps,
    "uniform": lambda alpha_bar, count: space_timesteps(alpha_bar.shape[0], count),
}


def respaced_timesteps(alpha_bar: np.ndarray, count: int, *, spacing: str) -> list[int]:
    """``count`` ascending steps of the schedule ``alpha_bar [T]`` chosen by ``spacing`` (``"logsnr"``
    or ``"uniform"``)."""
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return SPACINGS[spacing](alpha_bar, count)


def respace_betas(alpha_bar: np.ndarray, timesteps: Sequence[int]) -> np.ndarray:
    """Betas of the chain that visits only ``timesteps`` (ascending) and keeps their ``alpha_bar``:
    ``beta'_k = 1 - alpha_bar[t_k] / alpha_bar[t_{k-1}]`` (improved DDPM sec. 4). ``[K]`` float64."""
    steps = np.asarray(timesteps, dtype=np.int64)
    assert steps.ndim == 1 and np.all(np.diff(steps) > 0), "timesteps must be strictly ascending"
    kept = alpha_bar[steps]
    prev = np.concatenate([[1.0], kept[:-1]])
    return 1.0 - kept / prev
