"""Exponential moving average of the weights, kept in fp32 whatever the training precision."""

from __future__ import annotations

import torch


class EMA:
    """``ema = decay * ema + (1 - decay) * param`` after every optimizer step, in fp32.

    The shadow is a plain ``{name: fp32 tensor}`` state dict, so it loads into a fresh fp32 model for
    validation and sampling without DeepSpeed.
    """

    def __init__(self, model: torch.nn.Module, *, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, value in model.state_dict().items():
            shadow = self.shadow[name]
            if value.dtype.is_floating_point:
                shadow.lerp_(value.detach().to(shadow.device, torch.float32), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        self.shadow = {k: v.float().clone() for k, v in state.items()}
