"""Merge the part files of a sampling run into one CF-1.8 NetCDF file, in physical units.

The file is the contract the evaluation reads:

- dimensions ``(time, member, y, x)``; ``time`` int days since 1970-01-01 (standard calendar, with
  one-day ``time_bnds``), ``member`` 0..M-1, ``y``/``x`` projection coordinates in m, 2-D ``lat``/``lon``;
- a grid-mapping variable named as the dataset's (e.g. ``lambert_conformal_conic``);
- one float32 variable per target channel, named as in the manifest (``t2m``, ``tp``, ``e``), with
  ``units``, ``standard_name``, ``long_name``, ``cell_methods``, ``grid_mapping`` and
  ``coordinates = "lat lon"``, chunked ``(1, M, H, W)`` and zlib-compressed: one date of all members is
  one read;
- global attributes naming the run, checkpoint, sampler, steps, members, seed and dataset.

Parts are read one date at a time (memory: one date), inverse-transformed with the statistics the
network was trained with (stored in ``plan.json``), and written to a temporary file that is renamed
onto the output only when complete.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np

from hpcdiff import __version__
from hpcdiff.data.shards import read_manifest
from hpcdiff.data.transforms import inverse_transform
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_file
from hpcdiff.sample import parts
from hpcdiff.sample.dates import name_some
from hpcdiff.timeaxis import CALENDAR, TIME_UNITS, days_since_epoch

# CF metadata of the known target variables; others get their name as long_name and no standard_name.
CF_VARIABLES: dict[str, dict[str, str]] = {
    "t2m": {"standard_name": "air_temperature", "long_name": "2 m air temperature, daily mean",
            "cell_methods": "time: mean"},
    "tp": {"standard_name": "precipitation_amount", "long_name": "total precipitation, daily sum",
           "cell_methods": "time: sum"},
    "e": {"standard_name": "water_evapotranspiration_amount",
          "long_name": "evaporation, daily sum (negative values are evaporation)",
          "cell_methods": "time: sum",
          "comment": "ERA5/ECMWF sign convention: downward fluxes are positive, so evaporation is negative "
                     "and condensation (dew) positive, opposite to the upward-positive convention of the "
                     "standard name"},
}
COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}


def default_output(samples: Path) -> Path:
    """``demo-out/samples`` -> ``demo-out/samples.nc`` (next to the folder)."""
    samples = Path(samples)
    return samples.parent / f"{samples.name}.nc"


def check_complete(samples: Path, plan: Mapping[str, Any]) -> None:
    """Every planned date must have its part with exactly ``members`` members; else a one-line error
    naming the missing dates."""
    done = parts.finished_dates(samples, members=plan["members"])
    missing = [d for d in plan["dates"] if d not in done]
    if missing:
        raise HpcdiffError(f"{samples}: incomplete: {len(missing)} of {len(plan['dates'])} planned dates "
                           f"have no complete part ({plan['members']} members): {name_some(missing)}; rerun "
                           "the same hpcdiff sample / submit sample command to fill them")


def read_grid(dataset: Path) -> dict[str, Any]:
    """``x [W]``, ``y [H]`` (m), ``lat``/``lon [H, W]`` from the dataset's ``static.h5``, and the
    manifest's grid (mapping name and projection attributes)."""
    manifest = read_manifest(dataset)
    with h5py.File(Path(dataset) / manifest["static"]["path"], "r") as f:
        grid = {name: f[name][...] for name in ("x", "y", "lat", "lon")}
    return {**grid, "mapping_name": manifest["grid"].get("grid_mapping"),
            "projection": manifest["grid"].get("projection") or {}}


def _coordinates(nc: netCDF4.Dataset, grid: Mapping[str, Any], *, days: np.ndarray, members: int) -> None:
    for name, size in (("time", len(days)), ("member", members), ("y", grid["y"].size),
                       ("x", grid["x"].size), ("nv", 2)):
        nc.createDimension(name, size)
    time = nc.createVariable("time", "i4", ("time",))
    time.setncatts({"standard_name": "time", "long_name": "time", "units": TIME_UNITS,
                    "calendar": CALENDAR, "axis": "T", "bounds": "time_bnds"})
    time[:] = days
    nc.createVariable("time_bnds", "i4", ("time", "nv"))[:] = np.stack([days, days + 1], axis=1)
    member = nc.createVariable("member", "i4", ("member",))
    member.setncatts({"standard_name": "realization", "long_name": "ensemble member", "units": "1"})
    member[:] = np.arange(members)
    for axis, name in (("Y", "y"), ("X", "x")):
        var = nc.createVariable(name, "f8", (name,))
        var.setncatts({"standard_name": f"projection_{name}_coordinate", "long_name": f"{name} coordinate "
                       "of projection", "units": "m", "axis": axis})
        var[:] = grid[name]
    for name, unit, standard in (("lat", "degrees_north", "latitude"), ("lon", "degrees_east", "longitude")):
        var = nc.createVariable(name, "f4", ("y", "x"))
        var.setncatts({"standard_name": standard, "long_name": standard, "units": unit})
        var[:] = grid[name]


