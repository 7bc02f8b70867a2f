"""Samplers over one trained ε-model: DDPM ancestral, DDIM, DPM-Solver++(2M) and (3M).

Every sampler runs on a (possibly respaced) :class:`GaussianDiffusion` whose steps ``i = K-1 .. 0`` map
to original steps for the model call, and all randomness of batch element ``n`` comes from
``generators[n]``: a sample is the same whether it is drawn alone or in a batch (given a model that
treats batch elements independently). Respaced steps are even in log-SNR by default (see
:func:`hpcdiff.diffusion.schedules.logsnr_timesteps`; ``spacing="uniform"`` gives improved DDPM's
even strides). Accuracy per step count on Gaussian data: ``docs/performance_diffusion.md``.

References: DDPM, Ho et al. 2020 (alg. 2); improved DDPM respacing, Nichol & Dhariwal 2021 (sec. 4);
DDIM, Song et al. 2021 (eq. 12); DPM-Solver++, Lu et al. 2022 (alg. 2 for 2M; 3M as in the authors'
multistep third-order update).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from hpcdiff.diffusion.gaussian import GaussianDiffusion, ModelFn
from hpcdiff.diffusion.schedules import respaced_timesteps


def randn_per_sample(shape: Sequence[int], generators: Sequence[torch.Generator], *,
                     device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal ``[N, *shape[1:]]`` with row ``n`` drawn from ``generators[n]`` (in float32, on
    the generator's device, so a draw does not depend on ``dtype`` or batch composition)."""
    assert len(generators) == shape[0], f"need one generator per sample: {len(generators)} for {shape[0]}"
    rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device=device, dtype=dtype)


