"""Writes ``SAMPLES.nc`` files in the contract of ``hpcdiff merge`` (CF-1.8, dims ``(time, member, y, x)``,
physical units, 2-D lat/lon, a grid mapping, ``hpcdiff_*`` attributes), for evaluation tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import h5py
import netCDF4
import numpy as np

from hpcdiff.data import synth
from hpcdiff.timeaxis import CALENDAR, TIME_UNITS, to_days

MAPPING = "lambert_conformal_conic"


def dataset_grid(dataset: Path) -> dict[str, np.ndarray]:
    with h5py.File(Path(dataset) / "static.h5", "r") as f:
        return {k: f[k][...] for k in ("x", "y", "lat", "lon", "lsm")}


def write_samples(path: Path, fields: Mapping[str, np.ndarray], *, dates: np.ndarray, dataset: Path,
                  attrs: Mapping[str, object] | None = None, units: Mapping[str, str] | None = None) -> Path:
    """``fields[name]`` ``[T, M, H, W]`` (physical units) for ``dates`` on ``dataset``'s grid."""
    manifest = json.loads((Path(dataset) / "manifest.json").read_text())
    units = units or {c["name"]: c["units"] for c in manifest["targets"]}
    grid = dataset_grid(dataset)
    n_time, n_member, height, width = next(iter(fields.values())).shape
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        for dim, size in (("time", n_time), ("member", n_member), ("y", height), ("x", width)):
            ds.createDimension(dim, size)
        time = ds.createVariable("time", "f8", ("time",))
        time.setncatts({"units": TIME_UNITS, "calendar": CALENDAR, "standard_name": "time"})
        time[:] = to_days(dates).astype(np.float64)
        ds.createVariable("member", "i4", ("member",))[:] = np.arange(n_member)
        for name in ("x", "y"):
            coord = ds.createVariable(name, "f8", (name,))
            coord.setncatts({"units": "m", "standard_name": f"projection_{name}_coordinate"})
            coord[:] = grid[name][:height] if name == "y" else grid[name][:width]
        for name, std in (("lat", "latitude"), ("lon", "longitude")):
            coord = ds.createVariable(name, "f8", ("y", "x"))
            degrees = "degrees_north" if name == "lat" else "degrees_east"
            coord.setncatts({"units": degrees, "standard_name": std})
            coord[:] = grid[name][:height, :width]
        mapping = ds.createVariable(MAPPING, "i4")
        mapping.setncatts({k: v for k, v in manifest["grid"]["projection"].items()})
        for name, values in fields.items():
            var = ds.createVariable(name, "f4", ("time", "member", "y", "x"))
            var.setncatts({"units": units.get(name, "1"), "grid_mapping": MAPPING, "coordinates": "lat lon"})
            var[:] = np.asarray(values, np.float32)
        ds.setncatts({"Conventions": "CF-1.8", "hpcdiff_run": "test-run", "hpcdiff_checkpoint": "step-0",
                      "hpcdiff_sampler": "ddim", "hpcdiff_steps": 10, "hpcdiff_members": n_member,
                      "hpcdiff_seed": 0, "hpcdiff_dataset": str(dataset), **(attrs or {})})
    return path


def oracle_fields(world_root: Path, dates: np.ndarray, *, members: int, seed: int,
                  shift: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """Oracle draws ``{name: [T, M, H, W]}`` of the synthetic world, optionally shifted by ``shift``."""
    world = synth.load_world(world_root)
    ds = synth.oracle_ensemble(world, dates, members=members, seed=seed)
    shift = shift or {}
    return {name: ds[name].values + np.float32(shift.get(name, 0.0)) for name in synth.TARGET_VARS}
