"""Patch training's windows: placed by each sample's seed (reproducible, rank- and batch-invariant),
read as hyperslabs that equal crops of the whole fields, touching only the chunks they cover; and the
position channels."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from hpcdiff.cli import main
from hpcdiff.data.loader import ShardDataset, plan_samples
from hpcdiff.data.shards import compress_shard, create_shard, read_rows
from hpcdiff.data.windows import position_fields, window_origins
from hpcdiff.errors import HpcdiffError

PATCH = (16, 12)


@pytest.fixture(scope="module")
def chunked(tmp_path_factory, tiny_dataset):
    """The tiny world preprocessed again with y/x chunks of 8 x 8 and one sample per chunk."""
    from trainrun import REPO

    out = tmp_path_factory.mktemp("chunked") / "ds"
    world = tiny_dataset.parent / "world"
    sets = [f"root={world}", "shards.chunk_hw=[8, 8]", "shards.batch_chunk=1"]
    recipe = REPO / "preprocess" / "synthetic.yaml"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    return out


def by_index(ds: ShardDataset) -> dict[int, dict[str, torch.Tensor]]:
    """Every sample of the dataset's epoch plan, by global index."""
    out = {}
    for i in range(len(ds)):
        batch = ds[i]
        for k, index in enumerate(batch["index"].tolist()):
            out[index] = {key: value[k] for key, value in batch.items()}
    return out


def test_origins_are_reproducible_in_bounds_and_cover_the_grid():
    index = np.arange(2000)
    a = window_origins(index, seed=3, epoch=1, grid=(32, 40), patch=PATCH)
    np.testing.assert_array_equal(a, window_origins(index, seed=3, epoch=1, grid=(32, 40), patch=PATCH))
    assert a[:, 0].min() == 0 and a[:, 0].max() == 32 - 16
    assert a[:, 1].min() == 0 and a[:, 1].max() == 40 - 12
    # a sample's window does not depend on which other samples are drawn with it
    pair = window_origins(index[7:9], seed=3, epoch=1, grid=(32, 40), patch=PATCH)
    np.testing.assert_array_equal(pair, a[7:9])
    assert not np.array_equal(window_origins(index, seed=3, epoch=2, grid=(32, 40), patch=PATCH), a)
    assert not np.array_equal(window_origins(index, seed=4, epoch=1, grid=(32, 40), patch=PATCH), a)


@pytest.mark.parametrize("positions", [False, True])
def test_windows_are_crops_of_the_whole_fields(tiny_dataset, chunked, positions):
    whole = by_index(ShardDataset(tiny_dataset, "train", batch_size=4, seed=2, shuffle=False, drop_last=False,
                                  positions=positions))
    for root in (tiny_dataset, chunked):
        ds = ShardDataset(root, "train", batch_size=4, seed=2, patch=PATCH, positions=positions)
        ds.set_epoch(3)
        windows = by_index(ds)
        assert len(windows) >= 8
        for index, item in windows.items():
            r, c = item["window"].tolist()
            assert item["target"].shape[-2:] == PATCH
            rows, cols = slice(r, r + PATCH[0]), slice(c, c + PATCH[1])
            assert torch.equal(item["target"], whole[index]["target"][:, rows, cols])
            assert torch.equal(item["cond"], whole[index]["cond"][:, rows, cols])
    if positions:
        item = next(iter(whole.values()))
        np.testing.assert_array_equal(item["cond"][-2:].numpy(), position_fields((32, 32)))


