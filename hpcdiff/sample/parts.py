"""Part files of a sampling run: one HDF5 file per date holding all members, written atomically.

``SAMPLES/plan.json`` fixes what the run must contain (:mod:`hpcdiff.sample.plan`);
``SAMPLES/parts/<YYYY-MM-DD>.h5`` holds ``samples [M, Ct, H, W]`` float32 in the model's
normalized space. A part is visible under its final name only once complete, so a killed task leaves
nothing that a rerun or a merge could mistake for a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_file
from hpcdiff.sample.plan import read_plan


def part_path(out: Path, date: str) -> Path:
    return Path(out) / "parts" / f"{date}.h5"


def write_part(out: Path, date: str, samples: np.ndarray, *, attrs: dict[str, Any]) -> Path:
    """Write ``samples [M, Ct, H, W]`` for ``date`` atomically."""
    assert samples.ndim == 4, samples.shape
    path = part_path(out, date)
    with atomic_file(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("samples", data=samples.astype(np.float32), chunks=samples.shape)
        for key, value in {"date": date, **attrs}.items():
            f.attrs[key] = value
    return path


def read_part(out: Path, date: str) -> np.ndarray:
    path = part_path(out, date)
    try:
        with h5py.File(path, "r") as f:
            return f["samples"][()]
    except (OSError, KeyError) as err:
        raise HpcdiffError(f"{path}: unreadable part file ({err})") from None


def finished_dates(out: Path, *, members: int) -> set[str]:
    """Dates whose part exists and holds ``members`` members."""
    done = set()
    for path in sorted((Path(out) / "parts").glob("*.h5")):
        try:
            with h5py.File(path, "r") as f:
                if f["samples"].shape[0] == members:
                    done.add(path.stem)
        except (OSError, KeyError):
            continue  # not a complete part: it will be redone
    return done


def missing_dates(out: Path) -> list[str]:
    plan = read_plan(out)
    done = finished_dates(out, members=plan.members)
    return [d for d in plan.dates if d not in done]