def _steps(num_steps: int, *, label: str, progress: bool) -> Iterator[int]:
    """Reversed step indices ``K-1 .. 0``, with an optional progress line on stderr."""
    for k, i in enumerate(reversed(range(num_steps))):
        if progress and (k % max(1, num_steps // 20) == 0 or i == 0):
            print(f"\r{label}: step {k + 1}/{num_steps}", end="\n" if i == 0 else "", file=sys.stderr)
        yield i


def _full(i: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)


def ddpm_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, x_T: torch.Tensor, *,
                generators: Sequence[torch.Generator], progress: bool = False) -> torch.Tensor:
    """Ancestral sampling ``x_{t-1} ~ p(x_{t-1} | x_t)`` with the model's (learned or fixed) variance,
    no noise on the last step. ``x_T [N, C, H, W]`` -> ``x_0 [N, C, H, W]``."""
    x = x_T
    for i in _steps(diffusion.num_steps, label="ddpm", progress=progress):
        out = diffusion.p_mean_variance(model_fn, x, _full(i, x))
        x = out["mean"]
        if i > 0:
            z = randn_per_sample(x.shape, generators, device=x.device, dtype=x.dtype)
            x = x + torch.exp(0.5 * out["log_variance"]) * z
    return x


def ddim_step(model_fn: ModelFn, diffusion: GaussianDiffusion, x_t: torch.Tensor, *, i: int,
              eta: float, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One DDIM step (Song et al. eq. 12) from step ``i`` to ``i - 1`` of ``diffusion``:
    ``x_prev = sqrt(alpha_bar_prev) x0 + sqrt(1 - alpha_bar_prev - sigma_t²) eps + sigma_t z`` with
    ``sigma_t² = eta² beta_tilde_t``. With a learned variance the injected noise is ``eta² Σ_θ``
    instead, so ``eta = 1`` is exactly improved DDPM's respaced ancestral step."""
    t = _full(i, x_t)
    eps, v = diffusion.model_output(model_fn, x_t, t)
    pred_x0 = diffusion.predict_x0(x_t, t, eps)
    alpha_bar_prev = float(diffusion.alpha_bar_prev[i])  # float64 scalars: 1 - alpha_bar_prev ~ 1e-5 at i = 1
    sigma_t2 = eta**2 * float(diffusion.posterior_variance[i])
    x_prev = math.sqrt(alpha_bar_prev) * pred_x0 + math.sqrt(max(1.0 - alpha_bar_prev - sigma_t2, 0.0)) * eps
    if eta == 0.0 or i == 0:
        return x_prev
    z = randn_per_sample(x_t.shape, generators, device=x_t.device, dtype=x_t.dtype)
    if diffusion.learn_sigma:
        return x_prev + eta * torch.exp(0.5 * diffusion.model_log_variance(t, x_t, v)) * z
    return x_prev + math.sqrt(sigma_t2) * z


def ddim_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, x_T: torch.Tensor, *,
                generators: Sequence[torch.Generator], eta: float = 0.0,
                progress: bool = False) -> torch.Tensor:
    """DDIM over all steps of ``diffusion`` (respace it first). ``eta = 0``: deterministic."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x = x_T
    for i in _steps(diffusion.num_steps, label="ddim", progress=progress):
        x = ddim_step(model_fn, diffusion, x, i=i, eta=eta, generators=generators)
    return x


def dpmpp_update(x_t: torch.Tensor, pred_x0: Sequence[torch.Tensor], lambdas: Sequence[float], *,
                 lambda_next: float, alpha_next: float, sigma_ratio: float) -> torch.Tensor:
    """One DPM-Solver++ multistep update (Lu et al. 2022, data prediction) of order ``len(pred_x0)``
    (1 to 3) from the newest step to ``lambda_next``. ``pred_x0``: the last denoised estimates, oldest
    first, at log-SNRs ``lambdas``; ``sigma_ratio = sigma_next / sigma_t``."""
    order = len(pred_x0)
    assert 1 <= order <= 3 and len(lambdas) == order, (order, len(lambdas))
    h = lambda_next - lambdas[-1]
    phi_1 = math.expm1(-h)
    x_next = sigma_ratio * x_t - (alpha_next * phi_1) * pred_x0[-1]
    if order == 1:
        return x_next
    r0 = (lambdas[-1] - lambdas[-2]) / h
    d1_0 = (pred_x0[-1] - pred_x0[-2]) / r0
    if order == 2:  # 2M: D = x0 + (x0 - x0_prev) / (2 r)
        return x_next - (0.5 * alpha_next * phi_1) * d1_0
    r1 = (lambdas[-2] - lambdas[-3]) / h
    d1_1 = (pred_x0[-2] - pred_x0[-3]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    return x_next + (alpha_next * phi_2) * d1 - (alpha_next * phi_3) * d2


def dpmpp_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, x_T: torch.Tensor, *, order: int,
                 progress: bool = False) -> torch.Tensor:
    """DPM-Solver++ multistep of ``order`` 2 or 3 on the steps of ``diffusion`` (lower orders while the
    history fills up). ``lambda_t = log(alpha_t / sigma_t)``; the last step returns the denoised estimate
    at step 0 (first order to ``sigma = 0``), so NFE = ``diffusion.num_steps``."""
    alpha_bar = diffusion.alpha_bar
    alpha_t, sigma_t = np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)
    lambda_t = np.log(alpha_t) - np.log(sigma_t)
    x, history, lambdas = x_T, [], []
    for i in _steps(diffusion.num_steps, label=f"dpmpp_{order}m", progress=progress):
        t = _full(i, x)
        eps, _ = diffusion.model_output(model_fn, x, t)
        pred_x0 = diffusion.predict_x0(x, t, eps)
        if i == 0:
            return pred_x0
        history, lambdas = [*history, pred_x0][-order:], [*lambdas, float(lambda_t[i])][-order:]
        x = dpmpp_update(x, history, lambdas, lambda_next=float(lambda_t[i - 1]),
                         alpha_next=float(alpha_t[i - 1]), sigma_ratio=float(sigma_t[i - 1] / sigma_t[i]))
    raise AssertionError("unreachable: the loop returns at i = 0")


def dpmpp_2m_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, x_T: torch.Tensor, *,
                    generators: Sequence[torch.Generator], progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, alg. 2): deterministic, one network evaluation per step."""
    del generators  # deterministic
    return dpmpp_sample(model_fn, diffusion, x_T, order=2, progress=progress)


def dpmpp_3m_sample(model_fn: ModelFn, diffusion: GaussianDiffusion, x_T: torch.Tensor, *,
                    generators: Sequence[torch.Generator], progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(3M): third-order multistep, for conditional sampling without guidance."""
    del generators  # deterministic
    return dpmpp_sample(model_fn, diffusion, x_T, order=3, progress=progress)


SamplerFn = Callable[..., torch.Tensor]

SAMPLERS: dict[str, SamplerFn] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "dpmpp_2m": dpmpp_2m_sample,
    "dpmpp_3m": dpmpp_3m_sample,
}

# None: every step of the trained schedule.
DEFAULT_STEPS: dict[str, int | None] = {"ddpm": None, "ddim": 100, "dpmpp_2m": 25, "dpmpp_3m": 25}


def sample(model_fn: ModelFn, diffusion: GaussianDiffusion, shape: Sequence[int], *, sampler: str,
           steps: int | None = None, eta: float = 0.0, generators: Sequence[torch.Generator],
           device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
           progress: bool = False, spacing: str = "logsnr") -> torch.Tensor:
    """Draw ``shape = [N, C, H, W]`` samples with ``sampler`` (a key of :data:`SAMPLERS`) on ``steps``
    steps (``None``: the sampler's default, see :data:`DEFAULT_STEPS`), chosen from the trained schedule
    by ``spacing`` (``"logsnr"`` or ``"uniform"``, see :mod:`hpcdiff.diffusion.schedules`). ``eta`` is
    DDIM's (``ddpm`` is ancestral, the ``dpmpp_*`` solvers deterministic). ``generators``: one per
    sample; the first draw of each is the sample's ``x_T``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
    if eta != 0.0 and sampler != "ddim":
        raise ValueError(f"eta is a DDIM parameter; got eta={eta} with sampler {sampler!r}")
    assert len(shape) >= 3 and len(generators) == shape[0], \
        f"shape {tuple(shape)} needs one generator per sample, got {len(generators)}"
    steps = DEFAULT_STEPS[sampler] if steps is None else steps
    if steps is not None and steps != diffusion.num_steps:
        diffusion = diffusion.respace(respaced_timesteps(diffusion.alpha_bar, steps, spacing=spacing))
    device = torch.device("cpu") if device is None else torch.device(device)
    kwargs = {"eta": eta} if sampler == "ddim" else {}
    with torch.no_grad():
        x_T = randn_per_sample(shape, generators, device=device, dtype=dtype)
        return SAMPLERS[sampler](model_fn, diffusion, x_T, generators=generators, progress=progress, **kwargs)
