"""Merge the part files of a sampling run into one CF-1.8 NetCDF file, in physical units.

The file is the contract the evaluation reads:

- dimensions ``(time, member, y, x)``; ``time`` int days since 1970-01-01 (standard calendar, with
  one-day ``time_bnds``), ``member`` 0..M-1, ``y``/``x`` projection coordinates in m, 2-D ``lat``/``lon``;
- a grid-mapping variable named as the dataset's (e.g. ``lambert_conformal_conic``);
- one float32 variable per target channel, named as in the manifest (``t2m``, ``tp``, ``e``), with
  ``units``, ``standard_name``, ``long_name``, ``cell_methods``, ``grid_mapping`` and
  ``coordinates = "lat lon"``, chunked ``(1, M, H, W)`` and zlib-compressed: one date of all members is
  one read;
- global attributes naming the run, checkpoint (and its SHA-256), sampler, steps, members, seed,
  dataset, and the versions of the software that made it.

Parts are read one date at a time (memory: one date), inverse-transformed with the statistics the
network was trained with (stored in ``plan.json``) and clamped to each variable's physical bounds
(:mod:`hpcdiff.variables`; the number of clamped values is reported and stored as the variable's
``hpcdiff_values_clamped_to_bounds``), and written to a temporary file that is renamed onto the
output only when complete.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np

from hpcdiff import __version__
from hpcdiff.data.manifest import Channel, read_manifest
from hpcdiff.data.transforms import inverse_transform_counted
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_file, require_free_space
from hpcdiff.provenance import provenance, software_versions
from hpcdiff.sample import parts
from hpcdiff.sample.dates import name_some
from hpcdiff.sample.plan import SamplePlan, read_plan
from hpcdiff.timeaxis import TIME_UNITS, day_numbers
from hpcdiff.variables import describe

COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}
COORDINATE_BYTES_PER_PIXEL = 2 * 8 + 2 * 4  # lat, lon (float64) and room for the metadata, per pixel


def default_output(samples: Path) -> Path:
    """``demo-out/samples`` -> ``demo-out/samples.nc`` (next to the folder)."""
    samples = Path(samples)
    return samples.parent / f"{samples.name}.nc"


def check_complete(samples: Path, plan: SamplePlan) -> None:
    """Every planned date must have its part with exactly ``members`` members; else a one-line error
    naming the missing dates."""
    done = parts.finished_dates(samples, members=plan.members)
    missing = [d for d in plan.dates if d not in done]
    if missing:
        raise HpcdiffError(f"{samples}: incomplete: {len(missing)} of {len(plan.dates)} planned dates "
                           f"have no complete part ({plan.members} members): {name_some(missing)}; rerun "
                           "the same hpcdiff sample / submit sample command to fill them")


def read_grid(dataset: Path) -> dict[str, Any]:
    """``x [W]``, ``y [H]`` (m), ``lat``/``lon [H, W]`` from the dataset's ``static.h5``, and the
    manifest's grid (mapping name and projection attributes)."""
    manifest = read_manifest(dataset)
    path = manifest.root / manifest.static_path
    try:
        with h5py.File(path, "r") as f:
            grid = {name: f[name][...] for name in ("x", "y", "lat", "lon")}
    except (OSError, KeyError) as err:
        raise HpcdiffError(f"{path}: cannot read the grid ({err})") from None
    return {**grid, "mapping_name": manifest.grid.grid_mapping, "projection": manifest.grid.projection,
            "calendar": manifest.calendar}


def _coordinates(nc: netCDF4.Dataset, grid: Mapping[str, Any], *, days: np.ndarray, members: int) -> None:
    for name, size in (("time", len(days)), ("member", members), ("y", grid["y"].size),
                       ("x", grid["x"].size), ("nv", 2)):
        nc.createDimension(name, size)
    time = nc.createVariable("time", "i4", ("time",))
    time.setncatts({"standard_name": "time", "long_name": "time", "units": TIME_UNITS,
                    "calendar": grid["calendar"], "axis": "T", "bounds": "time_bnds"})
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


def _data_variable(nc: netCDF4.Dataset, target: Channel, *, chunks: tuple[int, ...],
                   mapping: str | None) -> netCDF4.Variable:
    var = nc.createVariable(target.name, "f4", ("time", "member", "y", "x"), chunksizes=chunks,
                            **COMPRESSION)
    var.setncatts({"units": target.units, **describe(target.name).cf_attrs(), "coordinates": "lat lon"})
    lower, upper = target.bounds
    if lower is not None or upper is not None:  # CF: the range a valid value lies in
        var.valid_min = np.float32(lower if lower is not None else -np.inf)
        var.valid_max = np.float32(upper if upper is not None else np.inf)
    if mapping:
        var.grid_mapping = mapping
    return var


