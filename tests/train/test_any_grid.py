"""Any grid size end to end: a dataset cut to 20 x 27 (neither side a multiple of the `small` U-Net's 8)
trains, samples and merges at 20 x 27."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from trainrun import REPO, run_train

from hpcdiff.cli import main


@pytest.mark.slow
def test_a_grid_the_levels_do_not_divide_trains_and_samples_at_its_size(tmp_path):
    world, dataset, run = tmp_path / "world", tmp_path / "ds", tmp_path / "run"
    assert main(["synth", str(world), "--preset", "tiny", "--no-progress"]) == 0
    assert main(["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(dataset),
                 "--no-progress", "--set", f"root={world}", "--set", "domain={y: [3, 23], x: [2, 29]}"]) == 0
    run_train(dataset, run, "model.preset=small", "train.max_steps=2", "train.val_every=2",
              "train.ckpt_every=2")
    sets = ["dates.limit=1", "sample.members=2", "sample.steps=2", "sample.batch_size=2",
            f"dataset={dataset}"]
    assert main(["sample", str(REPO / "jobs" / "demo_sample.yaml"), "--run", str(run), "--out",
                 str(tmp_path / "samples"), "--no-progress", *[a for s in sets for a in ("--set", s)]]) == 0
    assert main(["merge", str(tmp_path / "samples"), "--no-progress"]) == 0
    with xr.open_dataset(tmp_path / "samples.nc", engine="netcdf4") as ds:
        assert (ds.sizes["y"], ds.sizes["x"]) == (20, 27)
        assert np.isfinite(ds["t2m"].values).all()
