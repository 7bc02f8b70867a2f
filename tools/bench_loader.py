"""Loader throughput: hpcdiff's shard loader vs. the naive way and vs. raw reads of the same bytes.

    python tools/bench_loader.py --world WORLD --dataset DATASET [--batch-size 8] [--json out.json]

- ``WORLD``: a ``hpcdiff synth --preset bench`` folder (written if missing); ``DATASET``: its
  preprocessed dataset (``preprocess/synthetic.yaml`` with training years 1991–1992 only, 731
  samples, 1.7 GB, so that the shards *and* the flat copy below stay in the page cache together;
  written if missing).
- *loader*: ``ShardDataset(train)`` batches (``target`` + ``cond`` with statics appended), in the
  epoch's shuffled order, in this process and through ``DataLoader(num_workers=2)``.
- *raw*: the same bytes (``target`` and ``cond`` of each batch) read from one flat file with numpy,
  in the same order: the ceiling for the storage layout.
- *naive*: per date, open the ERA5 and target NetCDF files with xarray, aggregate the day, regrid
  with ``xarray.interp`` onto the target lat/lon and normalize.

All timings are after one warm-up pass (page cache warm: this measures the software path, not the
disk). Prints a table; ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from hpcdiff.config import load_config
from hpcdiff.data.loader import ShardDataset
from hpcdiff.data.manifest import Manifest
from hpcdiff.data.preprocess import run_preprocess
from hpcdiff.data.recipe import PreprocessRecipe
from hpcdiff.data.transforms import forward
from hpcdiff.dist import DistEnv
from hpcdiff.timeaxis import year_of

REPO = Path(__file__).resolve().parents[1]


def ensure_dataset(world: Path, dataset: Path) -> None:
    if not (world / "world.json").exists():
        from hpcdiff.data.synth import write_world

        write_world(world, preset="bench", seed=0, progress=True)
    if not (dataset / "manifest.json").exists():
        recipe_path = REPO / "preprocess" / "synthetic.yaml"
        overrides = [f"root={world}", "split.train_years=[1991, 1992]"]
        recipe = load_config(PreprocessRecipe, recipe_path, overrides=overrides)
        run_preprocess(recipe, dataset, env=DistEnv(), recipe_path=recipe_path, progress=True)


def time_loader(ds: ShardDataset, *, workers: int, max_batches: int) -> tuple[float, int, int]:
    """Seconds, samples and bytes (target + cond) for up to ``max_batches`` batches."""
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                         sampler=range(min(len(ds), max_batches)))
    start, samples, nbytes = time.perf_counter(), 0, 0
    for batch in loader:
        samples += batch["target"].shape[0]
        nbytes += batch["target"].numel() * 4 + batch["cond"].numel() * 4
    return time.perf_counter() - start, samples, nbytes


def write_flat(ds: ShardDataset, path: Path) -> tuple[int, int]:
    """All train samples as one flat float32 file ``[N, Ct + Cc, H, W]`` (the shards' bytes, no HDF5);
    returns (bytes per sample, samples)."""
    import h5py

    with open(path, "wb") as f:
        for shard in ds.paths:
            with h5py.File(shard, "r") as h5:
                np.concatenate([h5["target"][...], h5["cond"][...]], axis=1).tofile(f)
    sample = ds.manifest.grid.shape[0] * ds.manifest.grid.shape[1] * 4
    per_sample = sample * (len(ds.manifest.targets) + len(ds.manifest.conditions))
    return per_sample, sum(ds.sizes)


def time_raw(ds: ShardDataset, flat: Path, *, per_sample: int, max_batches: int) -> tuple[float, int]:
    """Read the same runs of samples as the loader's plan from the flat file, with numpy."""
    plan = ds._plan[:max_batches]
    start, samples = time.perf_counter(), 0
    with open(flat, "rb") as f:
        for shard, a, b in plan.tolist():
            f.seek((int(ds.offsets[shard]) + a) * per_sample)
            out = np.fromfile(f, dtype=np.float32, count=(b - a) * per_sample // 4)
            samples += out.size * 4 // per_sample
    return time.perf_counter() - start, samples


def naive_sample(world: Path, date: np.datetime64, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """One sample the naive way: xarray opens, aggregates, interpolates and normalizes one date."""
    year = int(year_of(date))
    with xr.open_dataset(world / "era5" / f"era5_{year}.nc") as era5, \
            xr.open_dataset(world / "danra" / f"danra_{year}.nc") as danra:
        era5 = era5.rename({"valid_time": "time"}) if "valid_time" in era5.coords else era5
        era5 = era5.assign_coords(longitude=(era5.longitude + 180) % 360 - 180)
        era5 = era5.sortby(["latitude", "longitude"])
        day = era5.sel(time=slice(np.datetime64(date, "h"), np.datetime64(date, "h") + 23))
        lat, lon = danra["lat"], danra["lon"]
        cond = []
        for channel in manifest.conditions:
            field = day[channel.name]
            field = field.sum("time") * 1000 if channel.units == "kg m-2" else field.mean("time")
            cond.append(forward(field.interp(latitude=lat, longitude=lon).values, channel.stats))
        target = [forward(danra[c.name].sel(time=date).values, c.stats) for c in manifest.targets]
    return np.stack(target).astype(np.float32), np.stack(cond).astype(np.float32)


def time_naive(world: Path, manifest: Manifest, *, dates: int) -> tuple[float, int]:
    train = manifest.splits["train"].dates
    chosen = np.array(train[:: max(1, len(train) // dates)][:dates], dtype="datetime64[D]")
    naive_sample(world, chosen[0], manifest)  # warm-up
    start = time.perf_counter()
    for date in chosen:
        naive_sample(world, date, manifest)
    return time.perf_counter() - start, len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batches", type=int, default=400)
    parser.add_argument("--naive-dates", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ensure_dataset(args.world, args.dataset)
    ds = ShardDataset(args.dataset, "train", batch_size=args.batch_size, seed=0)
    ds.verify()  # checksums up front, as training does: not part of any timing below
    results = {"batch_size": args.batch_size, "grid": list(ds.manifest.grid.shape),
               "channels": {"target": len(ds.manifest.targets), "cond": len(ds.manifest.condition_names)}}
    time_loader(ds, workers=0, max_batches=args.max_batches)  # warm the page cache
    for workers in (0, 2):
        seconds, samples, nbytes = time_loader(ds, workers=workers, max_batches=args.max_batches)
        results[f"loader_w{workers}"] = {"samples_per_s": samples / seconds,
                                         "MiB_per_s": nbytes / seconds / 2**20}
    with tempfile.TemporaryDirectory(dir=args.dataset.parent) as tmp:
        flat = Path(tmp) / "flat.f32"
        per_sample, _ = write_flat(ds, flat)
        time_raw(ds, flat, per_sample=per_sample, max_batches=args.max_batches)  # warm
        seconds, samples = time_raw(ds, flat, per_sample=per_sample, max_batches=args.max_batches)
        results["raw_numpy"] = {"samples_per_s": samples / seconds,
                                "MiB_per_s": samples * per_sample / seconds / 2**20}
    seconds, samples = time_naive(args.world, ds.manifest, dates=args.naive_dates)
    results["naive_xarray"] = {"samples_per_s": samples / seconds}
    loader = results["loader_w0"]["samples_per_s"]
    results["loader_vs_naive"] = loader / results["naive_xarray"]["samples_per_s"]
    results["loader_vs_raw"] = loader / results["raw_numpy"]["samples_per_s"]
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
