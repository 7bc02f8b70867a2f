"""Truth from the shards of any split, in physical units, against the synthetic world's own truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpcdiff.data import synth
from hpcdiff.data.manifest import parse_manifest, read_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.evaluate.truth import LAND_THRESHOLD, load_truth, read_static


def manifest_of(dataset):
    return read_manifest(dataset)


def test_truth_of_any_split_is_the_world_truth(tiny):
    world_root, dataset = tiny
    manifest = manifest_of(dataset)
    splits = manifest.splits
    dates = np.array([splits["test"].dates[3], splits["train"].dates[0], splits["val"].dates[-1],
                      splits["test"].dates[0]], "datetime64[D]")  # not in shard order
    truth = load_truth(manifest, dates)
    law = synth.truth(synth.load_world(world_root), dates)
    for name in ("t2m", "tp", "e"):
        assert truth[name].shape == (4, 32, 32)
        np.testing.assert_allclose(truth[name], law[name], rtol=1e-5, atol=1e-4)


def test_missing_dates_are_named(tiny):
    manifest = manifest_of(tiny[1])
    dates = np.array([manifest.splits["test"].dates[0], "1985-05-01", "2011-01-01"], "datetime64[D]")
    with pytest.raises(HpcdiffError, match="no truth for 2 sample date.*1985-05-01, 2011-01-01"):
        load_truth(manifest, dates)


def test_static_land_mask(tiny):
    world = synth.load_world(tiny[0])
    static = read_static(manifest_of(tiny[1]))
    np.testing.assert_array_equal(static.land, world.lsm > LAND_THRESHOLD)
    assert 0 < static.land.sum() < static.land.size
    assert static.dx_km == pytest.approx(2.5)


def test_unreadable_shard_is_a_one_line_error(tiny):
    raw = json.loads((tiny[1] / "manifest.json").read_text())
    raw["splits"]["test"]["shards"][0]["path"] = "shards/gone.h5"
    manifest = parse_manifest(raw, root=tiny[1])
    with pytest.raises(HpcdiffError, match=r"gone\.h5: cannot open shard .*No such file"):
        load_truth(manifest, np.array([manifest.splits["test"].dates[0]], "datetime64[D]"))
