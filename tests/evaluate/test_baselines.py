"""Baselines computed as the model sees its inputs: bilinear from the shards' conditions, the oracle from
the synthetic law; the dataset's truth must be the world's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hpcdiff.data import synth
from hpcdiff.data.manifest import read_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.evaluate import baselines
from hpcdiff.evaluate.truth import load_truth


def manifest_of(dataset):
    return read_manifest(dataset)


def test_bilinear_from_the_shards_is_the_synthetic_bilinear(tiny, test_dates):
    manifest = manifest_of(tiny[1])
    ours = baselines.bilinear(manifest, test_dates)
    reference = synth.bilinear_baseline(synth.load_world(tiny[0]), test_dates)
    for name in ("t2m", "tp", "e"):
        assert ours[name].shape == (test_dates.size, 1, 32, 32)
        np.testing.assert_allclose(ours[name][:, 0], reference[name].values, rtol=1e-5, atol=1e-4)


def test_oracle_is_seeded_and_cut_to_the_window(tiny, test_dates):
    manifest = manifest_of(tiny[1])
    world = baselines.synthetic_world(manifest)
    assert world is not None
    full = baselines.oracle(world, manifest, test_dates[:2], members=3, seed=5)
    again = baselines.oracle(world, manifest, test_dates[:2], members=3, seed=5)
    np.testing.assert_array_equal(full["tp"], again["tp"])
    assert full["t2m"].shape == (2, 3, 32, 32)
    window = dataclasses.replace(manifest.grid, window=((4, 20), (2, 30)))
    windowed = dataclasses.replace(manifest, grid=window)
    cut = baselines.oracle(world, windowed, test_dates[:2], members=3, seed=5)
    np.testing.assert_array_equal(cut["e"], full["e"][..., 4:20, 2:30])


def test_no_oracle_without_the_world(tiny):
    manifest = manifest_of(tiny[1])
    gone = dataclasses.replace(manifest, recipe={**manifest.recipe, "root": str(tiny[1] / "no-such-world")})
    assert baselines.synthetic_world(gone) is None


def test_truth_must_belong_to_the_world(tiny, test_dates):
    manifest = manifest_of(tiny[1])
    world = baselines.synthetic_world(manifest)
    truth = load_truth(manifest, test_dates)
    baselines.check_world_truth(world, manifest, test_dates, truth=truth)
    truth["t2m"][2, 5, 5] += 0.5
    with pytest.raises(HpcdiffError, match="truth of 't2m' differs from the synthetic world"):
        baselines.check_world_truth(world, manifest, test_dates, truth=truth)
