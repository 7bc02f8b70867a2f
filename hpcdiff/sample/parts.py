"""Part files of a sampling run: one HDF5 file per date holding all members, written atomically.

``SAMPLES/plan.json`` fixes what the run must contain (:mod:`hpcdiff.sample.plan`);
``SAMPLES/parts/<YYYY-MM-DD>.h5`` holds ``samples [M, Ct, H, W]`` float32 in the model's
normalized space. A part is visible under its final name only once complete, so a killed task leaves
nothing that a rerun or a merge could mistake for a result.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_file, require_free_space
from hpcdiff.sample.plan import read_plan


def part_path(out: Path, date: str) -> Path:
    return Path(out) / "parts" / f"{date}.h5"


def part_image(date: str, samples: np.ndarray, *, attrs: dict[str, Any]) -> bytes:
    """The bytes of the part file of ``samples [M, Ct, H, W]`` for ``date``, built in memory."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("samples", data=samples.astype(np.float32), chunks=samples.shape)
        for key, value in {"date": date, **attrs}.items():
            f.attrs[key] = value
    return buffer.getvalue()


def write_part(out: Path, date: str, samples: np.ndarray, *, attrs: dict[str, Any]) -> Path:
    """Write ``samples [M, Ct, H, W]`` for ``date`` atomically. The file is built in memory (one date) and
    written with a plain write: HDF5 does not survive a full disk under its own files (it crashes when the
    process exits), a plain write fails cleanly. A one-line error when the file system has no room, checked
    before writing and, should the disk fill meanwhile, on writing."""
    assert samples.ndim == 4, samples.shape
    path = part_path(out, date)
    image = part_image(date, samples, attrs=attrs)
    require_free_space(path.parent, len(image), what=f"the part {path.name}")
    with atomic_file(path, suffix=".h5") as tmp:
        tmp.write_bytes(image)
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
