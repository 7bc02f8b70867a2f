"""Writing a world: the DANRA-like target files, the statics, and :func:`write_world`, which is
``hpcdiff synth``.

Targets are NetCDF4 ``(time, y, x)`` float32 on the Lambert grid, daily values stamped 00:00 (days
since 1990-01-01); the statics file holds ``lsm`` (0/1) and ``orography`` (m). Both carry 2-D
``lat``/``lon`` and the grid mapping. A world's folder is recognizable by its ``world.json``; writing
replaces an existing world atomically and refuses to touch anything else.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import netCDF4
import numpy as np
from tqdm import tqdm

from hpcdiff.data.synth.era5 import write_era5_nc3, write_era5_nc4
from hpcdiff.data.synth.geometry import WORLD_JSON, World, build_world, is_world, world_json
from hpcdiff.data.synth.law import Preset, get_preset
from hpcdiff.data.synth.meta import DANRA_EPOCH, TARGET_META, TARGET_VARS, set_attrs
from hpcdiff.data.synth.truth import truth
from hpcdiff.data.synth.weather import era5_fields
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_dir
from hpcdiff.timeaxis import calendar_name, to_days


def _write_grid(ds: netCDF4.Dataset, world: World) -> None:
    """Dimensions ``y``, ``x``; coordinates x, y (m), 2-D lat, lon (degrees) and the grid mapping."""
    ds.createDimension("y", world.grid.y.size)
    ds.createDimension("x", world.grid.x.size)
    for name, axis in (("x", "X"), ("y", "Y")):
        coord = ds.createVariable(name, "f8", (name,))
        set_attrs(coord, {"units": "m", "standard_name": f"projection_{name}_coordinate", "axis": axis})
        coord[:] = getattr(world.grid, name)
    for name, units, long_name in (("lat", "degrees_north", "latitude"),
                                   ("lon", "degrees_east", "longitude")):
        coord = ds.createVariable(name, "f8", ("y", "x"))
        set_attrs(coord, {"units": units, "standard_name": long_name, "long_name": long_name})
        coord[:] = getattr(world, name)
    mapping = ds.createVariable("lambert_conformal_conic", "i4")
    attrs = world.grid.projection.cf_attributes()
    set_attrs(mapping, {**attrs, "standard_parallel": np.asarray(attrs["standard_parallel"])})


def _data_var(ds: netCDF4.Dataset, name: str, dims: tuple[str, ...], attrs: dict,
              **kwargs: object) -> netCDF4.Variable:
    """A float32 variable ``name`` on the target grid (grid mapping and 2-D lat/lon attached)."""
    var = ds.createVariable(name, "f4", dims, **kwargs)
    set_attrs(var, {**attrs, "grid_mapping": "lambert_conformal_conic", "coordinates": "lat lon"})
    return var


def write_danra(path: Path, world: World, dates: np.ndarray, *, block_days: int = 32) -> None:
    """The truth of ``dates`` as DANRA-like NetCDF4 ``(time, y, x)`` float32, daily values stamped
    00:00 (days since 1990-01-01); computed ``block_days`` at a time to bound the memory."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        _write_grid(ds, world)
        ds.createDimension("time", dates.size)
        time = ds.createVariable("time", "i4", ("time",))
        set_attrs(time, {"units": "days since 1990-01-01 00:00:00", "calendar": "standard",
                         "standard_name": "time", "axis": "T"})
        time[:] = to_days(dates, epoch=DANRA_EPOCH).astype(np.int32)
        variables = {}
        for name in TARGET_VARS:
            units, long_name, standard_name, cell_methods = TARGET_META[name]
            variables[name] = _data_var(ds, name, ("time", "y", "x"), {
                "units": units, "long_name": long_name, "standard_name": standard_name,
                "cell_methods": cell_methods}, chunksizes=(1, *world.shape))
        for start in range(0, dates.size, block_days):
            block = truth(world, dates[start:start + block_days])
            for name, var in variables.items():
                var[start:start + block_days] = block[name].astype(np.float32)
        ds.setncatts({"Conventions": "CF-1.8", "title": "DANRA-like synthetic targets (hpcdiff)",
                      "preset": world.preset, "seed": world.seed})


