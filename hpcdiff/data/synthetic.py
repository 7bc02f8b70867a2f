"""The synthetic world: ERA5-like coarse NetCDF, DANRA-like 2.5 km targets and statics over Denmark,
drawn from a generative law whose conditional p(fine | coarse, statics) is known exactly.

Public API
----------
- :func:`write_world` ``(out, *, preset, seed, progress) -> Path``: ``hpcdiff synth``.
- :func:`load_world` ``(root) -> World``: the law, grids and statics of a written world.
- :func:`coarse_daily` ``(world, dates)``: ERA5 daily aggregates ``[T, n_lat, n_lon]`` decoded *from
  the files* (states: mean of the 24 hourly values 00..23 UTC; tp, e: daily sum in kg m-2).
- :func:`conditional_params` / :func:`conditional_mean` ``(world, dates)``: the law's parameters and
  the exact conditional mean ``[T, H, W]`` (physical units).
- :func:`oracle_ensemble` ``(world, dates, *, members, seed)``: draws from the exact law,
  ``(time, member, y, x)``; member ``m`` of date ``d`` uses the generator seeded ``(seed, 3, day, m)``
  (``day`` = days since 1900-01-01), so it does not depend on batching.
- :func:`bilinear_baseline` ``(world, dates)``: bilinear interpolation of the ERA5 daily aggregates.
- :func:`era5_fields` ``(world, year)``: the ERA5 values as intended before packing (for tests).
- :func:`gaussian_field` / :func:`noise_psd` / :func:`noise_covariance`: the small-scale noise, its
  spectrum and its exact covariance.

Folder (``world.json``, ``era5/era5_<YYYY>.nc``, ``danra/danra_<YYYY>.nc``, ``static/static.nc``):
ERA5 of even years is legacy CDS NetCDF3 (int16 packed, ``time`` in hours since 1900, longitudes
0..360), of odd years new CDS NetCDF4 (float32, ``valid_time`` in seconds since 1970, longitudes
-180..180, extra ``number`` and ``expver``); latitude descending in both. ``e`` is in
``m of water equivalent`` (the CDS spelling), negative for evaporation.

The law (``B`` = bilinear interpolation, in degrees of lat/lon, of the decoded daily ERA5 aggregates
to the target lat/lon, as :mod:`hpcdiff.data.regrid` does; ``s = cos(2 pi (doy - peak) / 365.25)``;
``lsm`` 0/1 and ``oro`` (m) from ``static.nc``; ``eps_v`` independent Gaussian random fields of
marginal std ``std_v`` and 2-D power spectrum ``(corr_km**-2 + kappa**2) ** (-beta / 2)``, kappa in
rad km-1, drawn periodic on a padded grid and cut to the target)::

    t2m = B(t2m) - lapse_rate * oro + land_sea_k * s * (lsm - 0.5) + eps_t2m                   [K]
    z   = sqrt(max(B(tp), 0) / c) - tp_offset + tp_orography * oro + eps_tp                     [-]
    tp  = c * max(z, 0) ** 2                                                                   [kg m-2]
    e   = B(e) + (1 - lsm) * (e_sea + e_sea_season * s) + eps_e                                [kg m-2]

The conditional mean of tp is exact: ``c ((a^2 + sd^2) Phi(a/sd) + a sd phi(a/sd))`` with ``a`` the
mean of ``z`` (its median is ``c max(a, 0)^2``, P(tp = 0) is ``Phi(-a/sd)``). One draw takes a
generator and draws the three noise fields in the order t2m, tp, e, each on ``World.noise_shape``, cut
to ``[:H, :W]``. The truth in the danra files is the draw seeded ``(world seed, 2, day)``; it is computed
from the ERA5 file as written (after int16 packing for nc3), so anyone reading the files can
reproduce the law. The statics are deterministic given the seed: the real land-sea mask at the target
points and a synthetic orography (0 at sea, up to 300 m inland).

Presets (years 1991-2005; measured on 2 shared cores, ``hpcdiff synth OUT --preset P``, including
~3 s to import ``global_land_mask``): ``tiny`` 32 x 32, 6 days a year, hourly ERA5 (4 s, 8 MB);
``demo`` 64 x 64, 60 days a year, daily ERA5 (5 s, 49 MB; every day would take 13 s, 286 MB);
``bench`` 256 x 256, every day, daily ERA5 (66 s, 4.2 GB, 1.5 GB peak memory).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path

import netCDF4
import numpy as np
import scipy.fft
import scipy.special
import xarray as xr
from scipy import ndimage
from tqdm import tqdm

from hpcdiff.data.lambert import LambertConformal, ProjectedGrid, centred_grid
from hpcdiff.data.regrid import BilinearPlan, apply_bilinear, plan_bilinear
from hpcdiff.data.sources import open_netcdf
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_dir

FORMAT_VERSION = 1
ERA5_STEP_DEG = 0.25
ERA5_VARS = ("t2m", "tp", "e", "msl", "u10", "v10")
ACCUMULATIONS = ("tp", "e")
TARGET_VARS = ("t2m", "tp", "e")
WATER_KG_M3 = 1000.0
EPOCH_1900 = np.datetime64("1900-01-01", "D")
DANRA_EPOCH = np.datetime64("1990-01-01", "D")
TAG_LATENT, TAG_TRUTH, TAG_ORACLE, TAG_OROGRAPHY = 1, 2, 3, 4  # seed streams: (seed, tag, ...)
PACK_HALF_RANGE = 32766  # int16 packing uses -32766..32766; -32767 is the fill value, as CDS does
FILL_INT16 = np.int16(-32767)
NC4_COORDINATES = "number valid_time latitude longitude expver"
OMEGA = 7.292e-5  # earth's rotation, rad s-1
AIR_DENSITY = 1.25  # kg m-3
METRES_PER_DEG = np.pi * 6_371_229.0 / 180.0

# units, long_name, standard_name (None: no CF name fits; e is negative for evaporation, which is the
# opposite sign of CF's lwe_thickness_of_water_evaporation_amount)
ERA5_META = {
    "t2m": ("K", "2 metre temperature", "air_temperature"),
    "tp": ("m", "Total precipitation", "lwe_thickness_of_precipitation_amount"),
    "e": ("m of water equivalent", "Evaporation", None),
    "msl": ("Pa", "Mean sea level pressure", "air_pressure_at_mean_sea_level"),
    "u10": ("m s**-1", "10 metre U wind component", "eastward_wind"),
    "v10": ("m s**-1", "10 metre V wind component", "northward_wind"),
}
TARGET_META = {
    "t2m": ("K", "2 metre temperature, daily mean", "air_temperature", "time: mean"),
    "tp": ("kg m-2", "total precipitation, daily sum", "precipitation_amount", "time: sum"),
    "e": ("kg m-2", "evaporation, daily sum (negative: evaporation, positive: condensation)", None,
          "time: sum"),
}


# ---------------------------------------------------------------------------------------------- law


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
    """A stationary Gaussian random field: marginal ``std`` (field units), 2-D power spectrum
    ``(corr_km**-2 + kappa**2) ** (-beta / 2)`` with ``kappa`` in rad km-1 (Matérn, smoothness
    ``(beta - 2) / 2``)."""

    std: float
    corr_km: float
    beta: float


@dataclasses.dataclass(frozen=True)
class CoarseWeather:
    """The ERA5-like weather on the 0.25 deg grid: latent unit-variance fields (T, P, W, E), smooth in
    space (spectrum in grid cells) and in time (Gaussian moving average of daily white fields),
    mapped to physical fields."""

    t2m_mean_k: float = 281.5
    t2m_season_k: float = 8.0
    t2m_lat_k_per_deg: float = -0.6
    t2m_anomaly_k: float = 3.0
    t2m_diurnal_k: float = 2.5
    t2m_diurnal_season_k: float = 1.5
    msl_mean_pa: float = 101_325.0
    msl_lat_pa_per_deg: float = -150.0
    msl_anomaly_pa: float = 1100.0
    wind_friction: float = 0.45  # 10 m wind = friction x geostrophic wind of msl
    tp_rate_kg_m2_day: float = 6.0
    tp_threshold: float = 0.2
    tp_power: float = 1.5
    tp_autumn: float = 0.3  # relative seasonal modulation peaking at day 300
    evap_kg_m2_day: float = 1.3
    evap_season_kg_m2_day: float = 1.1
    evap_anomaly_kg_m2_day: float = 0.3
    evap_diurnal: float = 1.6  # hourly evaporation x (1 + evap_diurnal sin), so nights condense
    latent_corr_cells: tuple[float, float, float, float] = (10.0, 30.0, 8.0, 10.0)  # T, P, W, E
    latent_beta: float = 6.0
    latent_corr_days: float = 1.2
    latent_window_days: int = 4


@dataclasses.dataclass(frozen=True)
class FineLaw:
    """p(fine | coarse, statics): see the module docstring for the formulas."""

    lapse_rate_k_per_m: float = 0.0065
    land_sea_k: float = 1.5
    season_peak_doy: float = 196.0
    t2m_noise: NoiseSpec = NoiseSpec(std=0.6, corr_km=15.0, beta=3.0)
    tp_scale_kg_m2: float = 1.0
    tp_offset: float = 0.5
    tp_orography_per_m: float = 0.002
    tp_noise: NoiseSpec = NoiseSpec(std=0.6, corr_km=10.0, beta=3.0)
    e_sea_kg_m2: float = -0.4
    e_sea_season_kg_m2: float = -0.3
    e_noise: NoiseSpec = NoiseSpec(std=0.15, corr_km=20.0, beta=4.0)
    pad_corr: float = 5.0  # noise is drawn periodic on the target grid padded by pad_corr x max corr_km


@dataclasses.dataclass(frozen=True)
class OrographySpec:
    """Synthetic orography (m): 0 at sea, rising inland over ``coast_km``, modulated by a smooth
    random field, at most ``1.2 * max_m``."""

    max_m: float = 250.0
    coast_km: float = 10.0
    relief: NoiseSpec = NoiseSpec(std=0.3, corr_km=30.0, beta=5.0)


@dataclasses.dataclass(frozen=True)
class Law:
    coarse: CoarseWeather = CoarseWeather()
    fine: FineLaw = FineLaw()
    orography: OrographySpec = OrographySpec()


def _law_from_dict(data: dict) -> Law:
    def value(raw: object) -> object:
        if isinstance(raw, dict):
            return NoiseSpec(**raw)
        return tuple(raw) if isinstance(raw, list) else raw

    def build(cls: type, values: dict) -> object:
        return cls(**{f.name: value(values[f.name]) for f in dataclasses.fields(cls) if f.name in values})

    return Law(coarse=build(CoarseWeather, data["coarse"]), fine=build(FineLaw, data["fine"]),
               orography=build(OrographySpec, data["orography"]))


# ------------------------------------------------------------------------------------------ presets


@dataclasses.dataclass(frozen=True)
class Preset:
    """What to write. ``days_per_year`` ``None``: every day; otherwise a block of that many consecutive
    days per year, whose start moves by 97 days from year to year so that the blocks visit every
    season. ``era5_flavour``: ``nc3``, ``nc4`` or ``alternate`` (even years nc3, odd years nc4)."""

    name: str
    shape: tuple[int, int]
    years: tuple[int, ...] = tuple(range(1991, 2006))
    days_per_year: int | None = None
    era5_freq: str = "1D"
    era5_flavour: str = "alternate"
    dx_m: float = 2500.0
    centre: tuple[float, float] = (56.0, 10.5)  # lat, lon (degrees)
    margin_deg: float = 1.0

    def dates(self, year: int) -> np.ndarray:
        """The dates ``[n]`` datetime64[D] written for ``year``."""
        first, last = np.datetime64(f"{year}-01-01", "D"), np.datetime64(f"{year + 1}-01-01", "D")
        every = np.arange(first, last, np.timedelta64(1, "D"))
        if self.days_per_year is None:
            return every
        start = ((year - self.years[0]) * 97) % (every.size - self.days_per_year + 1)
        return every[start:start + self.days_per_year]

    def flavour(self, year: int) -> str:
        if self.era5_flavour == "alternate":
            return "nc3" if year % 2 == 0 else "nc4"
        return self.era5_flavour


PRESETS = {
    "tiny": Preset("tiny", shape=(32, 32), days_per_year=6, era5_freq="1h"),
    "demo": Preset("demo", shape=(64, 64), days_per_year=60, era5_freq="1D"),
    "bench": Preset("bench", shape=(256, 256), era5_freq="1D"),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise HpcdiffError(f"unknown synthetic preset {name!r} (valid: {', '.join(PRESETS)})")
    return PRESETS[name]


# ------------------------------------------------------------------------------------------- world


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    """A synthetic world: its folder, law and grids. ``era5_lat`` ``[n_lat]`` (descending) and
    ``era5_lon`` ``[n_lon]`` (degrees east, in the 0..180 range both conventions share here); target
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
        return sorted(self.dates)

    @property
    def shape(self) -> tuple[int, int]:
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

    def era5_path(self, year: int) -> Path:
        return self.root / "era5" / f"era5_{year}.nc"

    def danra_path(self, year: int) -> Path:
        return self.root / "danra" / f"danra_{year}.nc"

    @property
    def static_path(self) -> Path:
        return self.root / "static" / "static.nc"