def global_attributes(plan: SamplePlan, *, samples: Path) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"Conventions": "CF-1.8",
            "title": f"hpcdiff downscaled ensemble: {plan.members} members for {len(plan.dates)} dates",
            "source": f"hpcdiff {__version__} conditional diffusion U-Net",
            "history": f"{now} hpcdiff merge {Path(samples).resolve()}",
            "hpcdiff_run": plan.run, "hpcdiff_checkpoint": plan.checkpoint,
            "hpcdiff_checkpoint_sha256": plan.checkpoint_sha256,
            "hpcdiff_checkpoint_step": int(plan.checkpoint_step), "hpcdiff_sampler": plan.sampler,
            "hpcdiff_steps": int(plan.steps), "hpcdiff_members": int(plan.members),
            "hpcdiff_seed": int(plan.seed), "hpcdiff_dataset": plan.dataset,
            "hpcdiff_version": __version__, "hpcdiff_commit": provenance()["hpcdiff_commit"],
            "software_versions": json.dumps(software_versions(), sort_keys=True)}


def merged_bytes(plan: SamplePlan) -> int:
    """An upper bound of the merged file's size: every value uncompressed (float32), and coordinates."""
    height, width = plan.image_shape
    values = len(plan.dates) * plan.members * len(plan.target_channels()) * height * width * 4
    return values + height * width * COORDINATE_BYTES_PER_PIXEL


def physical(channels: Sequence[Channel], normalized: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Normalized samples ``[M, Ct, H, W]`` -> physical units (float32) clamped to the channels' bounds,
    and per channel the number of clamped values. A diverged sample overflows to inf here (log1p /
    asinh inverses): kept, and counted by the caller."""
    with np.errstate(over="ignore", invalid="ignore"):
        return inverse_transform_counted([(c.stats, c.bounds) for c in channels], normalized)


def _read_part(samples: Path, date: str, *, shape: tuple[int, ...]) -> np.ndarray:
    """The normalized samples ``[M, Ct, H, W]`` of ``date``'s part, which must have the plan's ``shape``:
    a part copied in from another samples folder would otherwise be merged, or fail mid-file."""
    values = parts.read_part(samples, date)
    if values.shape != shape:
        raise HpcdiffError(f"{parts.part_path(samples, date)}: holds samples of shape {list(values.shape)}, "
                           f"the plan's are {list(shape)} (members, variables, y, x); delete it and rerun "
                           "hpcdiff sample")
    return values


def _write(path: Path, samples: Path, plan: SamplePlan, *, grid: Mapping[str, Any],
           progress: bool) -> tuple[int, dict[str, int]]:
    """The whole file at ``path``, one date at a time; returns the number of non-finite values and of
    values clamped to the physical bounds per variable."""
    members, (height, width) = plan.members, plan.image_shape
    channels = plan.target_channels()
    days = day_numbers(plan.dates, grid["calendar"], where=str(samples)).astype(np.int32)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts(global_attributes(plan, samples=samples))
        _coordinates(nc, grid, days=days, members=members)
        mapping = _grid_mapping(nc, grid)
        variables = [_data_variable(nc, t, chunks=(1, members, height, width), mapping=mapping)
                     for t in channels]
        bad, clamped = 0, dict.fromkeys((c.name for c in channels), 0)
        for i, date in enumerate(plan.dates):
            values, outside = physical(channels, _read_part(samples, date,
                                                            shape=(members, len(channels), height, width)))
            bad += int(values.size - np.isfinite(values).sum())
            for c, var in enumerate(variables):
                var[i] = values[:, c]
                clamped[channels[c].name] += outside[c]
            if progress and (i % 50 == 0 or i == len(days) - 1):
                print(f"\rmerge: {i + 1}/{len(days)} dates", end="\n" if i == len(days) - 1 else "",
                      file=sys.stderr)
        for c, var in enumerate(variables):
            var.hpcdiff_values_clamped_to_bounds = np.int64(clamped[channels[c].name])
    return bad, clamped


def merge_samples(samples: Path, out: Path | None = None, *, progress: bool = False) -> Path:
    """Check that ``samples`` is complete and write its merged CF NetCDF to ``out`` (default:
    :func:`default_output`) atomically; returns the output path."""
    samples = Path(samples)
    out = default_output(samples) if out is None else Path(out)
    if out.is_dir():  # refused before any work: the final rename onto a folder would fail at the end
        raise HpcdiffError(f"{out}: is a folder; give merge --out a file name, e.g. "
                           f"{out / default_output(samples).name}")
    plan = read_plan(samples)
    check_complete(samples, plan)
    grid = read_grid(Path(plan.dataset))
    if (grid["y"].size, grid["x"].size) != tuple(plan.image_shape):
        raise HpcdiffError(f"{plan.dataset}: grid {grid['lat'].shape} differs from the samples' "
                           f"{list(plan.image_shape)}")
    require_free_space(out.parent, merged_bytes(plan), what=f"the merged file {out.name}")
    with atomic_file(out, suffix=".nc") as tmp:
        bad, clamped = _write(tmp, samples, plan, grid=grid, progress=progress)
    if bad:
        print(f"hpcdiff merge: warning: {bad} non-finite value(s) in physical units (diverged samples of an "
              f"under-trained model?) in {out}", file=sys.stderr)
    outside = {name: n for name, n in clamped.items() if n}
    if outside:
        total = plan.members * len(plan.dates) * plan.image_shape[0] * plan.image_shape[1]
        detail = ", ".join(f"{name} {n} ({100 * n / total:.2g}%)" for name, n in outside.items())
        print(f"hpcdiff merge: values outside the physical bounds, clamped to them: {detail}",
              file=sys.stderr)
    return out
