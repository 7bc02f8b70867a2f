"""Gaussian diffusion with an ε-predicting model (Ho et al. 2020; improved DDPM, Nichol & Dhariwal 2021).

Forward process ``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)``; the model function
returns the noise ``eps``, and everything here (posterior, vlb, samplers) works with ``eps``. A backbone
that predicts something else (the velocity ``v``) is converted to ``eps`` by the wrapper that owns the
parameterization (:class:`hpcdiff.models.denoiser.Denoiser`), which also gives
:meth:`GaussianDiffusion.training_losses` the per-sample ``mse_weight`` that makes the simple loss the
error of the backbone's own target.
With ``var_type="learned_range"``, a second block of channels ``v ∈ [-1, 1]`` interpolates the reverse
log-variance between ``log beta_t`` and ``log beta_tilde_t`` (improved DDPM eq. 15).

Tensors are ``[N, C, H, W]`` (any ``[N, C, ...]`` works); time steps ``t`` are integer indices ``[N]`` into
this diffusion's own schedule. A respaced diffusion (:meth:`GaussianDiffusion.respace`) calls the model
with the *original* step, so one trained model serves every respaced sampler. Schedules are held in
float64 and cast to the data's dtype per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from hpcdiff.diffusion.schedules import respace_betas

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

VAR_TYPES = ("learned_range", "fixed_small", "fixed_large")
LOSS_TYPES = ("hybrid", "simple", "vlb")
VLB_UNITS = {"bits": 1.0 / math.log(2.0), "nats": 1.0}


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, *, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(N(mean1, e^logvar1) || N(mean2, e^logvar2))`` in nats (broadcasting)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def gaussian_nll(x: torch.Tensor, *, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise ``-log N(x; mean, e^log_var)`` in nats: a continuous density, so it can be negative.
    Used for the ``t = 0`` decoder term instead of DDPM's 8-bit discretized likelihood."""
    return 0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def pixel_weights(x0: torch.Tensor, weight: torch.Tensor | None,
                  mask: torch.Tensor | None) -> torch.Tensor | None:
    """Combine a weight map and a mask, each ``[N or 1, C or 1, H, W]``, into one broadcastable weight
    (``None`` when both are ``None``)."""
    out = None
    for name, w in (("weight", weight), ("mask", mask)):
        if w is None:
            continue
        assert w.ndim == x0.ndim and w.shape[0] in (1, x0.shape[0]) and w.shape[1] in (1, x0.shape[1]) \
            and w.shape[2:] == x0.shape[2:], f"{name} {tuple(w.shape)} does not fit x0 {tuple(x0.shape)}"
        w = w.to(device=x0.device, dtype=torch.float32)
        out = w if out is None else out * w
    return out


def weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-sample weighted mean over all but the batch dimension: ``[N, ...] -> [N]``. A sample whose
    weights are all zero gets 0."""
    dims = tuple(range(1, values.ndim))
    if weight is None:
        return values.mean(dim=dims)
    weight = weight.expand(values.shape)
    return (values * weight).sum(dim=dims) / weight.sum(dim=dims).clamp_min(1e-12)


class GaussianDiffusion:
    """The forward process, the posterior, the model's reverse step and the training losses for a
    schedule ``betas [T]``. Losses: ``simple`` (MSE of ε, optionally weighted per sample), ``vlb``
    (T · L_t, the variational bound estimated from one step), ``hybrid`` = simple + ``vlb_weight`` · vlb
    with the model mean frozen in the vlb term, so it trains the variance only (improved DDPM
    sec. 3.1)."""

    def __init__(self, betas: np.ndarray | Sequence[float], *, var_type: str = "learned_range",
                 loss_type: str = "hybrid", vlb_weight: float = 0.001, vlb_units: str = "bits",
                 timestep_map: Sequence[int] | None = None) -> None:
        if var_type not in VAR_TYPES:
            raise ValueError(f"unknown var_type {var_type!r}; valid: {', '.join(VAR_TYPES)}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
        if vlb_units not in VLB_UNITS:
            raise ValueError(f"unknown vlb_units {vlb_units!r}; valid: {', '.join(VLB_UNITS)}")
        if loss_type == "hybrid" and var_type != "learned_range":
            raise ValueError("loss_type 'hybrid' trains the variance only; with a fixed variance its vlb "
                             "term has no gradient: use loss_type 'simple' (or 'vlb')")
        self.var_type, self.loss_type = var_type, loss_type
        self.vlb_weight, self.vlb_units = vlb_weight, vlb_units
        self.betas = np.asarray(betas, dtype=np.float64)
        assert self.betas.ndim == 1 and self.betas.size >= 2, "betas must be 1-D with at least 2 steps"
        assert np.all((self.betas > 0) & (self.betas <= 1)), "betas must lie in (0, 1]"
        steps = np.arange(self.num_steps) if timestep_map is None else np.asarray(timestep_map, np.int64)
        assert steps.shape == self.betas.shape, "timestep_map needs one original step per step"
        self.timestep_map = torch.as_tensor(steps, dtype=torch.long)
        self._build_tables()

    def _build_tables(self) -> None:
        """Everything the per-step formulas need, once, in float64."""
        betas = self.betas
        self.alpha_bar = np.cumprod(1.0 - betas)
        self.alpha_bar_prev = np.append(1.0, self.alpha_bar[:-1])
        one_minus = 1.0 - self.alpha_bar  # in float64: 1 - alpha_bar_0 ~ 4e-5 for the cosine schedule
        self.posterior_variance = betas * (1.0 - self.alpha_bar_prev) / one_minus
        # beta_tilde_0 = 0: clip its log to beta_tilde_1, as improved DDPM does.
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1],
                                                               self.posterior_variance[1:]))
        tables = {
            "sqrt_alpha_bar": np.sqrt(self.alpha_bar),
            "sqrt_one_minus_alpha_bar": np.sqrt(one_minus),
            "sqrt_recip_alpha_bar": np.sqrt(1.0 / self.alpha_bar),
            "sqrt_recipm1_alpha_bar": np.sqrt(1.0 / self.alpha_bar - 1.0),
            "posterior_mean_coef1": betas * np.sqrt(self.alpha_bar_prev) / one_minus,
            "posterior_mean_coef2": (1.0 - self.alpha_bar_prev) * np.sqrt(1.0 - betas) / one_minus,
            "posterior_variance": self.posterior_variance,
            "posterior_log_variance_clipped": self.posterior_log_variance_clipped,
            "log_betas": np.log(betas),
            # fixed_large: beta_t, except beta_tilde_1 at t = 0 for a better decoder term (improved DDPM)
            "fixed_large_variance": np.append(self.posterior_variance[1], betas[1:]),
            "alpha_bar": self.alpha_bar,
            "one_minus_alpha_bar": one_minus,
            "log_one_minus_alpha_bar": np.log(one_minus),
            "alpha_bar_prev": self.alpha_bar_prev,
        }
        self._tables = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tables.items()}
        self._on_device: dict[tuple[str, torch.device], torch.Tensor] = {}

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def learn_sigma(self) -> bool:
        return self.var_type == "learned_range"

    def coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at steps ``t [N]``, shaped ``[N, 1, ...]`` to broadcast against ``like``."""
        key = (name, t.device)
        if key not in self._on_device:  # one copy per device, not one per call
            self._on_device[key] = self._tables[name].to(t.device)
        values = self._on_device[key][t.long()].to(like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def respace(self, timesteps: Sequence[int]) -> GaussianDiffusion:
        """The diffusion that visits only ``timesteps`` (ascending indices into this one), keeping their
        ``alpha_bar``; it calls the model with the original steps. Its learned variance interpolates
        between the respaced ``beta`` and ``beta_tilde`` (improved DDPM sec. 4)."""
        steps = list(timesteps)
        return GaussianDiffusion(respace_betas(self.alpha_bar, steps), var_type=self.var_type,
                                 loss_type=self.loss_type, vlb_weight=self.vlb_weight,
                                 vlb_units=self.vlb_units,
                                 timestep_map=self.timestep_map[steps].tolist())

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None, *,
                         device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` steps drawn uniformly from ``0 .. T-1``: ``[n]`` long."""
        gen_device = generator.device if generator is not None else "cpu"
        return torch.randint(self.num_steps, (n,), generator=generator, device=gen_device).to(device)

    # -- forward process and posterior ---------------------------------------------------------------

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mean ``[N, C, H, W]``, variance and log-variance ``[N, 1, 1, 1]`` of ``q(x_t | x_0)``."""
        mean = self.coef("sqrt_alpha_bar", t, x0) * x0
        return mean, self.coef("one_minus_alpha_bar", t, x0), self.coef("log_one_minus_alpha_bar", t, x0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, *,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``: ``[N, C, H, W]``."""
        noise = torch.randn_like(x0) if noise is None else noise
        assert noise.shape == x0.shape and t.shape == (x0.shape[0],), (noise.shape, x0.shape, t.shape)
        return self.coef("sqrt_alpha_bar", t, x0) * x0 + self.coef("sqrt_one_minus_alpha_bar", t, x0) * noise

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor,
                                  t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mean ``[N, C, H, W]``, variance ``beta_tilde_t`` and its clipped log ``[N, 1, 1, 1]`` of
        ``q(x_{t-1} | x_t, x_0)`` (DDPM eq. 6-7)."""
        assert x0.shape == x_t.shape, (x0.shape, x_t.shape)
        mean = (self.coef("posterior_mean_coef1", t, x_t) * x0
                + self.coef("posterior_mean_coef2", t, x_t) * x_t)
        return (mean, self.coef("posterior_variance", t, x_t),
                self.coef("posterior_log_variance_clipped", t, x_t))

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """Elementwise ``KL(q(x_T | x_0) || N(0, I))`` in nats: the bound's last term, ``[N, C, H, W]``."""
        t = torch.full((x0.shape[0],), self.num_steps - 1, device=x0.device, dtype=torch.long)
        mean, _, log_var = self.q_mean_variance(x0, t)
        return normal_kl(mean, log_var, mean2=torch.zeros_like(mean), logvar2=torch.zeros_like(mean))

    # -- the model's reverse step ---------------------------------------------------------------------

    def model_output(self, model_fn: ModelFn, x_t: torch.Tensor,
                     t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Call the model at the original steps of ``t``; return ``eps`` ``[N, C, H, W]`` and the variance
        channels ``v`` ``[N, C, H, W]`` (``None`` for a fixed variance)."""
        assert t.shape == (x_t.shape[0],), f"t must be [N], got {tuple(t.shape)} for x_t {tuple(x_t.shape)}"
        out = model_fn(x_t, self.timestep_map.to(t.device)[t.long()])  # original steps
        channels = x_t.shape[1] * (2 if self.learn_sigma else 1)
        assert out.shape == (x_t.shape[0], channels, *x_t.shape[2:]), \
            f"model output {tuple(out.shape)}, expected {channels} channels for x_t {tuple(x_t.shape)}"
        if not self.learn_sigma:
            return out, None
        pred, v = out.split(x_t.shape[1], dim=1)
        return pred, v

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)``."""
        return (self.coef("sqrt_recip_alpha_bar", t, x_t) * x_t
                - self.coef("sqrt_recipm1_alpha_bar", t, x_t) * eps)

    def model_log_variance(self, t: torch.Tensor, like: torch.Tensor,
                           v: torch.Tensor | None) -> torch.Tensor:
        """Reverse-step log-variance: learned ``frac log beta + (1 - frac) log beta_tilde`` with
        ``frac = (v + 1) / 2`` (``[N, C, H, W]``), or the fixed one (``[N, 1, 1, 1]``)."""
        if self.var_type == "learned_range":
            assert v is not None, "learned_range needs the variance channels"
            min_log = self.coef("posterior_log_variance_clipped", t, like)
            max_log = self.coef("log_betas", t, like)
            frac = (v + 1.0) / 2.0
            return frac * max_log + (1.0 - frac) * min_log
        if self.var_type == "fixed_small":
            return self.coef("posterior_log_variance_clipped", t, like)
        return torch.log(self.coef("fixed_large_variance", t, like))

    def p_mean_variance_from_output(self, x_t: torch.Tensor, t: torch.Tensor, *, eps: torch.Tensor,
                                    v: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``p(x_{t-1} | x_t)`` from a model output: keys ``mean``, ``log_variance``, ``pred_x0``, ``eps``."""
        pred_x0 = self.predict_x0(x_t, t, eps)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "log_variance": self.model_log_variance(t, x_t, v), "pred_x0": pred_x0,
                "eps": eps}

    def p_mean_variance(self, model_fn: ModelFn, x_t: torch.Tensor,
                        t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the model and return ``p(x_{t-1} | x_t)``: see :meth:`p_mean_variance_from_output`."""
        eps, v = self.model_output(model_fn, x_t, t)
        return self.p_mean_variance_from_output(x_t, t, eps=eps, v=v)

    # -- losses ----------------------------------------------------------------------------------------

    def vlb_terms(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, *, eps: torch.Tensor,
                  v: torch.Tensor | None) -> torch.Tensor:
        """Elementwise bound term ``L_t`` in nats, ``[N, C, H, W]``:
        ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for ``t > 0``, and at ``t = 0`` the continuous
        Gaussian decoder NLL ``-log p(x_0 | x_t)`` (our fields are not 8-bit images)."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        p = self.p_mean_variance_from_output(x_t, t, eps=eps, v=v)
        kl = normal_kl(true_mean, true_log_var, mean2=p["mean"], logvar2=p["log_variance"])
        nll = gaussian_nll(x0, mean=p["mean"], log_var=p["log_variance"])
        first = (t == 0).reshape(-1, *([1] * (x0.ndim - 1)))
        return torch.where(first, nll, kl)

    def training_losses(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, *,
                        noise: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                        mask: torch.Tensor | None = None,
                        mse_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-sample losses ``[N]``: ``loss``, ``mse`` and (vlb, hybrid) ``vlb`` = ``T · L_t`` in
        ``vlb_units`` per dimension. Each is the ``weight``-weighted mean over the ``mask``-ed pixels;
        ``weight``, ``mask``: ``[N or 1, C or 1, H, W]`` (``None``: all pixels count equally).
        ``mse_weight [N]`` scales each sample's ``eps`` error (the parameterization's; ``None``: 1)."""
        assert x0.ndim >= 3 and t.shape == (x0.shape[0],), f"x0 {tuple(x0.shape)}, t {tuple(t.shape)}"
        noise = torch.randn_like(x0) if noise is None else noise
        w = pixel_weights(x0, weight, mask)
        x_t = self.q_sample(x0, t, noise=noise)
        eps, v = self.model_output(model_fn, x_t, t)
        terms = {"mse": weighted_mean((noise - eps) ** 2, w)}
        if mse_weight is not None:
            terms["mse"] = terms["mse"] * mse_weight.to(terms["mse"].dtype)
        if self.loss_type in ("vlb", "hybrid"):
            # hybrid: the vlb term sees a frozen mean, so it only trains the variance channels
            mean_eps = eps.detach() if self.loss_type == "hybrid" else eps
            l_t = self.vlb_terms(x0, x_t, t, eps=mean_eps, v=v)
            terms["vlb"] = weighted_mean(l_t, w) * (self.num_steps * VLB_UNITS[self.vlb_units])
        if self.loss_type == "simple":
            terms["loss"] = terms["mse"]
        elif self.loss_type == "vlb":
            terms["loss"] = terms["vlb"]
        else:
            terms["loss"] = terms["mse"] + self.vlb_weight * terms["vlb"]
        return terms
