"""ERA5 for dates without truth, as a user has them: the `tiny` world's ERA5 file of 2004 (hourly,
legacy CDS NetCDF3) and the same file with its time axis moved 28 years on (2032, also a leap year, so
each date keeps its day of year), next to the world's static file; and the command line that
preprocesses them as a conditions-only dataset with the normalization of a training dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import netCDF4
import numpy as np

REPO = Path(__file__).resolve().parents[1]
YEAR, FUTURE = 2004, 2032


def write_future_root(world: Path, root: Path) -> Path:
    """``root`` with ``era5/era5_2004.nc``, ``era5/era5_2032.nc`` and ``static/static.nc``."""
    (root / "era5").mkdir(parents=True)
    (root / "static").mkdir()
    shutil.copy(world / "static" / "static.nc", root / "static" / "static.nc")
    shutil.copy(world / "era5" / f"era5_{YEAR}.nc", root / "era5" / f"era5_{YEAR}.nc")
    future = root / "era5" / f"era5_{FUTURE}.nc"
    shutil.copy(world / "era5" / f"era5_{YEAR}.nc", future)
    hours = (np.datetime64(f"{FUTURE}-01-01") - np.datetime64(f"{YEAR}-01-01")) // np.timedelta64(1, "h")
    with netCDF4.Dataset(future, "a") as ds:
        assert ds["time"].units.startswith("hours since"), ds["time"].units
        ds["time"][:] = ds["time"][:] + int(hours)
    return root


def preprocess_args(out: Path, *sets: str) -> list[str]:
    """``hpcdiff preprocess`` of the synthetic recipe with ``--set`` overrides (arguments for ``main``)."""
    return ["preprocess", str(REPO / "preprocess" / "synthetic.yaml"), "--out", str(out), "--no-progress",
            *[a for s in sets for a in ("--set", s)]]


def conditions_only_args(root: Path, out: Path, training: Path, *sets: str) -> list[str]:
    """The synthetic recipe made conditions-only, over ``root``, normalized like ``training``."""
    return preprocess_args(out, f"root={root}", "target=null", "split=null",
                           f"normalization.dataset={training}", *sets)


def future_date(date: str) -> str:
    """The 2032 date of a 2004 date (same month and day)."""
    assert date.startswith(f"{YEAR}-"), date
    return f"{FUTURE}{date[4:]}"
