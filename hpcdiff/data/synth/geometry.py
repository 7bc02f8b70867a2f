"""The world's geometry and its folder: the target Lambert grid over Denmark, the ERA5 grid around it,
the statics (the real land-sea mask, a synthetic orography), and ``world.json``, which with
``static/static.nc`` describes a written world completely (:func:`load_world`)."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from hpcdiff.data.formats import open_inputs
from hpcdiff.data.lambert import LambertConformal, ProjectedGrid, centred_grid
from hpcdiff.data.regrid import BilinearPlan, plan_bilinear
from hpcdiff.data.synth.fields import gaussian_field, padded_shape
from hpcdiff.data.synth.law import Law, OrographySpec, Preset, law_from_dict
from hpcdiff.data.synth.meta import ERA5_STEP_DEG, FORMAT_VERSION, TAG_OROGRAPHY
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import year_of

WORLD_JSON = "world.json"


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    """A synthetic world: its folder, law and grids. ``era5_lat`` ``[n_lat]`` (descending) and
    ``era5_lon`` ``[n_lon]`` (degrees east, ascending, within -180..180: a box across 0 deg E has
    negative western longitudes, as CDS writes an area request across Greenwich); target
    ``lat``/``lon`` ``[H, W]`` float64 and ``lsm`` (0/1) / ``orography`` (m) ``[H, W]`` exactly as
    stored in ``static.nc``; ``dates`` maps each year to its dates datetime64[D]."""

    root: Path
    preset: str
    seed: int
    law: Law
    era5_freq: str
    dates: dict[int, np.ndarray]
    flavours: dict[int, str]
    grid: ProjectedGrid
    era5_lat: np.ndarray
    era5_lon: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    lsm: np.ndarray
    orography: np.ndarray

    @property
    def years(self) -> list[int]:
        """The years written, ascending."""
        return sorted(self.dates)

    @property
    def shape(self) -> tuple[int, int]:
        """The target grid's ``(H, W)``."""
        return self.grid.shape

    @property
    def noise_shape(self) -> tuple[int, int]:
        """The padded periodic grid the fine noise is drawn on (then cut to ``[:H, :W]``)."""
        fine = self.law.fine
        corr = max(fine.t2m_noise.corr_km, fine.tp_noise.corr_km, fine.e_noise.corr_km)
        return padded_shape(self.shape, corr_km=corr, dx_km=self.grid.dx_m / 1000.0, pad_corr=fine.pad_corr)

    @functools.cached_property
    def plan(self) -> BilinearPlan:
        """Bilinear weights ERA5 grid → target grid (the same plan preprocessing builds)."""
        return plan_bilinear(self.era5_lat, self.era5_lon, self.lat, self.lon, where=str(self.root / "era5"))

    @functools.cached_property
    def upstream_plan(self) -> BilinearPlan:
        """Bilinear weights ERA5 grid → the target points moved upstream, (lat, lon - driver.shift_deg)."""
        shift = self.law.driver.shift_deg
        return plan_bilinear(self.era5_lat, self.era5_lon, self.lat, self.lon - shift,
                             where=f"{self.root / 'era5'} (driver {shift} deg upstream)")

    def holds(self, dates: np.ndarray) -> np.ndarray:
        """Whether each of ``dates`` ``[n]`` datetime64[D] is a date of the world: ``[n]`` bool."""
        return np.array([y in self.dates and bool(np.isin(d, self.dates[y]))
                         for d, y in zip(dates, year_of(dates).tolist(), strict=True)], dtype=bool)

    def era5_path(self, year: int) -> Path:
        """The ERA5 file of ``year``."""
        return self.root / "era5" / f"era5_{year}.nc"

    def danra_path(self, year: int) -> Path:
        """The target file of ``year``."""
        return self.root / "danra" / f"danra_{year}.nc"

    @property
    def static_path(self) -> Path:
        """The statics file (``lsm``, ``orography``, lat/lon, grid mapping)."""
        return self.root / "static" / "static.nc"


