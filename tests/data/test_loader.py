"""The rank-aware batch loader: disjoint seeded shares, equal lengths, contiguous batches, workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from mini_world import land_mask, write_mini_world, write_recipe

from hpcdiff.cli import main
from hpcdiff.data.loader import ShardDataset, plan_epoch
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import day_of_year


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("loader")
    world = write_mini_world(base / "world", years=(2000, 2001, 2002, 2003), days=20)
    recipe = write_recipe(base / "r.yaml", world)
    out = base / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress"]) == 0
    return out


def samples(plan):
    return [(int(s), i) for s, a, b in plan for i in range(a, b)]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_rank_shares_are_disjoint_equal_and_seeded(world_size):
    sizes = [16, 16, 16, 7, 16, 3]
    kw = {"batch_size": 4, "chunk": 2, "seed": 5, "world_size": world_size}
    plans = [plan_epoch(sizes, epoch=3, rank=r, **kw) for r in range(world_size)]
    assert len({len(p) for p in plans}) == 1
    flat = [x for p in plans for x in samples(p)]
    assert len(flat) == len(set(flat))  # disjoint
    assert all(b - a == 4 and b <= sizes[s] for p in plans for s, a, b in p)
    assert all(a % 2 == 0 for p in plans for _, a, _ in p)  # chunk-aligned starts
    again = plan_epoch(sizes, epoch=3, rank=0, **kw)
    np.testing.assert_array_equal(again, plans[0])  # depends only on (seed, epoch, rank, world size)
    other = plan_epoch(sizes, epoch=4, rank=0, **kw)
    assert not np.array_equal(other, plans[0])
    lengths = {len(plan_epoch(sizes, epoch=e, rank=0, **kw)) for e in range(10)}
    assert len(lengths) == 1  # same number of batches every epoch (resume by epoch + batch index)


def test_without_shuffle_the_epoch_is_covered_in_order():
    sizes = [8, 5]
    plans = [plan_epoch(sizes, batch_size=2, chunk=2, seed=0, epoch=0, rank=r, world_size=2, shuffle=False,
                        drop_last=False) for r in range(2)]
    assert len(plans[0]) == len(plans[1]) == 4
    covered = set(samples(plans[0])) | set(samples(plans[1]))
    assert covered == {(0, i) for i in range(8)} | {(1, i) for i in range(5)}


def test_items_shapes_and_static_channels(dataset):
    ds = ShardDataset(dataset, "train", batch_size=4, seed=1)
    assert ds.manifest.target_names == ["t2m", "tp", "e"]
    assert ds.manifest.condition_names == ["t2m", "tp", "e", "msl", "lsm", "orography", "sdf"]
    batch = ds[0]
    assert batch["target"].shape == (4, 3, *land_mask().shape) and batch["target"].dtype == torch.float32
    assert batch["cond"].shape == (4, 7, *land_mask().shape)
    np.testing.assert_array_equal(batch["cond"][0, 4].numpy() == 1, land_mask())  # lsm kept 0/1
    assert torch.equal(batch["cond"][0, 4:], batch["cond"][-1, 4:])
    assert torch.equal(torch.diff(batch["index"]), torch.ones(3, dtype=torch.int64))  # contiguous run
    assert torch.equal(batch["doy"], torch.from_numpy(day_of_year(batch["time"].numpy())))
    assert ds.mask.shape == (1, 1, *land_mask().shape)


def test_two_ranks_cover_what_one_rank_sees_without_overlap(dataset):
    one = ShardDataset(dataset, "train", batch_size=2, seed=7, shuffle=False)
    seen = {int(i) for b in range(len(one)) for i in one[b]["index"]}
    two = [ShardDataset(dataset, "train", batch_size=2, seed=7, rank=r, world_size=2, shuffle=False)
           for r in range(2)]
    parts = [{int(i) for b in range(len(d)) for i in d[b]["index"]} for d in two]
    assert len(two[0]) == len(two[1]) and not parts[0] & parts[1] and parts[0] | parts[1] == seen
    assert seen == set(range(40))


def test_dataloader_workers_give_the_same_batches(dataset):
    ds = ShardDataset(dataset, "train", batch_size=4, seed=3)
    ds.set_epoch(2)
    direct = [ds[i] for i in range(len(ds))]
    clone = pickle.loads(pickle.dumps(ds))  # open handles are dropped
    assert clone._files == {}
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for a, b in zip(direct, loader, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_unknown_or_empty_split(dataset, tmp_path):
    with pytest.raises(HpcdiffError, match="split 'holdout' has no samples"):
        ShardDataset(dataset, "holdout", batch_size=2)
    with pytest.raises(HpcdiffError, match="no manifest.json"):
        ShardDataset(tmp_path, "train", batch_size=2)


def test_ranks_stride_so_accumulation_equals_more_ranks():
    """Global step k sees the same runs with 2 ranks x 1 micro-batch as with 1 rank x 2 accumulated."""
    sizes = [24, 17, 9]
    kw = {"batch_size": 3, "chunk": 1, "seed": 2, "epoch": 5}
    one = plan_epoch(sizes, rank=0, world_size=1, **kw)
    two = [plan_epoch(sizes, rank=r, world_size=2, **kw) for r in range(2)]
    steps = min(len(two[0]), len(one) // 2)
    for k in range(steps):
        from_one = {tuple(one[2 * k]), tuple(one[2 * k + 1])}
        assert from_one == {tuple(two[0][k]), tuple(two[1][k])}
