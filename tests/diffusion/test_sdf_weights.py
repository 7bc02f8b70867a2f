"""Loss weights from the signed coast distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcdiff.diffusion.weights import sdf_weights


def test_weights_have_mean_one_and_grow_towards_land():
    sdf = np.linspace(-200.0, 50.0, 251)  # km, positive on land
    w = sdf_weights(sdf, land_weight=1.0, sea_scale_km=20.0, floor=0.1)
    assert isinstance(w, np.ndarray) and w.shape == sdf.shape
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(w) >= 0) and np.all(np.diff(w[sdf < 0]) > 0)  # monotone; strictly offshore
    land = w[sdf >= 0]
    assert np.allclose(land, land[0])
    assert w[0] / land[0] == pytest.approx(0.1 + 0.9 * np.exp(-10.0))  # far offshore: down to the floor
    near = sdf_weights(np.array([-1e-6, 0.0, 1.0]))
    assert near[0] == pytest.approx(near[1], rel=1e-6)  # continuous at the coast


def test_tensor_in_tensor_out_and_floor_is_respected():
    sdf = torch.tensor([[-1000.0, -20.0], [0.0, 5.0]], dtype=torch.float32)
    w = sdf_weights(sdf, land_weight=2.0, sea_scale_km=10.0, floor=0.5)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32 and w.shape == (2, 2)
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-6)
    assert float(w[0, 0] / w[1, 0]) == pytest.approx(0.25, rel=1e-6)  # floor / land_weight
    assert sdf_weights(torch.tensor([1, -3])).dtype == torch.float32


@pytest.mark.parametrize("kwargs", [{"floor": 0.0}, {"floor": 2.0}, {"sea_scale_km": 0.0}])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        sdf_weights(np.zeros(3), **kwargs)


def test_non_finite_distances_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        sdf_weights(np.array([0.0, np.nan]))
