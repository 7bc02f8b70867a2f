"""The denoiser: one object owns the parameterization, for training and sampling alike.

EDM's preconditioning pattern (Karras et al. 2022, ``EDMPrecond``): the backbone computes a raw output
``F``; the wrapper turns the physical problem into the backbone's and back. Here that is

- **what is diffused** — :meth:`Denoiser.encode` maps the normalized target to ``x_0`` (the target
  itself, or its scaled residual to the ERA5 baseline, :class:`hpcdiff.data.residual.Residual`) and
  :meth:`Denoiser.decode` is its exact inverse;
- **what the backbone predicts** — ``eps`` or the velocity ``v = sqrt(ab) eps - sqrt(1 - ab) x_0``
  (Salimans & Ho 2022). :meth:`Denoiser.forward` always returns ``eps`` (and the variance channels),
  converted in float32 whatever precision the backbone runs in, so the diffusion math
  (:mod:`hpcdiff.diffusion`) is written once, in ``eps``. Training on the backbone's own target is a
  per-step weight of the ``eps`` error: ``|v_pred - v|^2 = |eps_pred - eps|^2 / ab``
  (:meth:`Denoiser.mse_weight`).

The backbone runs in its parameters' dtype (bf16 / fp16 under DeepSpeed) or under ``autocast``;
inputs and outputs of the wrapper are float32. An optional large-scale ``context [N, Cx, Hx, Wx]``
(:class:`~hpcdiff.models.unet.UNet`) is passed on to the backbone like the conditions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hpcdiff.data.residual import Residual

PREDICTIONS = ("eps", "v")
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Denoiser(nn.Module):
    """``(x_t [N, C, H, W], t [N], cond [N, Cc, H, W], doy [N], context [N, Cx, Hx, Wx] or None) ->
    [eps | variance channels]`` around a conditional ``backbone``. ``alpha_bar [T]`` (float64) is the
    trained schedule's, indexed by the original step ``t``."""

    def __init__(self, backbone: nn.Module, *, prediction: str, alpha_bar: np.ndarray,
                 residual: Residual | None = None) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        self.backbone, self.prediction, self.residual = backbone, prediction, residual
        alpha_bar = np.asarray(alpha_bar, np.float64)
        # plain tensors, not buffers: DeepSpeed casts buffers to bf16, and the conversion needs fp32
        self._sqrt_ab = torch.from_numpy(np.sqrt(alpha_bar))
        self._sqrt_one_minus_ab = torch.from_numpy(np.sqrt(1.0 - alpha_bar))
        self.autocast: torch.dtype | None = None  # sampling may run the backbone under autocast

    # -- what is diffused ------------------------------------------------------------------------------

    def encode(self, target: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Normalized target ``[N, Ct, H, W]`` -> the diffused ``x_0``."""
        return target if self.residual is None else self.residual.encode(target, cond)

    def decode(self, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The diffused ``x_0`` -> the normalized target (exact inverse of :meth:`encode`)."""
        return x0 if self.residual is None else self.residual.decode(x0, cond)

    # -- what the backbone predicts --------------------------------------------------------------------

    def _coef(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = table.to(t.device)[t.long()].to(torch.float32)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def to_eps(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The backbone's prediction -> ``eps`` (``eps = sqrt(ab) v + sqrt(1 - ab) x_t`` for ``v``)."""
        if self.prediction == "eps":
            return pred
        return self._coef(self._sqrt_ab, t, x_t) * pred + self._coef(self._sqrt_one_minus_ab, t, x_t) * x_t

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the backbone learns to output: ``eps``, or ``v = sqrt(ab) eps - sqrt(1 - ab) x_0``."""
        if self.prediction == "eps":
            return noise
        return self._coef(self._sqrt_ab, t, x0) * noise - self._coef(self._sqrt_one_minus_ab, t, x0) * x0

    def mse_weight(self, t: torch.Tensor) -> torch.Tensor | None:
        """Per-sample weight ``[N]`` of the ``eps`` squared error that makes it the error of the backbone's
        own target (``1 / ab`` for ``v``; ``None``: 1 for ``eps``)."""
        if self.prediction == "eps":
            return None
        return self._coef(self._sqrt_ab, t, t.float()).pow(-2)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, doy: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, C, H, W]`` ``eps`` (``[N, 2C, H, W]`` with the variance channels after it), float32.
        ``context [N, Cx, Hx, Wx]`` goes to the backbone in its dtype, ``cond`` in float32 (the backbone
        casts it); without a context the backbone is called with the four inputs only."""
        dtype = next(self.backbone.parameters()).dtype
        precision = (torch.autocast(x_t.device.type, dtype=self.autocast) if self.autocast is not None
                     else contextlib.nullcontext())
        extra = {} if context is None else {"context": context.to(dtype)}
        with precision:
            # cond stays float32: the backbone casts it where it joins the input, after reading the pixels'
            # places in a context box from it at full precision
            out = self.backbone(x_t.to(dtype), t, cond, doy, **extra)
        out = out.float()
        channels = x_t.shape[1]
        pred, rest = out[:, :channels], out[:, channels:]
        eps = self.to_eps(pred, x_t.float(), t)
        return eps if rest.shape[1] == 0 else torch.cat([eps, rest], dim=1)

    def bind(self, cond: torch.Tensor, doy: torch.Tensor, context: torch.Tensor | None = None) -> ModelFn:
        """``(x_t, t) -> eps`` with the conditions (and the context, if any) bound, the function the
        diffusion code calls."""

        def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self(x_t, t, cond, doy, context)

        return fn
