"""Full-domain sampling in overlapping tiles: the tiles cover the grid with the asked overlap, blending
reproduces a pixelwise network exactly, and a patch-trained model on an odd-sized grid samples (whole
grid and tiled) and merges at the grid's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from trainrun import REPO, run_train

from hpcdiff.cli import main
from hpcdiff.sample.tiles import TiledModel, ramp, tile_starts


@pytest.mark.parametrize(("size", "tile", "overlap"), [(589, 128, 32), (789, 128, 32), (27, 16, 4),
                                                      (20, 16, 4), (16, 16, 4), (10, 16, 4), (100, 30, 0)])
def test_tiles_cover_the_grid_with_the_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    tile = min(tile, size)
    covered = np.zeros(size, int)
    for s in starts:
        covered[s:s + tile] += 1
    assert covered.min() >= 1 and starts[0] == 0 and starts[-1] + tile == size
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_ramp_is_positive_and_flat_inside():
    w = ramp(16, 4)
    assert w.min() > 0 and torch.equal(w, w.flip(0))
    assert torch.all(w[4:12] == 1) and torch.all(w[:5].diff() > 0)


def test_blending_reproduces_a_pixelwise_network():
    """A network whose output at a pixel depends only on that pixel's inputs gives the same field tiled
    as whole: the blend is a weighted mean of equal values."""
    def model(x, t, cond, doy):
        return torch.cat([2 * x + cond[:, :1] * t[:, None, None, None], x.square()], dim=1)

    gen = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 3, 37, 53, generator=gen), torch.randn(2, 4, 37, 53, generator=gen)
    t, doy = torch.tensor([3, 7]), torch.tensor([10.0, 200.0])
    tiled = TiledModel(model, cond, doy, tile=(16, 24), overlap=6)
    assert tiled.count == len(tile_starts(37, 16, 6)) * len(tile_starts(53, 24, 6)) > 4
    torch.testing.assert_close(tiled(x, t), model(x, t, cond, doy), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_a_patch_model_samples_an_odd_grid_whole_and_tiled(tmp_path, capsys):
    world, dataset, run = tmp_path / "world", tmp_path / "ds", tmp_path / "run"
    assert main(["synth", str(world), "--preset", "tiny", "--no-progress"]) == 0
    recipe = REPO / "preprocess" / "synthetic.yaml"
    assert main(["preprocess", str(recipe), "--out", str(dataset), "--no-progress", "--set", f"root={world}",
                 "--set", "domain={y: [3, 23], x: [2, 29]}", "--set", "shards.chunk_hw=[8, 8]"]) == 0
    run_train(dataset, run, "data.patch_size=[16, 12]", "train.max_steps=2", "train.val_every=2",
              "train.ckpt_every=2")
    base = ["dates.limit=1", "sample.members=2", "sample.steps=2", "sample.batch_size=2",
            f"dataset={dataset}"]
    fields = {}
    for name, extra in (("whole", []), ("tiled", ["sample.tile=[16, 12]", "sample.tile_overlap=4"])):
        sets = [a for s in (*base, *extra) for a in ("--set", s)]
        out = tmp_path / f"samples-{name}"
        assert main(["sample", str(REPO / "jobs" / "demo_sample.yaml"), "--run", str(run), "--out", str(out),
                     "--no-progress", *sets]) == 0
        assert main(["merge", str(out), "--no-progress"]) == 0
        with xr.open_dataset(out.with_suffix(".nc"), engine="netcdf4") as ds:
            assert (ds.sizes["y"], ds.sizes["x"]) == (20, 27)
            fields[name] = ds["t2m"].values
            assert np.isfinite(fields[name]).all()
    assert not np.array_equal(fields["whole"], fields["tiled"])  # the tiles see less context
    # the plan records the tiling: a rerun into the same folder with other tiles is refused
    sets = [a for s in (*base, "sample.tile=16", "sample.tile_overlap=4") for a in ("--set", s)]
    assert main(["sample", str(REPO / "jobs" / "demo_sample.yaml"), "--run", str(run), "--out",
                 str(tmp_path / "samples-tiled"), "--no-progress", *sets]) == 1
    assert "tile differ" in capsys.readouterr().err
