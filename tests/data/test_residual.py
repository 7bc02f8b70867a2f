"""Residual targets: the baseline is the target's own ERA5 condition in the target's normalization,
encode/decode are exact inverses, the preprocessing's fitted scale gives unit RMS over the whole training
split, mismatched transforms are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hpcdiff.data.loader import ShardDataset
from hpcdiff.data.residual import Residual, residual_from_manifest, residual_pairs
from hpcdiff.data.transforms import ChannelStats, forward, inverse
from hpcdiff.errors import HpcdiffError


@pytest.fixture(scope="module")
def batches(tiny_dataset):
    ds = ShardDataset(tiny_dataset, "train", batch_size=1, shuffle=False, drop_last=False)
    return ds.manifest, [ds[i] for i in range(len(ds))]


def test_baseline_is_the_condition_in_target_units(batches):
    manifest, data = batches
    residual = residual_from_manifest(manifest)
    cond = data[0]["cond"].double()
    base = residual.baseline(cond).numpy()
    names = [c.name for c in manifest.conditions]
    for k, target in enumerate(manifest.targets):
        i = names.index(target.name)
        physical = inverse(cond[:, i].numpy(), manifest.conditions[i].stats)
        np.testing.assert_allclose(base[:, k], forward(physical, target.stats), atol=1e-9)


def test_round_trip_and_unit_scale_over_the_whole_training_split(batches):
    manifest, data = batches
    residual = residual_from_manifest(manifest)
    target = torch.cat([b["target"] for b in data[:4]]).double()
    cond = torch.cat([b["cond"] for b in data[:4]]).double()
    x = residual.encode(target, cond)
    torch.testing.assert_close(residual.decode(x, cond), target, rtol=0, atol=1e-12)
    # the preprocessing fitted the scale on every training sample (in float64 before the float32 shards)
    every = torch.cat([residual.encode(b["target"].double(), b["cond"].double()) for b in data])
    rms = every.pow(2).mean(dim=(0, 2, 3)).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-4, atol=0)
    assert Residual.from_state(residual.to_state()) == residual
    # the residual is much smaller than the target itself: the coarse field explains most of it
    targets = torch.cat([b["target"] for b in data]).double()
    rms_target = targets.pow(2).mean(dim=(0, 2, 3)).sqrt()
    assert residual.scale[0] < 0.5 * float(rms_target[0])  # temperature


def test_pairs_need_the_same_name_transform_and_scale():
    targets = [("t2m", "zscore", 1.0), ("tp", "log1p", 1.0), ("e", "asinh", 0.1)]
    conds = [("msl", "zscore", 1.0), ("tp", "log1p", 1.0), ("t2m", "zscore", 1.0), ("e", "asinh", 1.0)]
    assert residual_pairs(targets, conds) == [(0, 2), (1, 1)]


def test_mismatched_or_missing_condition_is_refused(batches):
    manifest, _ = batches
    conds = list(manifest.conditions)
    conds[1] = dataclasses.replace(conds[1], stats=ChannelStats("zscore", 1.0, 0.0, 1.0))
    with pytest.raises(HpcdiffError, match="target 'tp' uses transform log1p .* condition uses zscore"):
        residual_from_manifest(dataclasses.replace(manifest, conditions=tuple(conds)))
    without_e = tuple(c for c in manifest.conditions if c.name != "e")
    with pytest.raises(HpcdiffError, match="target 'e' has no condition channel of that name"):
        residual_from_manifest(dataclasses.replace(manifest, conditions=without_e))