def write_static(path: Path, world: World) -> None:
    """``lsm`` (0/1) and ``orography`` (m) on the target grid, with lat/lon and the grid mapping."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        _write_grid(ds, world)
        lsm = _data_var(ds, "lsm", ("y", "x"), {"units": "1", "long_name": "land-sea mask (global_land_mask)",
                                                "standard_name": "land_binary_mask"})
        lsm[:] = world.lsm.astype(np.float32)
        oro = _data_var(ds, "orography", ("y", "x"), {"units": "m", "long_name": "synthetic orography",
                                                      "standard_name": "surface_altitude"})
        oro[:] = world.orography.astype(np.float32)
        ds.setncatts({"Conventions": "CF-1.8", "title": "static fields of the synthetic world (hpcdiff)"})


def write_era5_year(world: World, year: int) -> None:
    """The ERA5 file of ``year``."""
    times, fields = era5_fields(world, year)
    writer = write_era5_nc3 if world.flavours[year] == "nc3" else write_era5_nc4
    writer(world.era5_path(year), world, times, fields)


def check_replaceable(out: Path) -> None:
    """A one-line error unless ``out`` is free to become a world: absent, an empty folder, or a world
    (which is then replaced)."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise HpcdiffError(f"{out}: exists and is not a folder; not replacing it with a synthetic world")
    try:
        empty = not any(out.iterdir())
    except OSError as err:
        raise HpcdiffError(f"{out}: cannot list the folder ({err.strerror})") from None
    if not empty and not is_world(out):
        raise HpcdiffError(f"{out}: folder is not empty and holds no synthetic world ({WORLD_JSON}); "
                           "not replacing it (choose a new or empty folder)")


def write_world(out: Path, *, preset: str | Preset = "tiny", seed: int = 0, progress: bool = True,
                cordex: str | None = None, days_per_year: int | None = None) -> Path:
    """Write the synthetic world of ``preset`` (a name of :data:`~hpcdiff.data.synth.law.PRESETS`, or a
    :class:`~hpcdiff.data.synth.law.Preset`), with the preset's law, to the folder ``out`` (atomically:
    built next to it, renamed at the end); the same ``preset`` and ``seed`` give identical bytes. ``out``
    may be new, an empty folder or an existing world, which is replaced; anything else is refused
    untouched. ``cordex``: a calendar in which to also write EURO-CORDEX-like files into ``cordex/``
    (:mod:`hpcdiff.data.synth.cordex`). ``days_per_year`` replaces the preset's (1..365)."""
    spec = preset if isinstance(preset, Preset) else get_preset(preset)
    if days_per_year is not None:
        if not 1 <= days_per_year <= 365:
            raise HpcdiffError(f"--days-per-year must be in 1..365, got {days_per_year}")
        spec = dataclasses.replace(spec, days_per_year=days_per_year)
    if cordex is not None:
        cordex = calendar_name(cordex, where="--cordex")
    if seed < 0:
        raise HpcdiffError(f"synthetic world seed must be >= 0 (got {seed})")
    out = Path(out)
    check_replaceable(out)
    with atomic_dir(out) as tmp:
        world = build_world(tmp, spec, seed=seed)
        for sub in ("era5", "danra", "static"):
            (tmp / sub).mkdir()
        write_static(world.static_path, world)
        # every ERA5 file first: the truth of a year's last day may read the next year's 00 UTC step
        for year in world.years:
            write_era5_year(world, year)
        for year in tqdm(world.years, desc=f"synth {spec.name}", unit="year", disable=not progress):
            write_danra(world.danra_path(year), world, world.dates[year])
        if cordex is not None:
            from hpcdiff.data.synth.cordex import write_cordex

            write_cordex(world, tmp / "cordex", calendar=cordex)
        (tmp / WORLD_JSON).write_text(json.dumps(world_json(world), indent=1, sort_keys=True) + "\n")
    return out