def test_windows_do_not_depend_on_ranks_or_batches(tiny_dataset):
    """The window of a sample is the same whether one rank draws it in a batch of 4 or one of two ranks
    in a batch of 2: two ranks still train like one rank accumulating."""
    one = ShardDataset(tiny_dataset, "train", batch_size=4, seed=5, patch=PATCH)
    two = [ShardDataset(tiny_dataset, "train", batch_size=2, rank=r, world_size=2, seed=5, patch=PATCH)
           for r in range(2)]
    for ds in (one, *two):
        ds.set_epoch(1)
    a = by_index(one)
    b = {**by_index(two[0]), **by_index(two[1])}
    shared = set(a) & set(b)
    assert len(shared) >= len(a) // 2
    for index in shared:
        assert torch.equal(a[index]["window"], b[index]["window"])
        assert torch.equal(a[index]["target"], b[index]["target"])


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_a_window_reads_only_the_chunks_it_touches(tmp_path, compression):
    """Bytes read (``rchar``) per sample for a 64 x 64 window of 256 x 256 fields. Uncompressed, HDF5
    reads just the window's rows whatever the chunks; compressed, a chunk is read whole, so chunks of
    whole fields read the field and 32 x 32 chunks the 3 x 3 chunks around the window."""
    def read_chars() -> int:
        return int(next(line.split()[1] for line in open("/proc/self/io") if line.startswith("rchar:")))

    smooth = np.cumsum(np.random.default_rng(0).standard_normal((4, 3, 256, 256)), axis=-1)
    fields = (smooth / 16).astype(np.float32)  # compressible like geophysical fields
    window_bytes, field_bytes = 3 * 64 * 64 * 4, 3 * 256 * 256 * 4
    sizes = {}
    for name, chunk_hw in (("whole", None), ("yx", (32, 32))):
        path = tmp_path / f"{name}.h5"
        with create_shard(path, n=4, channels={"cond": 3}, hw=(256, 256), chunk=1, chunk_hw=chunk_hw) as f:
            f["cond"][...] = fields
        if compression:
            compress_shard(path, compression=compression)
        stored = path.stat().st_size / 4
        with h5py.File(path, "r", rdcc_nbytes=0) as f:
            out = np.empty((1, 3, 64, 64), np.float32)
            before = read_chars()
            for row in range(4):
                read_rows(f["cond"], out, row, origin=(70, 100))
                np.testing.assert_array_equal(out[0], fields[row, :, 70:134, 100:164])
            sizes[name] = (read_chars() - before) / 4
    if compression is None:
        assert max(sizes.values()) < 3 * window_bytes < field_bytes / 5  # the window's rows (and metadata)
    else:
        assert sizes["whole"] > 0.9 * stored  # the whole compressed field, for a 1/16 of it
        assert sizes["yx"] < 9 / 64 * stored * 1.3  # at most 9 of the 64 chunks (and metadata)


def test_a_patch_larger_than_the_grid_is_one_line(tiny_dataset):
    with pytest.raises(HpcdiffError, match=r"patch_size 40 x 16 is larger than the dataset's grid 32 x 32"):
        ShardDataset(tiny_dataset, "train", batch_size=2, patch=(40, 16))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_sample_plans_use_every_sample_and_deal_disjoint_equal_shares(world_size):
    """Patch batches are any samples of the split: every sample once per epoch (up to the dropped
    remainder), however few a shard holds; ranks get disjoint shares of equal length."""
    plans = [plan_samples(50, batch_size=4, seed=1, epoch=2, rank=r, world_size=world_size)
             for r in range(world_size)]
    assert len({len(p) for p in plans}) == 1 and all(len(b) == 4 for p in plans for b in p)
    flat = np.concatenate([b for p in plans for b in p])
    assert len(flat) == len(set(flat.tolist())) == 4 * (50 // 4 // world_size) * world_size
    one = plan_samples(50, batch_size=4, seed=1, epoch=2, rank=0, world_size=1)
    # the batches of global step k are the same whether W ranks take one each or one rank takes W
    assert [b.tolist() for b in one[:world_size]] == [p[0].tolist() for p in plans]
    tail = plan_samples(10, batch_size=4, seed=1, epoch=0, rank=0, world_size=1, shuffle=False,
                        drop_last=False)
    assert [b.tolist() for b in tail] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_patch_batch_spans_shards_smaller_than_the_batch(tiny_dataset, tmp_path):
    """Shards of 2 samples and batches of 4: patch training still trains on every sample."""
    from trainrun import REPO

    out = tmp_path / "ds"
    sets = [f"root={tiny_dataset.parent / 'world'}", "shards.samples_per_shard=2", "shards.shard_mb=null",
            "shards.batch_chunk=1"]
    recipe = REPO / "preprocess" / "synthetic.yaml"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    ds = ShardDataset(out, "train", batch_size=4, seed=0, patch=PATCH)
    assert max(ds.sizes) == 2 and len(ds) == sum(ds.sizes) // 4
    seen = by_index(ds)
    assert len(seen) == 4 * len(ds)
    whole = by_index(ShardDataset(tiny_dataset, "train", batch_size=4, shuffle=False, drop_last=False))
    for index, item in seen.items():
        r, c = item["window"].tolist()
        assert torch.equal(item["target"], whole[index]["target"][:, r:r + PATCH[0], c:c + PATCH[1]])
        assert item["time"] == whole[index]["time"]
