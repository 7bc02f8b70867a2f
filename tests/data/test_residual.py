"""Residual targets: the baseline is the target's own ERA5 condition in the target's normalization,
encode/decode are exact inverses, the fitted scale gives unit RMS, mismatched transforms are refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hpcdiff.data.loader import ShardDataset
from hpcdiff.data.residual import Residual, affine_baseline, fit_residual
from hpcdiff.data.transforms import forward, inverse
from hpcdiff.errors import HpcdiffError


@pytest.fixture(scope="module")
def batches(tiny_dataset):
    ds = ShardDataset(tiny_dataset, "train", batch_size=4, shuffle=False)
    return ds.manifest, [ds[i] for i in range(len(ds))]


def test_baseline_is_the_condition_in_target_units(batches):
    manifest, data = batches
    residual = fit_residual(manifest, data)
    cond = data[0]["cond"].double()
    base = residual.baseline(cond).numpy()
    for k, target in enumerate(manifest["targets"]):
        i = [c["name"] for c in manifest["conditions"]].index(target["name"])
        physical = inverse(cond[:, i].numpy(), manifest["conditions"][i]["stats"])
        np.testing.assert_allclose(base[:, k], forward(physical, target["stats"]), atol=1e-9)


def test_encode_decode_round_trip_and_unit_scale(batches):
    manifest, data = batches
    residual = fit_residual(manifest, data)
    target, cond = data[1]["target"].double(), data[1]["cond"].double()
    x = residual.encode(target, cond)
    torch.testing.assert_close(residual.decode(x, cond), target, rtol=0, atol=1e-12)
    every = torch.cat([residual.encode(b["target"].double(), b["cond"].double()) for b in data])
    rms = every.pow(2).mean(dim=(0, 2, 3)).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-9, atol=0)
    assert Residual.from_state(residual.to_state()) == residual
    # the residual is much smaller than the target itself: the coarse field explains most of it
    unit = Residual(residual.index, residual.a, residual.b, (1.0,) * 3)
    assert float(unit.encode(target, cond)[:, 0].std()) < 0.5 * float(target[:, 0].std())


def test_mismatched_or_missing_condition_is_refused(batches):
    manifest, _ = batches
    other = copy.deepcopy(manifest)
    other["conditions"][1]["stats"]["transform"] = "zscore"
    with pytest.raises(HpcdiffError, match="target 'tp' uses transform log1p .* condition uses zscore"):
        affine_baseline(other)
    other = copy.deepcopy(manifest)
    other["conditions"] = [c for c in other["conditions"] if c["name"] != "e"]
    with pytest.raises(HpcdiffError, match="target 'e' has no condition channel of that name"):
        affine_baseline(other)