def _grid_mapping(nc: netCDF4.Dataset, grid: Mapping[str, Any]) -> str | None:
    name = grid["mapping_name"]
    if not name:
        return None
    var = nc.createVariable(name, "i4")
    var.setncatts({k: np.asarray(v) if isinstance(v, list) else v for k, v in grid["projection"].items()})
    return name


def _data_variable(nc: netCDF4.Dataset, target: Mapping[str, Any], *, chunks: tuple[int, ...],
                   mapping: str | None) -> netCDF4.Variable:
    var = nc.createVariable(target["name"], "f4", ("time", "member", "y", "x"), chunksizes=chunks,
                            **COMPRESSION)
    meta = CF_VARIABLES.get(target["name"], {"long_name": target["name"]})
    var.setncatts({"units": target["units"], **meta, "coordinates": "lat lon"})
    if mapping:
        var.grid_mapping = mapping
    return var


def global_attributes(plan: Mapping[str, Any], *, samples: Path) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"Conventions": "CF-1.8",
            "title": f"hpcdiff downscaled ensemble: {plan['members']} members for {len(plan['dates'])} dates",
            "source": f"hpcdiff {__version__} conditional diffusion U-Net",
            "history": f"{now} hpcdiff merge {Path(samples).resolve()}",
            "hpcdiff_run": plan["run"], "hpcdiff_checkpoint": plan["checkpoint"],
            "hpcdiff_checkpoint_step": int(plan["checkpoint_step"]), "hpcdiff_sampler": plan["sampler"],
            "hpcdiff_steps": int(plan["steps"]), "hpcdiff_members": int(plan["members"]),
            "hpcdiff_seed": int(plan["seed"]), "hpcdiff_dataset": plan["dataset"]}


def physical(plan: Mapping[str, Any], normalized: np.ndarray) -> np.ndarray:
    """Normalized samples ``[M, Ct, H, W]`` -> physical units (float32). A diverged sample overflows
    to inf here (log1p / asinh inverses): kept, and counted by the caller."""
    with np.errstate(over="ignore", invalid="ignore"):
        return inverse_transform({"targets": plan["targets"]}, normalized)


def _write(path: Path, samples: Path, plan: Mapping[str, Any], *, grid: Mapping[str, Any],
           progress: bool) -> int:
    """The whole file at ``path``, one date at a time; returns the number of non-finite values."""
    members, (height, width) = plan["members"], plan["image_shape"]
    days = np.array([days_since_epoch(d) for d in plan["dates"]], np.int32)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts(global_attributes(plan, samples=samples))
        _coordinates(nc, grid, days=days, members=members)
        mapping = _grid_mapping(nc, grid)
        variables = [_data_variable(nc, t, chunks=(1, members, height, width), mapping=mapping)
                     for t in plan["targets"]]
        bad = 0
        for i, date in enumerate(plan["dates"]):
            values = physical(plan, parts.read_part(samples, date))
            assert values.shape == (members, len(variables), height, width), (date, values.shape)
            bad += int(values.size - np.isfinite(values).sum())
            for c, var in enumerate(variables):
                var[i] = values[:, c]
            if progress and (i % 50 == 0 or i == len(days) - 1):
                print(f"\rmerge: {i + 1}/{len(days)} dates", end="\n" if i == len(days) - 1 else "",
                      file=sys.stderr)
    return bad


def merge_samples(samples: Path, out: Path | None = None, *, progress: bool = False) -> Path:
    """Check that ``samples`` is complete and write its merged CF NetCDF to ``out`` (default:
    :func:`default_output`) atomically; returns the output path."""
    samples = Path(samples)
    out = default_output(samples) if out is None else Path(out)
    plan = parts.read_plan(samples)
    check_complete(samples, plan)
    grid = read_grid(Path(plan["dataset"]))
    if [grid["y"].size, grid["x"].size] != list(plan["image_shape"]):
        raise HpcdiffError(f"{plan['dataset']}: grid {grid['lat'].shape} differs from the samples' "
                           f"{plan['image_shape']}")
    with atomic_file(out, suffix=".nc") as tmp:
        bad = _write(tmp, samples, plan, grid=grid, progress=progress)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # the temporary is private; the result is shared like any file
    if bad:
        print(f"hpcdiff merge: warning: {bad} non-finite value(s) in physical units (diverged samples of an "
              f"under-trained model?) in {out}", file=sys.stderr)
    return out
