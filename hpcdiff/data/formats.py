"""Input files as xarray datasets, whatever their format: NetCDF 3 or 4, GRIB 1 or 2 (cfgrib on
ecCodes' PyPI wheels), Zarr stores (DANRA as distributed) and the new CDS's zip downloads (one NetCDF
per step type inside, read in place: nothing is extracted). Everything is opened lazily: values are
read when a slice of a variable is asked for, so a block of days reads only its own bytes (HDF5 and
Zarr chunks, GRIB messages).

Times are *not* decoded by xarray for NetCDF and Zarr: :mod:`hpcdiff.data.era5` and
:mod:`hpcdiff.data.sources` decode them with cftime, which keeps non-standard calendars. cfgrib always
decodes (GRIB has only the standard calendar). cfgrib's index files are disabled: nothing is written
next to the inputs.

The format is told by the file's first bytes, not by its name: ``GRIB``, ``CDF`` (NetCDF 3), HDF5's
signature (NetCDF 4), a zip archive, a folder with Zarr metadata.
"""

from __future__ import annotations

import contextlib
import importlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr

from hpcdiff.errors import HpcdiffError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")
ZIP_MAGIC = b"PK\x03\x04"
FORMATS = {"netcdf": "NetCDF", "grib": "GRIB", "zarr": "Zarr", "zip": "zip"}  # kind -> name in messages


def import_grib():
    """cfgrib, after pyproj. ecCodes' PyPI wheels (eckitlib) bring their own PROJ library and load it into
    the process's global symbol scope; a pyproj imported afterwards binds to that copy and fails ("no
    database context specified"), and the process then crashes at exit freeing PROJ's state. pyproj
    imported first binds to its own copy, and ecCodes keeps its own."""
    importlib.import_module("pyproj")  # first: its load order is the point
    return importlib.import_module("cfgrib")


def is_zarr_store(path: Path) -> bool:
    """Whether ``path`` is a folder with Zarr metadata (version 2 or 3)."""
    return path.is_dir() and any((path / marker).exists() for marker in ZARR_MARKERS)


def detect_format(path: Path) -> str:
    """``netcdf``, ``grib`` or ``zarr`` from the file's first bytes (a Zarr store is a folder); a
    one-line error naming the file otherwise."""
    path = Path(path)
    if path.is_dir():
        if is_zarr_store(path):
            return "zarr"
        raise HpcdiffError(f"{path}: a folder that is not a Zarr store (no {' / '.join(ZARR_MARKERS)})")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise HpcdiffError(f"{path}: no such file") from None
    except OSError as err:
        raise HpcdiffError(f"{path}: cannot read ({err.strerror or err})") from None
    if head.startswith(b"GRIB"):
        return "grib"
    if head.startswith(b"CDF") or head == HDF5_MAGIC:
        return "netcdf"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    raise HpcdiffError(f"{path}: not a readable NetCDF, GRIB or Zarr input (it starts with {head[:4]!r})")


def open_inputs(path: Path) -> list[xr.Dataset]:
    """The datasets of one input: one for NetCDF and Zarr; one per hypercube for GRIB (cfgrib splits a
    file whose messages differ in step type or level type, e.g. instantaneous t2m and accumulated tp
    of a CDS download)."""
    path = Path(path)
    kind = detect_format(path)
    try:
        if kind == "grib":
            cfgrib = import_grib()

            datasets = cfgrib.open_datasets(str(path), backend_kwargs={"indexpath": ""}, cache=False)
            if not datasets:
                raise HpcdiffError(f"{path}: a GRIB file without any readable message")
            return datasets
        if kind == "zip":
            return _open_zip(path)
        if kind == "zarr":
            return [xr.open_zarr(path, decode_times=False, decode_timedelta=False, chunks=None,
                                 mask_and_scale=True)]
        with _no_chunk_cache():
            return [xr.open_dataset(path, engine="netcdf4", decode_times=False, decode_timedelta=False,
                                    mask_and_scale=True, cache=False)]
    except HpcdiffError:
        raise
    except Exception as err:  # the backends raise OSError, ValueError, KeyError, EOFError ...
        raise HpcdiffError(f"{path}: not a readable {FORMATS[kind]} input ({type(err).__name__}: {err})") \
            from None


