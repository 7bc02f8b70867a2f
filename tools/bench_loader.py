"""Loader throughput: hpcdiff's shard loader vs. the naive way and vs. raw reads of the same bytes.

    python tools/bench_loader.py --world WORLD --dataset DATASET [--batch-size 8] [--epochs 7] \
        [--json out.json]

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

- *windows*: the loader with ``patch=(64, 64)`` (patch training: one hyperslab per sample and
  dataset), on ``DATASET`` (chunks of whole fields) and on ``DATASET-yx`` (the same recipe with
  ``shards.chunk_hw: [32, 32]`` and ``batch_chunk: 1``; written if missing).

Every path is timed over ``--epochs`` whole epochs (every batch of the epoch's plan), after one warm-up
epoch (page cache warm: this measures the software path, not the disk), and reported as the min,
median and max samples/s over the epochs: one short timed window swings by tens of percent on a
shared machine. Bytes read per sample are the process's ``rchar`` (``/proc/self/io``: every byte
``read()`` returned) over the timed epochs. Prints JSON; ``--json`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


PATCH = (64, 64)


def ensure_dataset(world: Path, dataset: Path, *extra: str) -> None:
    if not (world / "world.json").exists():
        from hpcdiff.data.synth import write_world

        write_world(world, preset="bench", seed=0, progress=True)
    if not (dataset / "manifest.json").exists():
        recipe_path = REPO / "preprocess" / "synthetic.yaml"
        overrides = [f"root={world}", "split.train_years=[1991, 1992]", *extra]
        recipe = load_config(PreprocessRecipe, recipe_path, overrides=overrides)
        run_preprocess(recipe, dataset, env=DistEnv(), recipe_path=recipe_path, progress=True)


def read_chars() -> int:
    """Bytes this process has read through ``read()`` so far (``rchar`` of ``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def time_loader(ds: ShardDataset, *, workers: int, max_batches: int | None,
                epoch: int = 0) -> tuple[float, int, int, int]:
    """Seconds, samples, bytes delivered (target + cond) and bytes read (``rchar``, this process only:
    workers=0) for the batches of ``epoch`` (at most ``max_batches``)."""
    ds.set_epoch(epoch)
    count = len(ds) if max_batches is None else min(len(ds), max_batches)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, sampler=range(count))
    chars, start, samples, nbytes = read_chars(), time.perf_counter(), 0, 0
    for batch in loader:
        samples += batch["target"].shape[0]
        nbytes += batch["target"].numel() * 4 + batch["cond"].numel() * 4
    return time.perf_counter() - start, samples, nbytes, read_chars() - chars


def summary(rates: list[float]) -> dict[str, float]:
    return {"min": float(np.min(rates)), "median": float(np.median(rates)), "max": float(np.max(rates)),
            "epochs": len(rates)}


def time_epochs(ds: ShardDataset, *, workers: int, epochs: int, max_batches: int | None) -> dict[str, Any]:
    """samples/s (min, median, max over ``epochs`` timed epochs, after a warm-up one) and, in process,
    the bytes read per sample."""
    time_loader(ds, workers=workers, max_batches=max_batches, epoch=0)  # warm the page cache
    rates, read, samples_total = [], 0, 0
    for epoch in range(1, epochs + 1):
        seconds, samples, _, chars = time_loader(ds, workers=workers, max_batches=max_batches, epoch=epoch)
        rates.append(samples / seconds)
        read, samples_total = read + chars, samples_total + samples
    out: dict[str, Any] = {"samples_per_s": summary(rates)}
    if workers == 0:
        out["read_bytes_per_sample"] = read / samples_total
    return out


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


def time_raw(ds: ShardDataset, flat: Path, *, per_sample: int, max_batches: int | None,
             epoch: int = 0) -> tuple[float, int]:
    """Read the same runs of samples as the loader's plan of ``epoch`` from the flat file, with numpy."""
    ds.set_epoch(epoch)
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
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs per path (default: 7)")
    parser.add_argument("--max-batches", type=int, default=None, help="batches per epoch (default: all)")
    parser.add_argument("--naive-dates", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    yx = args.dataset.with_name(args.dataset.name + "-yx")
    ensure_dataset(args.world, args.dataset)
    ensure_dataset(args.world, yx, "shards.chunk_hw=[32, 32]", "shards.batch_chunk=1")
    ds = ShardDataset(args.dataset, "train", batch_size=args.batch_size, seed=0)
    ds.verify()  # checksums up front, as training does: not part of any timing below
    results: dict[str, Any] = {
        "batch_size": args.batch_size, "grid": list(ds.manifest.grid.shape), "patch": list(PATCH),
        "channels": {"target": len(ds.manifest.targets), "cond": len(ds.manifest.condition_names)},
        "samples_per_epoch": len(ds) * args.batch_size, "uptime": os.getloadavg()}
    for workers in (0, 2):
        results[f"loader_w{workers}"] = time_epochs(ds, workers=workers, epochs=args.epochs,
                                                    max_batches=args.max_batches)
    for name, root in (("windows", args.dataset), ("windows_yx", yx)):
        windows = ShardDataset(root, "train", batch_size=args.batch_size, seed=0, patch=PATCH)
        windows.verify()
        results[name] = time_epochs(windows, workers=0, epochs=args.epochs, max_batches=args.max_batches)
        windows.close()
    with tempfile.TemporaryDirectory(dir=args.dataset.parent) as tmp:
        flat = Path(tmp) / "flat.f32"
        per_sample, _ = write_flat(ds, flat)
        time_raw(ds, flat, per_sample=per_sample, max_batches=args.max_batches)  # warm
        rates = []
        for epoch in range(1, args.epochs + 1):
            seconds, samples = time_raw(ds, flat, per_sample=per_sample, max_batches=args.max_batches,
                                        epoch=epoch)
            rates.append(samples / seconds)
        results["raw_numpy"] = {"samples_per_s": summary(rates), "read_bytes_per_sample": per_sample}
    seconds, samples = time_naive(args.world, ds.manifest, dates=args.naive_dates)
    results["naive_xarray"] = {"samples_per_s": samples / seconds}
    loader = results["loader_w0"]["samples_per_s"]["median"]
    results["loader_vs_naive"] = loader / results["naive_xarray"]["samples_per_s"]
    loader_rates, raw_rates = results["loader_w0"]["samples_per_s"], results["raw_numpy"]["samples_per_s"]
    results["loader_vs_raw"] = {k: loader_rates[k] / raw_rates[k] for k in ("min", "median")}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
