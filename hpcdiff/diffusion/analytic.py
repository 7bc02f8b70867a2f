"""The exact ε-model of Gaussian data ``x_0 ~ N(m, s²)`` (independent per element), in closed form.

With ``x_t = a x_0 + sigma eps`` (``a = sqrt(alpha_bar_t)``, ``sigma = sqrt(1 - alpha_bar_t)``), ``x_t`` is
Gaussian with variance ``a² s² + sigma²`` and

    E[eps | x_t]   = sigma (x_t - a m) / (a² s² + sigma²),
    Var[x_0 | x_t] = s² sigma² / (a² s² + sigma²).

The true reverse step ``p(x_{t-1} | x_t)`` is then Gaussian with the posterior mean of ``E[x_0 | x_t]``
and variance ``beta_tilde_t + c1² Var[x_0 | x_t]`` (``c1`` the posterior-mean coefficient of ``x_0``),
which the learned-variance output ``v`` encodes exactly. A reference to validate samplers against
known moments and to benchmark them without a network.
"""

from __future__ import annotations

import torch

from hpcdiff.diffusion.gaussian import GaussianDiffusion, ModelFn


def gaussian_eps_model(diffusion: GaussianDiffusion, mean: torch.Tensor, std: torch.Tensor, *,
                       learn_sigma: bool = False) -> ModelFn:
    """``(x_t [N, C, H, W], t [N]) -> eps [N, C, H, W]`` (or ``[N, 2C, H, W]`` with the optimal ``v``)
    for data ``N(mean, std²)``; ``mean``, ``std`` broadcast against ``[C, H, W]``. ``diffusion`` is the
    schedule the model is trained on: ``t`` are its (original) steps."""
    assert torch.equal(diffusion.timestep_map, torch.arange(diffusion.num_steps)), \
        "give the diffusion the model is trained on, not a respaced one"

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        m, s2 = mean.to(x_t), std.to(x_t) ** 2
        alpha_bar, sigma2 = diffusion.coef("alpha_bar", t, x_t), diffusion.coef("one_minus_alpha_bar", t, x_t)
        a = torch.sqrt(alpha_bar)
        var_x_t = alpha_bar * s2 + sigma2
        eps = torch.sqrt(sigma2) * (x_t - a * m) / var_x_t
        if not learn_sigma:
            return eps
        var_x0 = (s2 * sigma2 / var_x_t).expand_as(x_t)
        log_var = torch.log(diffusion.coef("posterior_variance", t, x_t)
                            + diffusion.coef("posterior_mean_coef1", t, x_t) ** 2 * var_x0)
        min_log = diffusion.coef("posterior_log_variance_clipped", t, x_t)
        max_log = diffusion.coef("log_betas", t, x_t)
        v = 2.0 * (log_var - min_log) / (max_log - min_log) - 1.0
        return torch.cat([eps, v], dim=1)

    return fn