def grib_valid_times(path: Path) -> dict[str, np.ndarray]:
    """Valid times (seconds since 1970, int64) of the messages of a GRIB file per variable name (cfgrib's
    name and the short name), from the message headers (no values decoded). cfgrib fills the cells of
    its (time, step) hypercube that no message holds with NaN (the first and last forecasts of a
    request have only some steps); these times tell present cells from absent ones."""
    import_grib()
    import eccodes

    found: dict[str, list[int]] = {}
    with open(path, "rb") as f:
        while (handle := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                day, hhmm = (int(eccodes.codes_get(handle, key)) for key in ("validityDate", "validityTime"))
                names = {str(eccodes.codes_get(handle, key)) for key in ("cfVarName", "shortName")}
            finally:
                eccodes.codes_release(handle)
            stamp = (np.datetime64(f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}", "s")
                     + np.timedelta64(hhmm // 100 * 3600 + hhmm % 100 * 60, "s"))
            for name in names:
                found.setdefault(name, []).append(int(stamp.astype(np.int64)))
    return {name: np.unique(stamps) for name, stamps in found.items()}


@contextlib.contextmanager
def _no_chunk_cache() -> Iterator[None]:
    """No HDF5 chunk cache for the variables of a NetCDF input opened inside: a block of days reads each
    chunk once, and the default (16 MiB per variable of every open file) only costs memory; it took
    preprocessing's peak from ~190 to 600-850 MiB (docs/performance_data.md). netCDF-C gives variables
    the process-wide setting in force when their file opens; it is restored on leaving, so files opened
    or written elsewhere (merge, the synthetic world) keep the default."""
    import netCDF4

    before = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(size=0, nelems=1, preemption=1.0)
    try:
        yield
    finally:
        netCDF4.set_chunk_cache(*before)


def _open_zip(path: Path) -> list[xr.Dataset]:
    """One dataset per NetCDF member of a zip archive (sorted by name), read through the archive."""
    archive = zipfile.ZipFile(path)
    datasets = []
    try:
        for member in sorted(archive.namelist()):
            if member.endswith("/"):
                continue
            with archive.open(member) as f:
                head = f.read(8)
            if head.startswith(b"GRIB"):
                raise HpcdiffError(f"{path}: member {member} is GRIB, which is read from files only; "
                                   "extract the archive")
            engine = "h5netcdf" if head == HDF5_MAGIC else "scipy" if head.startswith(b"CDF") else None
            if engine is None:
                continue  # e.g. a request's README
            handle = archive.open(member)
            ds = xr.open_dataset(handle, engine=engine, decode_times=False, decode_timedelta=False,
                                 mask_and_scale=True, cache=False)
            ds.set_close(handle.close)
            datasets.append(ds)
    except BaseException:
        for ds in datasets:
            ds.close()
        archive.close()
        raise
    if not datasets:
        archive.close()
        raise HpcdiffError(f"{path}: a zip archive without NetCDF members")
    return datasets


class OpenInputs:
    """Inputs kept open across read blocks: blocks come in time order, so the ``keep`` most recently
    used files suffice."""

    def __init__(self, keep: int = 6) -> None:
        self.keep = keep
        self._open: dict[Path, list[xr.Dataset]] = {}

    def __call__(self, path: Path) -> list[xr.Dataset]:
        datasets = self._open.pop(path, None) or open_inputs(path)
        self._open[path] = datasets  # most recent last
        while len(self._open) > self.keep:
            for ds in self._open.pop(next(iter(self._open))):
                ds.close()
        return datasets

    def close(self) -> None:
        for datasets in self._open.values():
            for ds in datasets:
                ds.close()
        self._open = {}

    def __enter__(self) -> OpenInputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
