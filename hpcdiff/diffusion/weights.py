"""Per-pixel loss weights from the signed distance to the coast (the poster's SDF weighting)."""

from __future__ import annotations

import numpy as np
import torch


def sdf_weights(sdf_km: torch.Tensor | np.ndarray, *, land_weight: float = 1.0, sea_scale_km: float = 20.0,
                floor: float = 0.1) -> torch.Tensor | np.ndarray:
    """Loss weights, same shape and type as ``sdf_km`` (signed distance to the coast in km, positive on
    land): ``land_weight`` on land and at the coast, decaying offshore as
    ``floor + (land_weight - floor) · exp(sdf / sea_scale_km)`` (continuous at the coast, monotone,
    never below ``floor``); then divided by their mean over all given pixels, so the mean is 1.

    Computed in float64; a tensor comes back on its device, in its dtype if floating (else float32)."""
    if not 0.0 < floor <= land_weight:
        raise ValueError(f"need 0 < floor <= land_weight, got floor={floor}, land_weight={land_weight}")
    if sea_scale_km <= 0.0:
        raise ValueError(f"sea_scale_km must be positive, got {sea_scale_km}")
    is_tensor = isinstance(sdf_km, torch.Tensor)
    sdf = sdf_km.detach().cpu().double().numpy() if is_tensor else np.asarray(sdf_km, dtype=np.float64)
    if sdf.size == 0 or not np.all(np.isfinite(sdf)):
        raise ValueError("sdf_km must be a non-empty array of finite distances")
    offshore = floor + (land_weight - floor) * np.exp(np.minimum(sdf, 0.0) / sea_scale_km)
    weight = np.where(sdf >= 0.0, land_weight, offshore)
    weight = weight / weight.mean()
    if is_tensor:
        dtype = sdf_km.dtype if sdf_km.is_floating_point() else torch.float32
        return torch.as_tensor(weight, dtype=dtype, device=sdf_km.device)
    return weight
