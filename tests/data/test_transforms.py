"""Transforms: exact inverses (zeros and negatives included) and streaming statistics."""

from __future__ import annotations

import numpy as np
import pytest

from hpcdiff.data.transforms import (
    TRANSFORMS,
    ChannelStats,
    RunningStats,
    forward,
    inverse,
    inverse_transform,
    inverse_transform_counted,
    merged,
    shape_forward,
)


@pytest.mark.parametrize("kind", sorted(TRANSFORMS))
def test_round_trip_to_float32_precision(kind):
    rng = np.random.default_rng(1)
    if kind == "log1p":  # precipitation: many exact zeros, heavy tail
        x = np.where(rng.random(10_000) < 0.6, 0.0, rng.gamma(0.5, 8.0, 10_000))
    elif kind == "asinh":  # evaporation: negative, zero and a few positive values
        x = np.concatenate([-rng.gamma(1.0, 2.0, 5000), np.zeros(100), rng.gamma(1.0, 0.1, 500)])
    else:
        x = rng.normal(280.0, 8.0, 10_000)
    g = shape_forward(x, kind=kind, scale=0.5)
    stats = {"transform": kind, "scale": 0.5, "mean": float(g.mean()), "std": float(g.std())}
    y = forward(x, stats).astype(np.float32)  # stored as float32 in the shards
    back = inverse(y, stats)
    np.testing.assert_allclose(back, x, rtol=2e-6, atol=2e-6 * max(1.0, np.abs(x).mean()))
    assert abs(float(inverse(forward(0.0, stats), stats))) < 1e-12  # zeros (dry days) stay zero
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1) < 1e-5


def test_zero_maps_to_zero_in_shape_space():
    for kind in ("log1p", "asinh"):
        assert shape_forward(np.zeros(3), kind=kind, scale=2.0).tolist() == [0.0, 0.0, 0.0]


def test_running_stats_match_numpy_and_merge_in_any_split():
    rng = np.random.default_rng(2)
    data = rng.normal(5000.0, 3.0, (12, 2, 4, 5))
    mask = rng.random((4, 5)) < 0.5
    parts = []
    for chunk in np.array_split(data, 3):
        part = RunningStats.empty(2)
        for piece in np.array_split(chunk, 2):
            part.update(piece, mask)
        parts.append(part)
    total = merged(parts)
    ref = np.moveaxis(data, 1, 0)[:, :, mask].reshape(2, -1)
    np.testing.assert_allclose(total.mean, ref.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(total.std, ref.std(axis=1), rtol=1e-10)
    assert total.count.tolist() == [ref.shape[1]] * 2


def test_inverse_transform_uses_channel_order():
    channels = [(ChannelStats("zscore", 1.0, 280.0, 5.0), (None, None)),
                (ChannelStats("log1p", 0.1, 1.0, 2.0), (0.0, None))]
    y = np.zeros((3, 2, 4, 4), np.float32)
    out = inverse_transform(channels, y)
    assert out.dtype == np.float32 and out.shape == y.shape
    np.testing.assert_allclose(out[:, 0], 280.0)
    np.testing.assert_allclose(out[:, 1], 0.1 * np.expm1(1.0), rtol=1e-6)


def test_decoding_respects_physical_bounds():
    """A normalized value below the log1p transform's zero maps to a negative amount; decoding clamps it
    to the lower bound (0 kg m-2) and counts it; unbounded channels keep every value."""
    stats = ChannelStats("log1p", 0.1, 1.0, 2.0)
    y = np.array([-3.0, -1.0, 0.0, 2.0], np.float32).reshape(1, 1, 2, 2)
    raw = inverse(y[0, 0], stats)
    assert (raw < 0).sum() == 2  # the transform's own inverse leaves the physical domain here
    out, clamped = inverse_transform_counted([(stats, (0.0, None))], y)
    assert clamped == [2] and out.min() == 0.0
    np.testing.assert_allclose(out[0, 0][raw >= 0], raw[raw >= 0], rtol=1e-6)
    free, none = inverse_transform_counted([(stats, (None, None))], y)
    assert none == [0] and free.min() < 0
