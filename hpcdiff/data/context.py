"""Large-scale context: the neighbouring days of each date and the ERA5 fields over a larger box.

A recipe's ``context:`` section (:class:`~hpcdiff.data.recipe.ContextSection`) stores, with every sample,

- ``temporal`` ``[N, Cc · D', H, W]``: the conditions of the neighbouring days (``days`` without 0, in
  the recipe's order, each the ``Cc`` ERA5 variables), regridded to the target grid like ``cond`` and
  normalized with the same-day conditions' statistics (the same variables over the same training days,
  shifted);
- ``context`` ``[N, Cx · D, Hx, Wx]`` (with a ``box``): the ERA5 variables over the box on the inputs'
  own latitude-longitude grid, optionally coarsened, for every offset of ``days`` (0 included, in the
  recipe's order), with their own statistics fitted on the training split's same-day boxes.

Completeness is decided before any value is read (:func:`plan_context`): a date whose neighbouring day
has no complete ERA5 day, or (``neighbours: split``) lies outside the years of the date's split, is
dropped; the manifest lists every dropped date with the day it lacked (:class:`ContextInfo`), so that
sampling it is a clear error, not a silently filled field.

A job selects what its network reads (:class:`hpcdiff.train.job.ContextJob`): ``temporal`` offsets
(extra condition channels ``name@offset``) and ``spatial`` offsets (the box at those days, read by the
network's context encoder). With a spatial context the conditions end with two static channels
``ctx_y``, ``ctx_x``: each pixel's position in the box in [-1, 1] (:func:`box_coordinates`), which the
encoder samples its features at.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpcdiff.data.recipe import ContextBox, ContextSection
from hpcdiff.errors import HpcdiffError

BOX_CHANNELS = ("ctx_y", "ctx_x")  # each pixel's normalized position in the box: the last two conditions
GRID_RTOL = 1e-3  # relative tolerance of a regular grid step


def channel_name(name: str, offset: int) -> str:
    """The channel of variable ``name`` on day ``offset``: ``t2m@-1``, ``t2m@+1`` (``t2m`` for 0)."""
    return name if offset == 0 else f"{name}@{offset:+d}"


# -- which dates have their context -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Dropped:
    """A date left out because its context is incomplete: the ``missing`` day (ISO) at ``offset`` and
    ``why``."""

    date: str
    offset: int
    missing: str
    why: str

    def reason(self) -> str:
        return f"its context needs {self.missing} (day {self.offset:+d}), which {self.why}"


def plan_context(dates: np.ndarray, *, section: ContextSection, complete: np.ndarray,
                 allowed_years: Sequence[int] | None) -> tuple[np.ndarray, list[tuple[Any, int, str]]]:
    """Which of ``dates`` ``[n]`` datetime64[D] keep their context: a bool mask ``[n]`` and, for each
    dropped date, ``(date, offset, why)`` naming its first missing neighbour. ``complete``: the sorted
    dates with a complete ERA5 day; ``allowed_years``: the years neighbours may lie in (``None``: any,
    as ``neighbours: any`` or a conditions-only dataset)."""
    keep = np.ones(dates.size, bool)
    dropped: list[tuple[Any, int, str]] = []
    for offset in section.offsets:
        days = dates + np.timedelta64(offset, "D")
        have = np.isin(days, complete)
        inside = (np.ones(dates.size, bool) if allowed_years is None
                  else np.isin(days.astype("datetime64[Y]").astype(int) + 1970, list(allowed_years)))
        for k in np.flatnonzero(keep & ~(have & inside)).tolist():
            why = "has no complete ERA5 day" if not have[k] else "lies outside the years of its split"
            dropped.append((dates[k], offset, why))
        keep &= have & inside
    return keep, dropped


def needed_days(dates: np.ndarray, offsets: Sequence[int]) -> np.ndarray:
    """The sorted union ``[m]`` datetime64[D] of ``dates`` and their neighbours at ``offsets``."""
    shifted = [dates + np.timedelta64(o, "D") for o in offsets]
    return np.unique(np.concatenate([dates, *shifted]))


# -- the box -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BoxPlan:
    """Where the box lies in the ERA5 grid: ``rows`` ``[k · Hx]`` (north to south) and ``cols``
    ``[k · Wx]`` (west to east) indices into the file grid, coarsened by ``k``; ``variables`` indices
    into the recipe's ERA5 variables; ``lat`` ``[Hx]`` / ``lon`` ``[Wx]`` the coarse cells' centres."""

    rows: np.ndarray
    cols: np.ndarray
    coarsen: int
    variables: list[int]
    lat: np.ndarray
    lon: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.lat.size, self.lon.size

    def cut(self, fields: np.ndarray) -> np.ndarray:
        """The box ``[n, Cx, Hx, Wx]`` of ERA5 fields ``[n, C, n_lat, n_lon]`` (file order): the box's
        variables and cells, block means of ``coarsen x coarsen`` cells."""
        box = fields[:, self.variables][:, :, self.rows][:, :, :, self.cols]
        k = self.coarsen
        if k == 1:
            return box
        n, c, h, w = box.shape
        return box.reshape(n, c, h // k, k, w // k, k).mean(axis=(3, 5))


def _regular(values: np.ndarray, *, axis: str, where: str) -> None:
    steps = np.diff(values)
    if steps.size and not np.allclose(steps, steps[0], rtol=GRID_RTOL, atol=0):
        raise HpcdiffError(f"{where}: the ERA5 {axis} inside context.box is not a regular grid")


def plan_box(box: ContextBox, *, lat: np.ndarray, lon: np.ndarray, names: Sequence[str], where: str,
             rotated: bool = False) -> BoxPlan:
    """The :class:`BoxPlan` of ``box`` on the ERA5 grid ``lat`` ``[n_lat]`` / ``lon`` ``[n_lon]`` (degrees,
    file order, longitudes in -180..180); ``names``: the recipe's ERA5 variables. One-line errors when the
    inputs are on a rotated pole, the box reaches beyond them or holds fewer than ``coarsen`` cells."""
    if rotated:
        raise HpcdiffError(f"{where}: context.box needs ERA5 on a latitude-longitude grid; these inputs are "
                           "on a rotated pole")
    (west, east), (south, north) = box.lon, box.lat
    eps = 1e-6
    covered = (lat.min() <= south + eps and lat.max() >= north - eps and lon.min() <= west + eps
               and lon.max() >= east - eps)
    if not covered:
        raise HpcdiffError(f"{where}: context.box lon {list(box.lon)}, lat {list(box.lat)} reaches beyond "
                           f"the ERA5 inputs (lon {lon.min():g}..{lon.max():g}, "
                           f"lat {lat.min():g}..{lat.max():g})")
    rows = np.flatnonzero((lat >= south - eps) & (lat <= north + eps))
    rows = rows[np.argsort(-lat[rows], kind="stable")]
    cols = np.flatnonzero((lon >= west - eps) & (lon <= east + eps))
    cols = cols[np.argsort(lon[cols], kind="stable")]
    k = box.coarsen
    if rows.size < k or cols.size < k:
        raise HpcdiffError(f"{where}: context.box holds {rows.size} x {cols.size} ERA5 cells, fewer than "
                           f"coarsen {k}")
    rows, cols = rows[:rows.size // k * k], cols[:cols.size // k * k]
    _regular(lat[rows], axis="latitude", where=where)
    _regular(lon[cols], axis="longitude", where=where)
    chosen = list(names) if box.variables is None else list(box.variables)
    return BoxPlan(rows=rows, cols=cols, coarsen=k, variables=[list(names).index(v) for v in chosen],
                   lat=lat[rows].reshape(-1, k).mean(axis=1), lon=lon[cols].reshape(-1, k).mean(axis=1))


def check_inside(box: BoxPlan, *, lat: np.ndarray, lon: np.ndarray, where: str) -> None:
    """The target points ``lat``/``lon`` ``[H, W]`` must lie within the box's cell centres: a network reads
    the box's features at each pixel's place in it."""
    inside = ((lat <= box.lat[0] + 1e-6) & (lat >= box.lat[-1] - 1e-6) & (lon >= box.lon[0] - 1e-6)
              & (lon <= box.lon[-1] + 1e-6))
    if not inside.all():
        raise HpcdiffError(f"{where}: context.box (cell centres {box.lat[-1]:g}..{box.lat[0]:g} N, "
                           f"{box.lon[0]:g}..{box.lon[-1]:g} E) does not contain the target grid "
                           f"({lat.min():.2f}..{lat.max():.2f} N, {lon.min():.2f}..{lon.max():.2f} E)")


def box_coordinates(lat: np.ndarray, lon: np.ndarray, *, box_lat: np.ndarray,
                    box_lon: np.ndarray) -> np.ndarray:
    """``[2, H, W]`` float32: the position of each target point ``lat``/``lon`` ``[H, W]`` in the box whose
    cell centres are ``box_lat`` ``[Hx]`` (north to south) and ``box_lon`` ``[Wx]``: fractional row and
    column scaled so that -1 is the first cell and +1 the last (``grid_sample``'s ``align_corners``)."""
    def scaled(values: np.ndarray, axis: np.ndarray) -> np.ndarray:
        if axis.size == 1:
            return np.zeros_like(values)
        return -1.0 + 2.0 * (values - axis[0]) / (axis[-1] - axis[0])

    return np.stack([scaled(lat, box_lat), scaled(lon, box_lon)]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ContextSelection:
    """What a run reads of a dataset's context: ``temporal`` offsets (extra condition channels) and
    ``spatial`` offsets (the box at those days)."""

    temporal: tuple[int, ...] = ()
    spatial: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.temporal and not self.spatial


# -- what a dataset holds ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContextInfo:
    """The context a dataset holds (the manifest's ``context``): ``days`` (0 included) and the
    ``temporal`` array's ``offsets`` (``days`` without 0); with a box its ``box_variables``, their
    normalization entries ``box_channels`` (one per variable), and the cells' centres ``box_lat`` ``[Hx]``
    / ``box_lon`` ``[Wx]``; ``dropped``: date -> why it was left out."""

    days: tuple[int, ...]
    neighbours: str
    box_variables: tuple[str, ...] = ()
    box_channels: tuple[Mapping[str, Any], ...] = ()
    box_lat: tuple[float, ...] = ()
    box_lon: tuple[float, ...] = ()
    dropped: Mapping[str, Dropped] = dataclasses.field(default_factory=dict)

    @property
    def offsets(self) -> list[int]:
        return [d for d in self.days if d != 0]

    @property
    def has_box(self) -> bool:
        return bool(self.box_variables)

    @property
    def box_shape(self) -> tuple[int, int]:
        return len(self.box_lat), len(self.box_lon)

    def temporal_channels(self, offset: int, dynamic: int) -> slice:
        """The ``temporal`` array's channels of day ``offset`` (``dynamic`` variables per day)."""
        k = self.offsets.index(offset)
        return slice(k * dynamic, (k + 1) * dynamic)

    def box_channels_of(self, offset: int) -> slice:
        """The ``context`` array's channels of day ``offset``."""
        k, c = list(self.days).index(offset), len(self.box_variables)
        return slice(k * c, (k + 1) * c)

    def to_json(self) -> dict[str, Any]:
        return {"days": list(self.days), "neighbours": self.neighbours,
                "box": None if not self.has_box else {
                    "variables": list(self.box_variables), "channels": [dict(c) for c in self.box_channels],
                    "lat": list(self.box_lat), "lon": list(self.box_lon)},
                "dropped": [dataclasses.asdict(d) for d in self.dropped.values()]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ContextInfo | None:
        if data is None:
            return None
        box = data.get("box") or {}
        dropped = {str(d["date"]): Dropped(date=str(d["date"]), offset=int(d["offset"]),
                                           missing=str(d["missing"]), why=str(d["why"]))
                   for d in data.get("dropped", [])}
        return cls(days=tuple(int(d) for d in data["days"]), neighbours=str(data["neighbours"]),
                   box_variables=tuple(str(v) for v in box.get("variables", [])),
                   box_channels=tuple(dict(c) for c in box.get("channels", [])),
                   box_lat=tuple(float(v) for v in box.get("lat", [])),
                   box_lon=tuple(float(v) for v in box.get("lon", [])), dropped=dropped)

    def check_offsets(self, *, temporal: Sequence[int], spatial: Sequence[int], where: str) -> None:
        """A job's selection must be days this dataset holds: one-line errors otherwise."""
        for offset in temporal:
            if offset not in self.offsets:
                raise HpcdiffError(f"{where}: context.temporal offset {offset:+d} is not among the dataset's "
                                   f"neighbouring days {self.offsets} (recipe context.days)")
        if spatial and not self.has_box:
            raise HpcdiffError(f"{where}: context.spatial needs a dataset with a context box (recipe "
                               "context.box); this one has none")
        for offset in spatial:
            if offset not in self.days:
                raise HpcdiffError(f"{where}: context.spatial offset {offset:+d} is not among the dataset's "
                                   f"days {list(self.days)} (recipe context.days)")


def require_context(info: ContextInfo | None, *, temporal: Sequence[int], spatial: Sequence[int],
                    where: str) -> ContextInfo:
    """The dataset's context, which must hold the days a job reads (one-line errors otherwise): the one
    check the run spec and the sample layout both make."""
    if info is None:
        raise HpcdiffError(f"{where}: the job reads context, but the dataset holds none (preprocess it with "
                           "a recipe context: section)")
    info.check_offsets(temporal=temporal, spatial=spatial, where=where)
    return info