def box_margins(margin_deg: float | Sequence[float]) -> tuple[float, float, float, float]:
    """``(west, east, south, north)`` margins (degrees) of ``margin_deg``: one number for every side, or
    the four; a one-line error otherwise (or for a negative margin)."""
    sides = (margin_deg,) * 4 if np.isscalar(margin_deg) else tuple(margin_deg)
    if len(sides) != 4 or any(float(m) < 0 for m in sides):
        raise HpcdiffError(f"margin_deg must be one number or (west, east, south, north) >= 0 degrees, "
                           f"got {margin_deg!r}")
    west, east, south, north = (float(m) for m in sides)
    return west, east, south, north


def era5_axes(lat: np.ndarray, lon: np.ndarray, *,
              margin_deg: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A 0.25 deg grid covering the points ``lat``/``lon`` (degrees) with ``margin_deg`` degrees on each
    side (one number, or ``(west, east, south, north)``): latitudes ``[n_lat]`` descending (north to
    south, as CDS), longitudes ``[n_lon]`` ascending."""
    q = 1.0 / ERA5_STEP_DEG
    m_west, m_east, m_south, m_north = box_margins(margin_deg)
    south, north = np.floor((lat.min() - m_south) * q), np.ceil((lat.max() + m_north) * q)
    west, east = np.floor((lon.min() - m_west) * q), np.ceil((lon.max() + m_east) * q)
    assert west > -180 * q and east < 180 * q, "the ERA5 box must not straddle 180 deg E"
    return np.arange(north, south - 1, -1) / q, np.arange(west, east + 1) / q


def land_sea_mask(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The real land-sea mask (1 km, ``global_land_mask``) at the points ``lat``/``lon`` ``[H, W]``:
    0/1 float32. The package costs seconds and ~1 GB to import, hence the import here."""
    from global_land_mask import globe

    return globe.is_land(lat, lon).astype(np.float32)


def synthetic_orography(lsm: np.ndarray, *, spec: OrographySpec, dx_km: float, seed: int) -> np.ndarray:
    """Orography ``[H, W]`` float32 (m): 0 at sea; on land it rises over ``spec.coast_km`` from the
    coast to ``spec.max_m`` times a smooth positive random relief."""
    land = lsm > 0.5
    inland_km = ndimage.distance_transform_edt(land) * dx_km if (~land).any() else np.full(lsm.shape, 1e3)
    rng = np.random.default_rng((seed, TAG_OROGRAPHY))
    shape = padded_shape(lsm.shape, corr_km=spec.relief.corr_km, dx_km=dx_km, pad_corr=5.0)
    relief = gaussian_field(rng, shape, spec=spec.relief, dx_km=dx_km)[: lsm.shape[0], : lsm.shape[1]]
    height = spec.max_m * (1 - np.exp(-inland_km / spec.coast_km)) * np.clip(0.8 + relief, 0.05, 1.2)
    return np.where(land, height, 0.0).astype(np.float32)


def check_upstream(law: Law, lon: np.ndarray, era5_lon: np.ndarray) -> None:
    """A one-line error unless the driver's upstream points ``lon - shift_deg`` (degrees, any shape) lie
    inside the ERA5 box ``era5_lon`` ``[n_lon]`` (ascending); nothing to check without a driver."""
    driver = law.driver
    if not driver.active:
        return
    lo, hi = float(lon.min() - driver.shift_deg), float(lon.max() - driver.shift_deg)
    if lo < era5_lon[0] or hi > era5_lon[-1]:
        raise HpcdiffError(f"the driver's upstream points (the target's longitudes - shift_deg "
                           f"{driver.shift_deg}: {lo:.2f}..{hi:.2f} E) leave the ERA5 box's longitudes "
                           f"{era5_lon[0]:.2f}..{era5_lon[-1]:.2f} E; widen margin_deg "
                           "(west, east, south, north)")


def build_world(root: Path, preset: Preset, *, seed: int, law: Law | None = None) -> World:
    """The in-memory world of ``preset`` (grids, real land-sea mask, synthetic orography) at ``root``;
    ``law`` defaults to the preset's, else to :class:`Law`'s defaults. A one-line error when the
    driver's upstream points leave the ERA5 box."""
    law = law if law is not None else preset.law if preset.law is not None else Law()
    grid = centred_grid(preset.projection, centre_lat=preset.centre[0], centre_lon=preset.centre[1],
                        shape=preset.shape, dx_m=preset.dx_m)
    lat, lon = grid.latlon()
    era5_lat, era5_lon = era5_axes(lat, lon, margin_deg=preset.margin_deg)
    check_upstream(law, lon, era5_lon)
    lsm = land_sea_mask(lat, lon)
    orography = synthetic_orography(lsm, spec=law.orography, dx_km=preset.dx_m / 1000, seed=seed)
    return World(root=Path(root), preset=preset.name, seed=seed, law=law, era5_freq=preset.era5_freq,
                 dates={y: preset.dates(y) for y in preset.years},
                 flavours={y: preset.flavour(y) for y in preset.years}, grid=grid,
                 era5_lat=era5_lat, era5_lon=era5_lon, lat=lat, lon=lon,
                 lsm=lsm.astype(np.float64), orography=orography.astype(np.float64))


def world_json(world: World) -> dict:
    """The content of ``world.json`` (everything but the statics, which are in ``static.nc``)."""
    g = world.grid
    return {
        "format_version": FORMAT_VERSION, "preset": world.preset, "seed": world.seed,
        "years": world.years, "era5_freq": world.era5_freq,
        "era5_flavours": {str(y): world.flavours[y] for y in world.years},
        "dates": {str(y): [str(d[0]), str(d[-1])] for y, d in sorted(world.dates.items())},
        "law": dataclasses.asdict(world.law),
        "target_grid": {"grid_mapping": g.projection.cf_attributes(), "shape": list(g.shape),
                        "dx_m": g.dx_m, "x0_m": float(g.x[0]), "y0_m": float(g.y[0])},
        "era5_grid": {"lat_north": float(world.era5_lat[0]), "lat_south": float(world.era5_lat[-1]),
                      "lon_west": float(world.era5_lon[0]), "lon_east": float(world.era5_lon[-1]),
                      "step_deg": ERA5_STEP_DEG},
    }


def read_world_json(root: Path) -> dict:
    """The content of ``root/world.json``; a one-line error if it is missing, unreadable or of another
    format version."""
    path = Path(root) / WORLD_JSON
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HpcdiffError(f"{path}: cannot read the synthetic world ({err})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise HpcdiffError(f"{path}: format_version {version!r}, expected {FORMAT_VERSION}")
    return meta


def is_world(path: Path) -> bool:
    """Whether the folder ``path`` holds a synthetic world (of any format version): a ``world.json``
    that :func:`world_json` wrote."""
    try:
        meta = json.loads((Path(path) / WORLD_JSON).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and {"format_version", "preset", "seed", "law"} <= set(meta)


def _target_grid(meta: dict) -> ProjectedGrid:
    """The target grid of ``world.json``'s ``target_grid``."""
    height, width = meta["shape"]
    return ProjectedGrid(projection=LambertConformal.from_cf(meta["grid_mapping"]),
                         x=meta["x0_m"] + np.arange(width) * meta["dx_m"],
                         y=meta["y0_m"] + np.arange(height) * meta["dx_m"])


def _era5_axes(meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes ``[n_lat]`` (descending) and longitudes ``[n_lon]`` of ``world.json``'s ``era5_grid``."""
    q = 1.0 / meta["step_deg"]
    return (np.arange(round(meta["lat_north"] * q), round(meta["lat_south"] * q) - 1, -1) / q,
            np.arange(round(meta["lon_west"] * q), round(meta["lon_east"] * q) + 1) / q)


def load_world(root: Path) -> World:
    """Read ``root/world.json`` and ``root/static/static.nc``."""
    root = Path(root)
    meta = read_world_json(root)
    era5_lat, era5_lon = _era5_axes(meta["era5_grid"])
    dates = {int(y): np.arange(np.datetime64(a, "D"), np.datetime64(b, "D") + 1)
             for y, (a, b) in meta["dates"].items()}
    (ds,) = open_inputs(root / "static" / "static.nc")
    with ds:
        static = {k: np.asarray(ds[k].values, np.float64) for k in ("lat", "lon", "lsm", "orography")}
    return World(root=root, preset=meta["preset"], seed=int(meta["seed"]), law=law_from_dict(meta["law"]),
                 era5_freq=meta["era5_freq"], dates=dates,
                 flavours={int(y): f for y, f in meta["era5_flavours"].items()},
                 grid=_target_grid(meta["target_grid"]), era5_lat=era5_lat, era5_lon=era5_lon, **static)
