"""The dataset side of an evaluation: statics (land mask, grid) and the rows of the shards for given
dates, from any split, turned back into physical units with the manifest's own statistics.

The truth is exactly what the model was trained against: ``target`` of the shards, inverse-transformed
(:func:`hpcdiff.data.transforms.inverse`). The condition rows (``cond``) give the bilinear baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from hpcdiff.data.manifest import Channel, Manifest
from hpcdiff.data.shards import open_shard
from hpcdiff.data.transforms import inverse
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import to_days

LAND_THRESHOLD = 0.5  # lsm above this is land


@dataclasses.dataclass(frozen=True)
class Static:
    """The target grid: ``lat``/``lon`` (degrees), ``lsm`` (0..1) ``[H, W]``; ``x`` ``[W]``, ``y`` ``[H]``
    (m)."""

    lat: np.ndarray
    lon: np.ndarray
    lsm: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @property
    def land(self) -> np.ndarray:
        """Land mask ``[H, W]`` bool (lsm > 0.5)."""
        return self.lsm > LAND_THRESHOLD

    @property
    def dx_km(self) -> float:
        return float(abs(self.x[1] - self.x[0]) / 1000.0) if self.x.size > 1 else 1.0


def read_static(manifest: Manifest) -> Static:
    path = manifest.root / manifest.static_path
    try:
        with h5py.File(path, "r") as f:
            fields = {k: np.asarray(f[k][...], np.float64) for k in ("lat", "lon", "lsm", "x", "y")}
    except (OSError, KeyError) as err:
        raise HpcdiffError(f"{path}: cannot read the static fields ({err})") from None
    return Static(**fields)


Located = list[tuple[Path, np.ndarray, np.ndarray]]  # (shard, rows, positions)


def locate(manifest: Manifest, dates: np.ndarray) -> Located:
    """Where ``dates`` ``[T]`` lie in the shards of any split: ``(shard, rows, positions)`` with ``rows``
    ascending indices into the shard and ``positions`` their places in ``dates``. Missing dates are a
    one-line error that names them."""
    days = to_days(dates)
    found = np.zeros(days.size, bool)
    out = []
    for split in manifest.splits.values():
        for shard in split.shards:
            path = manifest.root / shard.path
            time = np.asarray(_read(path, "time"), np.int64)
            rows, positions = _matches(time, days, found)
            if rows.size:
                out.append((path, rows, positions))
    if not found.all():
        missing = [str(d) for d in np.asarray(dates, "datetime64[D]")[~found]]
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise HpcdiffError(f"{manifest.root}: no truth for {len(missing)} sample date(s): {shown}")
    return out


def _matches(time: np.ndarray, days: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``time`` holding a not yet ``found`` day of ``days`` (marking them found), ascending."""
    lookup = {int(day): row for row, day in enumerate(time)}
    positions = np.array([p for p, day in enumerate(days) if not found[p] and int(day) in lookup], np.int64)
    rows = np.array([lookup[int(days[p])] for p in positions], np.int64)
    found[positions] = True
    ascending = np.argsort(rows)
    return rows[ascending], positions[ascending]


def _read(path: Path, key: str, rows: np.ndarray | None = None) -> np.ndarray:
    """``key`` of the shard ``path`` (its ``rows`` only, when given); a one-line error if unreadable."""
    try:
        with open_shard(path) as f:
            return f[key][...] if rows is None else f[key][rows]
    except (OSError, KeyError) as err:
        raise HpcdiffError(f"{path}: cannot read {key!r} from the shard ({err}); run hpcdiff check") from None


def read_dated(manifest: Manifest, dates: np.ndarray, *, key: str) -> np.ndarray:
    """Rows of shard dataset ``key`` (``target`` or ``cond``) for ``dates`` ``[T]``: ``[T, C, H, W]``
    float32, normalized, in the order of ``dates``."""
    pieces = locate(manifest, dates)
    out = None
    for path, rows, positions in pieces:
        block = _read(path, key, rows)  # h5py takes ascending index lists
        if out is None:
            out = np.empty((len(dates), *block.shape[1:]), np.float32)
        out[positions] = block
    assert out is not None
    return out


def physical(normalized: np.ndarray, channels: Sequence[Channel],
             names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name: [T, H, W] float64}`` in physical units from normalized ``[T, C, H, W]``, for the
    manifest ``channels`` (targets or conditions) named in ``names``."""
    index = {c.name: i for i, c in enumerate(channels)}
    assert normalized.ndim == 4 and normalized.shape[1] == len(channels), normalized.shape
    return {name: inverse(normalized[:, index[name]], channels[index[name]].stats) for name in names}


def load_truth(manifest: Manifest, dates: np.ndarray) -> dict[str, np.ndarray]:
    """Truth ``{target: [T, H, W] float64}`` in physical units (K, kg m-2) for ``dates`` ``[T]``."""
    normalized = read_dated(manifest, dates, key="target")
    return physical(normalized, manifest.targets, manifest.target_names)