def era5_axes(lat: np.ndarray, lon: np.ndarray, *, margin_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """A 0.25 deg grid covering the points ``lat``/``lon`` (degrees) with ``margin_deg`` on each side:
    latitudes ``[n_lat]`` descending (north to south, as CDS), longitudes ``[n_lon]`` ascending."""
    q = 1.0 / ERA5_STEP_DEG
    south, north = np.floor((lat.min() - margin_deg) * q), np.ceil((lat.max() + margin_deg) * q)
    west, east = np.floor((lon.min() - margin_deg) * q), np.ceil((lon.max() + margin_deg) * q)
    assert west > 0 and east < 180 * q, "the ERA5 box must not straddle 0 or 180 deg E"
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


def build_world(root: Path, preset: Preset, *, seed: int, law: Law = Law()) -> World:
    """The in-memory world of ``preset`` (grids, real land-sea mask, synthetic orography) at ``root``."""
    projection = LambertConformal()
    grid = centred_grid(projection, centre_lat=preset.centre[0], centre_lon=preset.centre[1],
                        shape=preset.shape, dx_m=preset.dx_m)
    lat, lon = grid.latlon()
    era5_lat, era5_lon = era5_axes(lat, lon, margin_deg=preset.margin_deg)
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


def load_world(root: Path) -> World:
    """Read ``root/world.json`` and ``root/static/static.nc``."""
    root = Path(root)
    try:
        meta = json.loads((root / "world.json").read_text())
    except (OSError, ValueError) as err:
        raise HpcdiffError(f"{root / 'world.json'}: cannot read the synthetic world ({err})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise HpcdiffError(f"{root / 'world.json'}: format_version {meta.get('format_version')!r}, "
                           f"expected {FORMAT_VERSION}")
    tg, eg = meta["target_grid"], meta["era5_grid"]
    height, width = tg["shape"]
    grid = ProjectedGrid(projection=LambertConformal.from_cf(tg["grid_mapping"]),
                         x=tg["x0_m"] + np.arange(width) * tg["dx_m"],
                         y=tg["y0_m"] + np.arange(height) * tg["dx_m"])
    q = 1.0 / eg["step_deg"]
    dates = {int(y): np.arange(np.datetime64(a, "D"), np.datetime64(b, "D") + 1)
             for y, (a, b) in meta["dates"].items()}
    with open_netcdf(root / "static" / "static.nc") as ds:
        static = {k: np.asarray(ds[k][:], np.float64) for k in ("lat", "lon", "lsm", "orography")}
    return World(root=root, preset=meta["preset"], seed=int(meta["seed"]), law=_law_from_dict(meta["law"]),
                 era5_freq=meta["era5_freq"], dates=dates,
                 flavours={int(y): f for y, f in meta["era5_flavours"].items()}, grid=grid,
                 era5_lat=np.arange(round(eg["lat_north"] * q), round(eg["lat_south"] * q) - 1, -1) / q,
                 era5_lon=np.arange(round(eg["lon_west"] * q), round(eg["lon_east"] * q) + 1) / q, **static)


# ------------------------------------------------------------------------------------ random fields


def padded_shape(shape: tuple[int, int], *, corr_km: float, dx_km: float, pad_corr: float) -> tuple[int, int]:
    """``shape`` grown by ``pad_corr * corr_km`` on each axis (to an FFT-friendly size), so that the
    periodic field's wrap-around correlation is negligible inside the cut."""
    pad = int(np.ceil(pad_corr * corr_km / dx_km))
    return tuple(scipy.fft.next_fast_len(n + pad, real=True) for n in shape)


def noise_psd(kappa: np.ndarray, spec: NoiseSpec) -> np.ndarray:
    """Unnormalized 2-D power spectral density at angular wavenumbers ``kappa`` (rad km-1)."""
    return (spec.corr_km ** -2.0 + np.asarray(kappa, np.float64) ** 2) ** (-spec.beta / 2)


@functools.lru_cache(maxsize=32)
def _amplitude(shape: tuple[int, int], spec: NoiseSpec, dx_km: float) -> np.ndarray:
    """rFFT filter ``[H, W // 2 + 1]`` such that filtered unit white noise has variance ``spec.std**2``."""
    ky = 2 * np.pi * np.fft.fftfreq(shape[0], d=dx_km)
    kx = 2 * np.pi * np.fft.fftfreq(shape[1], d=dx_km)
    psd = noise_psd(np.hypot(ky[:, None], kx[None, :]), spec)
    amp = spec.std * np.sqrt(psd / psd.mean())  # pixel variance = mean of amp**2 over the full grid
    return amp[:, : shape[1] // 2 + 1]


def gaussian_field(rng: np.random.Generator, shape: tuple[int, int], *, spec: NoiseSpec,
                   dx_km: float) -> np.ndarray:
    """A periodic stationary Gaussian random field ``[H, W]`` float64 of marginal std ``spec.std``
    exactly and 2-D spectrum ``noise_psd`` (grid spacing ``dx_km``); consumes ``H * W`` normals."""
    white = rng.standard_normal(shape)
    return np.fft.irfft2(np.fft.rfft2(white) * _amplitude(tuple(shape), spec, float(dx_km)), s=shape)


def noise_covariance(shape: tuple[int, int], *, spec: NoiseSpec, dx_km: float) -> np.ndarray:
    """The exact covariance ``C[dy, dx]`` ``[H, W]`` of :func:`gaussian_field` of ``shape`` between pixels
    offset by ``(dy, dx)`` (periodic); ``C[0, 0] == spec.std**2``."""
    return np.fft.irfft2(_amplitude(tuple(shape), spec, float(dx_km)) ** 2, s=shape)


# ---------------------------------------------------------------------------------- coarse weather


def _day_numbers(dates: np.ndarray) -> np.ndarray:
    """Days since 1900-01-01 ``[n]`` int64 (non-negative seeds)."""
    return (np.asarray(dates, "datetime64[D]") - EPOCH_1900).astype(np.int64)


def latent_anchors(world: World, days: np.ndarray) -> np.ndarray:
    """Latent weather ``[n, 4, n_lat, n_lon]`` (T, P, W, E; unit variance) at 00 UTC of the days
    ``days`` (days since 1900): a Gaussian moving average in time of daily white smooth fields, each
    seeded ``(seed, 1, day)``, so any day is computable alone and years join smoothly."""
    cw = world.law.coarse
    half = cw.latent_window_days
    lags = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (lags / cw.latent_corr_days) ** 2)
    kernel /= np.sqrt((kernel**2).sum())
    shape = (world.era5_lat.size, world.era5_lon.size)
    specs = [NoiseSpec(std=1.0, corr_km=c, beta=cw.latent_beta) for c in cw.latent_corr_cells]
    bigs = [padded_shape(shape, corr_km=s.corr_km, dx_km=1.0, pad_corr=5.0) for s in specs]
    white: dict[int, np.ndarray] = {}
    for day in range(int(days.min()) - half, int(days.max()) + half + 1):
        rng = np.random.default_rng((world.seed, TAG_LATENT, day))
        white[day] = np.stack([gaussian_field(rng, big, spec=spec, dx_km=1.0)[: shape[0], : shape[1]]
                               for spec, big in zip(specs, bigs, strict=True)])
    weights = list(zip(kernel, lags, strict=True))
    return np.stack([sum(k * white[int(d) + int(j)] for k, j in weights) for d in days])


def _time_axis(world: World, year: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``times`` ``[T]`` datetime64[s] of ``year``'s ERA5 file, the day index ``[T]`` into the anchors
    of ``days`` = dates + the day after, and the fraction of the day ``[T]``."""
    dates = world.dates[year]
    if world.era5_freq == "1D":
        return dates.astype("datetime64[s]"), np.arange(dates.size), np.zeros(dates.size)
    hours = np.arange(24)
    times = (dates.astype("datetime64[s]")[:, None] + hours * np.timedelta64(3600, "s")).ravel()
    return times, np.repeat(np.arange(dates.size), 24), np.tile(hours / 24.0, dates.size)


def era5_fields(world: World, year: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ERA5 file of ``year`` as intended, before packing: ``times`` ``[T]`` datetime64[s] and
    fields ``[T, n_lat, n_lon]`` float64 in file units (K, m, m of water equivalent, Pa, m s-1); tp
    and e are accumulations over the time step (1 h or 1 day)."""
    times, index, frac = _time_axis(world, year)
    days = _day_numbers(world.dates[year])
    anchors = latent_anchors(world, np.append(days, days[-1] + 1))
    f = frac[:, None, None, None]
    latent = (1 - f) * anchors[index] + f * anchors[index + 1]  # [T, 4, n_lat, n_lon]
    return times, coarse_weather(world, times, latent)


def coarse_weather(world: World, times: np.ndarray, latent: np.ndarray) -> dict[str, np.ndarray]:
    """Physical ERA5 fields ``[T, n_lat, n_lon]`` from the latent state ``[T, 4, n_lat, n_lon]`` at
    ``times`` ``[T]`` datetime64[s]. Hourly steps get a diurnal cycle; daily ones are daily values."""
    cw, hourly = world.law.coarse, world.era5_freq == "1h"
    day0 = times.astype("datetime64[Y]").astype("datetime64[s]")
    doy = (times - day0).astype(np.float64) / 86400.0 + 1.0
    hour = (times - times.astype("datetime64[D]")).astype(np.float64)[:, None, None] / 3600.0
    season = np.cos(2 * np.pi * (doy - world.law.fine.season_peak_doy) / 365.25)[:, None, None]
    lat = world.era5_lat[None, :, None]
    g_t, g_p, g_w, g_e = (latent[:, i] for i in range(4))
    diurnal = np.sin(2 * np.pi * (hour - 9) / 24) if hourly else 0.0
    t2m = (cw.t2m_mean_k + cw.t2m_season_k * season + cw.t2m_lat_k_per_deg * (lat - 56.0)
           + cw.t2m_anomaly_k * g_t + (cw.t2m_diurnal_k + cw.t2m_diurnal_season_k * season) * diurnal)
    msl = cw.msl_mean_pa + cw.msl_lat_pa_per_deg * (lat - 56.0) - cw.msl_anomaly_pa * g_p
    wet = (g_w - g_p) / np.sqrt(2.0)
    autumn = 1 + cw.tp_autumn * np.cos(2 * np.pi * (doy - 300.0) / 365.25)[:, None, None]
    rate_tp = cw.tp_rate_kg_m2_day * np.maximum(wet - cw.tp_threshold, 0.0) ** cw.tp_power * autumn
    rate_e = cw.evap_kg_m2_day + cw.evap_season_kg_m2_day * season + cw.evap_anomaly_kg_m2_day * g_e
    steps_per_day = 24.0 if hourly else 1.0
    shape_e = 1 + cw.evap_diurnal * np.sin(2 * np.pi * (hour - 6) / 24) if hourly else 1.0
    u10, v10 = geostrophic_wind(msl, lat=world.era5_lat, lon=world.era5_lon, friction=cw.wind_friction)
    return {"t2m": t2m, "tp": rate_tp / steps_per_day / WATER_KG_M3,
            "e": -rate_e * shape_e / steps_per_day / WATER_KG_M3, "msl": msl, "u10": u10, "v10": v10}


def geostrophic_wind(msl: np.ndarray, *, lat: np.ndarray, lon: np.ndarray,
                     friction: float) -> tuple[np.ndarray, np.ndarray]:
    """``friction`` x the geostrophic wind (m s-1) of ``msl`` ``[T, n_lat, n_lon]`` (Pa) on the
    regular grid ``lat`` ``[n_lat]`` / ``lon`` ``[n_lon]`` (degrees)."""
    coslat = np.cos(np.deg2rad(lat))[None, :, None]
    dp_dy = np.gradient(msl, axis=1) / ((lat[1] - lat[0]) * METRES_PER_DEG)
    dp_dx = np.gradient(msl, axis=2) / ((lon[1] - lon[0]) * METRES_PER_DEG * coslat)
    coriolis = 2 * OMEGA * np.sin(np.deg2rad(lat))[None, :, None]
    factor = friction / (AIR_DENSITY * coriolis)
    return -factor * dp_dy, factor * dp_dx


# --------------------------------------------------------------------------------------- ERA5 files


def pack_int16(values: np.ndarray, *, nonnegative: bool) -> tuple[np.ndarray, float, float]:
    """CDS-style int16 packing of ``values``: ``(packed, scale_factor, add_offset)``. Packed values
    span -32766..32766 (-32767 is the fill value). For non-negative variables the range starts at 0,
    and packed -32766 decodes to exactly 0.0 (``-n * s + fl(n * s) == 0``)."""
    lo = 0.0 if nonnegative else float(values.min())
    hi = float(values.max())
    scale = (hi - lo) / (2 * PACK_HALF_RANGE) if hi > lo else 1.0
    offset = lo + PACK_HALF_RANGE * scale
    packed = np.clip(np.round((values - offset) / scale), -PACK_HALF_RANGE, PACK_HALF_RANGE)
    return packed.astype(np.int16), scale, offset


def _set_attrs(var: netCDF4.Variable, attrs: dict) -> None:
    for key, value in attrs.items():
        if value is not None:
            var.setncattr(key, value)


def _var_attrs(name: str) -> dict:
    units, long_name, standard_name = ERA5_META[name]
    return {"units": units, "long_name": long_name, "standard_name": standard_name}


def write_era5_nc3(path: Path, world: World, times: np.ndarray, fields: dict[str, np.ndarray]) -> None:
    """Legacy CDS NetCDF3: int16 packed, ``time`` int32 hours since 1900, longitudes 0..360."""
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("longitude", world.era5_lon.size)
        ds.createDimension("latitude", world.era5_lat.size)
        ds.createDimension("time", times.size)
        lon = ds.createVariable("longitude", "f4", ("longitude",))
        _set_attrs(lon, {"units": "degrees_east", "long_name": "longitude"})
        lon[:] = world.era5_lon % 360.0
        lat = ds.createVariable("latitude", "f4", ("latitude",))
        _set_attrs(lat, {"units": "degrees_north", "long_name": "latitude"})
        lat[:] = world.era5_lat
        time = ds.createVariable("time", "i4", ("time",))
        _set_attrs(time, {"units": "hours since 1900-01-01 00:00:00.0", "long_name": "time",
                          "calendar": "gregorian"})
        time[:] = ((times - EPOCH_1900.astype("datetime64[s]")) // np.timedelta64(3600, "s")).astype(np.int32)
        for name in ERA5_VARS:
            packed, scale, offset = pack_int16(fields[name], nonnegative=name == "tp")
            var = ds.createVariable(name, "i2", ("time", "latitude", "longitude"), fill_value=FILL_INT16)
            var.set_auto_maskandscale(False)
            _set_attrs(var, {"scale_factor": np.float64(scale), "add_offset": np.float64(offset),
                             "missing_value": FILL_INT16, **_var_attrs(name)})
            var[:] = packed
        ds.setncatts({"Conventions": "CF-1.6",
                      "history": "hpcdiff synthetic world: ERA5-like, legacy CDS NetCDF3 layout"})


def write_era5_nc4(path: Path, world: World, times: np.ndarray, fields: dict[str, np.ndarray]) -> None:
    """New CDS NetCDF4: float32, ``valid_time`` int64 seconds since 1970, longitudes -180..180, plus
    the ``number`` and ``expver`` coordinates."""
    dims = ("valid_time", "latitude", "longitude")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        for dim, size in zip(dims, (times.size, world.era5_lat.size, world.era5_lon.size), strict=True):
            ds.createDimension(dim, size)
        number = ds.createVariable("number", "i8")
        _set_attrs(number, {"long_name": "ensemble member numerical id", "units": "1",
                            "standard_name": "realization"})
        number.assignValue(0)
        time = ds.createVariable("valid_time", "i8", ("valid_time",))
        _set_attrs(time, {"long_name": "time", "standard_name": "time", "units": "seconds since 1970-01-01",
                          "calendar": "proleptic_gregorian"})
        time[:] = times.astype("datetime64[s]").astype(np.int64)
        for name, values, units in (("latitude", world.era5_lat, "degrees_north"),
                                    ("longitude", (world.era5_lon + 180.0) % 360.0 - 180.0, "degrees_east")):
            coord = ds.createVariable(name, "f8", (name,))
            _set_attrs(coord, {"units": units, "standard_name": name, "long_name": name})
            coord[:] = values
        expver = ds.createVariable("expver", str, ("valid_time",))
        _set_attrs(expver, {"long_name": "model experiment version", "units": "1"})
        expver[:] = np.full(times.size, "0001", dtype=object)
        for name in ERA5_VARS:
            var = ds.createVariable(name, "f4", dims, zlib=True, complevel=1, shuffle=True,
                                    chunksizes=(1, world.era5_lat.size, world.era5_lon.size),
                                    fill_value=np.float32(np.nan))
            _set_attrs(var, {**_var_attrs(name), "coordinates": NC4_COORDINATES})
            var[:] = fields[name].astype(np.float32)
        ds.setncatts({"GRIB_centre": "ecmf", "Conventions": "CF-1.7",
                      "institution": "European Centre for Medium-Range Weather Forecasts",
                      "history": "hpcdiff synthetic world: ERA5-like, new CDS NetCDF4 layout"})


# ------------------------------------------------------------------------------------- reading back


def as_dates(dates: Sequence | np.ndarray) -> np.ndarray:
    """Dates ``[n]`` datetime64[D] from strings / datetime64 / datetimes."""
    return np.atleast_1d(np.asarray(dates, dtype="datetime64[D]"))


def _check_dates(world: World, dates: np.ndarray) -> None:
    for date in dates:
        year = int(date.astype("datetime64[Y]").astype(int) + 1970)
        if year not in world.dates or not np.isin(date, world.dates[year]):
            raise HpcdiffError(f"{world.root}: date {date} is not in the synthetic world")


def _read_era5_days(path: Path, dates: np.ndarray, *, steps: int) -> dict[str, np.ndarray]:
    """Daily aggregates ``[n, n_lat, n_lon]`` of ``dates`` from one ERA5 file, exactly as the
    preprocessing computes them: decode, gather ``[n, steps, n_lat, n_lon]``, then mean (states) or
    sum x 1000 (accumulations, m → kg m-2), accumulating in float64."""
    with open_netcdf(path) as ds:
        tname = "time" if "time" in ds.variables else "valid_time"
        tvar = ds.variables[tname]
        stamps = netCDF4.num2date(tvar[:], tvar.units, getattr(tvar, "calendar", "standard"),
                                  only_use_cftime_datetimes=False, only_use_python_datetimes=True)
        times = np.array(stamps, dtype="datetime64[s]")
        first = np.searchsorted(times, dates.astype("datetime64[s]"))
        index = first[:, None] + np.arange(steps)[None, :]
        start, stop = int(index.min()), int(index.max()) + 1
        out = {}
        for name in ERA5_VARS:
            steps_ = np.ma.getdata(ds.variables[name][start:stop])[index - start]  # float32 (nc4) / 64 (nc3)
            out[name] = (steps_.sum(axis=1, dtype=np.float64) * WATER_KG_M3 if name in ACCUMULATIONS
                         else steps_.mean(axis=1, dtype=np.float64))
    assert np.all(times[first] == dates.astype("datetime64[s]")), (path, dates)
    return out


def coarse_daily(world: World, dates: Sequence | np.ndarray) -> dict[str, np.ndarray]:
    """ERA5 daily aggregates ``[T, n_lat, n_lon]`` float64 on the ERA5 grid (latitude descending) read
    from the files: t2m (K), msl (Pa), u10/v10 (m s-1) daily means; tp, e daily sums (kg m-2)."""
    dates = as_dates(dates)
    _check_dates(world, dates)
    years = dates.astype("datetime64[Y]").astype(int) + 1970
    steps = 24 if world.era5_freq == "1h" else 1
    out = {name: np.empty((dates.size, world.era5_lat.size, world.era5_lon.size)) for name in ERA5_VARS}
    for year in np.unique(years):
        sel = np.flatnonzero(years == year)
        block = _read_era5_days(world.era5_path(int(year)), dates[sel], steps=steps)
        for name in ERA5_VARS:
            out[name][sel] = block[name]
    return out


# ---------------------------------------------------------------------------------------- the law


def _regridded(world: World, dates: np.ndarray) -> dict[str, np.ndarray]:
    """Bilinear ``B(v)`` ``[T, H, W]`` of the target variables' ERA5 daily aggregates."""
    daily = coarse_daily(world, dates)
    return {name: apply_bilinear(world.plan, daily[name]) for name in TARGET_VARS}


def season(world: World, dates: np.ndarray) -> np.ndarray:
    """``cos(2 pi (doy - peak) / 365.25)`` ``[T]``, doy = 1 on 1 January."""
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.float64) + 1.0
    return np.cos(2 * np.pi * (doy - world.law.fine.season_peak_doy) / 365.25)


def conditional_params(world: World, dates: Sequence | np.ndarray) -> dict[str, np.ndarray]:
    """The law's location parameters ``[T, H, W]``: ``t2m`` and ``e`` means (K, kg m-2) and ``tp_latent``
    the mean ``a`` of the latent Gaussian ``z`` (tp = c max(z, 0)^2). The noise stds are
    ``world.law.fine.*_noise.std``."""
    dates = as_dates(dates)
    fine = world.law.fine
    coarse = _regridded(world, dates)
    s = season(world, dates)[:, None, None]
    lsm, oro = world.lsm[None], world.orography[None]
    t2m = coarse["t2m"] - fine.lapse_rate_k_per_m * oro + fine.land_sea_k * s * (lsm - 0.5)
    latent = (np.sqrt(np.maximum(coarse["tp"], 0.0) / fine.tp_scale_kg_m2) - fine.tp_offset
              + fine.tp_orography_per_m * oro)
    e = coarse["e"] + (1 - lsm) * (fine.e_sea_kg_m2 + fine.e_sea_season_kg_m2 * s)
    return {"t2m": t2m, "tp_latent": latent, "e": e}


def censored_square_mean(a: np.ndarray, sd: float) -> np.ndarray:
    """``E[max(z, 0)^2]`` for ``z ~ N(a, sd^2)``: ``(a^2 + sd^2) Phi(a/sd) + a sd phi(a/sd)``."""
    r = a / sd
    return (a**2 + sd**2) * scipy.special.ndtr(r) + a * sd * np.exp(-0.5 * r**2) / np.sqrt(2 * np.pi)


def conditional_mean(world: World, dates: Sequence | np.ndarray) -> dict[str, np.ndarray]:
    """The exact conditional mean ``[T, H, W]`` float64 of t2m (K), tp and e (kg m-2)."""
    params = conditional_params(world, dates)
    fine = world.law.fine
    tp = fine.tp_scale_kg_m2 * censored_square_mean(params["tp_latent"], fine.tp_noise.std)
    return {"t2m": params["t2m"], "tp": tp, "e": params["e"]}


def draw(world: World, params: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One draw ``[H, W]`` of t2m, tp, e from the law with location ``params`` (one date of
    :func:`conditional_params`); the noise fields are drawn in the order t2m, tp, e."""
    fine = world.law.fine
    height, width = world.shape
    dx_km = world.grid.dx_m / 1000.0
    eps = {name: gaussian_field(rng, world.noise_shape, spec=spec, dx_km=dx_km)[:height, :width]
           for name, spec in (("t2m", fine.t2m_noise), ("tp", fine.tp_noise), ("e", fine.e_noise))}
    z = params["tp_latent"] + eps["tp"]
    return {"t2m": params["t2m"] + eps["t2m"], "tp": fine.tp_scale_kg_m2 * np.maximum(z, 0.0) ** 2,
            "e": params["e"] + eps["e"]}


def truth(world: World, dates: Sequence | np.ndarray) -> dict[str, np.ndarray]:
    """The truth ``[T, H, W]`` float64 (what the danra files hold, before float32): the draw seeded
    ``(world.seed, 2, day)``."""
    dates = as_dates(dates)
    params = conditional_params(world, dates)
    out = {name: np.empty((dates.size, *world.shape)) for name in TARGET_VARS}
    for i, day in enumerate(_day_numbers(dates)):
        rng = np.random.default_rng((world.seed, TAG_TRUTH, int(day)))
        one = draw(world, {k: v[i] for k, v in params.items()}, rng)
        for name in TARGET_VARS:
            out[name][i] = one[name]
    return out


def _target_dataset(world: World, dates: np.ndarray, fields: dict[str, np.ndarray], *, dims: tuple[str, ...],
                    coords: dict | None = None) -> xr.Dataset:
    data_vars = {}
    for name in TARGET_VARS:
        units, long_name, standard_name, _ = TARGET_META[name]
        attrs = {"units": units, "long_name": long_name, "grid_mapping": "lambert_conformal_conic"}
        if standard_name:
            attrs["standard_name"] = standard_name
        data_vars[name] = (dims, fields[name].astype(np.float32), attrs)
    data_vars["lambert_conformal_conic"] = ((), np.int32(0), world.grid.projection.cf_attributes())
    return xr.Dataset(data_vars, coords={"time": dates.astype("datetime64[ns]"), **(coords or {}),
                                         "y": world.grid.y, "x": world.grid.x,
                                         "lat": (("y", "x"), world.lat), "lon": (("y", "x"), world.lon)})


def oracle_ensemble(world: World, dates: Sequence | np.ndarray, *, members: int, seed: int) -> xr.Dataset:
    """``members`` draws from the exact law: t2m (K), tp, e (kg m-2) ``(time, member, y, x)`` float32.
    Member ``m`` of date ``d`` uses the generator seeded ``(seed, 3, days since 1900 of d, m)``."""
    if members < 1 or seed < 0:
        raise HpcdiffError(f"oracle ensemble needs members >= 1 and seed >= 0 (got {members}, {seed})")
    dates = as_dates(dates)
    params = conditional_params(world, dates)
    out = {name: np.empty((dates.size, members, *world.shape), np.float32) for name in TARGET_VARS}
    for i, day in enumerate(_day_numbers(dates)):
        location = {k: v[i] for k, v in params.items()}
        for m in range(members):
            one = draw(world, location, np.random.default_rng((seed, TAG_ORACLE, int(day), m)))
            for name in TARGET_VARS:
                out[name][i, m] = one[name]
    ds = _target_dataset(world, dates, out, dims=("time", "member", "y", "x"),
                         coords={"member": np.arange(members)})
    ds.attrs = {"title": "oracle ensemble of the synthetic world", "seed": seed, "world_seed": world.seed}
    return ds


def bilinear_baseline(world: World, dates: Sequence | np.ndarray) -> xr.Dataset:
    """Bilinear interpolation of the ERA5 daily aggregates to the target grid: t2m (K), tp, e
    (kg m-2) ``(time, y, x)``: the evaluation baseline."""
    dates = as_dates(dates)
    ds = _target_dataset(world, dates, _regridded(world, dates), dims=("time", "y", "x"))
    ds.attrs = {"title": "bilinear interpolation of ERA5 daily aggregates"}
    return ds


# ----------------------------------------------------------------------------- target and static files


def _write_grid(ds: netCDF4.Dataset, world: World) -> None:
    """Dimensions ``y``, ``x``; coordinates x, y (m), 2-D lat, lon (degrees) and the grid mapping."""
    ds.createDimension("y", world.grid.y.size)
    ds.createDimension("x", world.grid.x.size)
    for name, axis in (("x", "X"), ("y", "Y")):
        coord = ds.createVariable(name, "f8", (name,))
        _set_attrs(coord, {"units": "m", "standard_name": f"projection_{name}_coordinate", "axis": axis})
        coord[:] = getattr(world.grid, name)
    for name, units, long_name in (("lat", "degrees_north", "latitude"),
                                   ("lon", "degrees_east", "longitude")):
        coord = ds.createVariable(name, "f8", ("y", "x"))
        _set_attrs(coord, {"units": units, "standard_name": long_name, "long_name": long_name})
        coord[:] = getattr(world, name)
    mapping = ds.createVariable("lambert_conformal_conic", "i4")
    attrs = world.grid.projection.cf_attributes()
    _set_attrs(mapping, {**attrs, "standard_parallel": np.asarray(attrs["standard_parallel"])})


def _data_var(ds: netCDF4.Dataset, name: str, dims: tuple[str, ...], attrs: dict,
              **kwargs: object) -> netCDF4.Variable:
    var = ds.createVariable(name, "f4", dims, **kwargs)
    _set_attrs(var, {**attrs, "grid_mapping": "lambert_conformal_conic", "coordinates": "lat lon"})
    return var


def write_danra(path: Path, world: World, dates: np.ndarray, *, block_days: int = 32) -> None:
    """The truth of ``dates`` as DANRA-like NetCDF4 ``(time, y, x)`` float32, daily values stamped
    00:00 (days since 1990-01-01); computed ``block_days`` at a time to bound the memory."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        _write_grid(ds, world)
        ds.createDimension("time", dates.size)
        time = ds.createVariable("time", "i4", ("time",))
        _set_attrs(time, {"units": "days since 1990-01-01 00:00:00", "calendar": "standard",
                          "standard_name": "time", "axis": "T"})
        time[:] = (dates - DANRA_EPOCH).astype(np.int32)
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


# ------------------------------------------------------------------------------------------ writing


def write_year(world: World, year: int) -> None:
    """ERA5 file of ``year``, then the truth, computed from what the ERA5 file decodes to."""
    times, fields = era5_fields(world, year)
    writer = write_era5_nc3 if world.flavours[year] == "nc3" else write_era5_nc4
    writer(world.era5_path(year), world, times, fields)
    write_danra(world.danra_path(year), world, world.dates[year])


def write_world(out: Path, *, preset: str = "tiny", seed: int = 0, progress: bool = True) -> Path:
    """Write the synthetic world of ``preset`` to the folder ``out`` (atomically: built next to it,
    renamed at the end, replacing an old one); the same ``preset`` and ``seed`` give identical bytes."""
    spec = get_preset(preset)
    if seed < 0:
        raise HpcdiffError(f"synthetic world seed must be >= 0 (got {seed})")
    out = Path(out)
    with atomic_dir(out) as tmp:
        world = build_world(tmp, spec, seed=seed)
        for sub in ("era5", "danra", "static"):
            (tmp / sub).mkdir()
        write_static(world.static_path, world)
        for year in tqdm(world.years, desc=f"synth {preset}", unit="year", disable=not progress):
            write_year(world, year)
        (tmp / "world.json").write_text(json.dumps(world_json(world), indent=1, sort_keys=True) + "\n")
    return out
