"""The generative law of the synthetic world, and the presets that say what to write.

The fine law p(fine | coarse, statics) (``B`` = bilinear interpolation, in degrees of lat/lon, of the
decoded daily ERA5 aggregates to the target lat/lon, as :mod:`hpcdiff.data.regrid` does;
``s = cos(2 pi (doy - peak) / 365.25)``; ``lsm`` 0/1 and ``oro`` (m) from ``static.nc``; ``eps_v``
independent Gaussian random fields of marginal std ``std_v`` and 2-D power spectrum
``(corr_km**-2 + kappa**2) ** (-beta / 2)``, kappa in rad km-1, drawn periodic on a padded grid and cut
to the target)::

    t2m = B(t2m) - lapse_rate * oro + land_sea_k * s * (lsm - 0.5) + driver.t2m_k * D + eps_t2m   [K]
    z   = sqrt(max(B(tp), 0) / c) - tp_offset + tp_orography * oro + driver.tp_latent * D + eps_tp  [-]
    tp  = c * max(z, 0) ** 2                                                                   [kg m-2]
    e   = B(e) + (1 - lsm) * (e_sea + e_sea_season * s) + eps_e                                [kg m-2]

The large-scale driver ``D`` (:class:`Driver`, dimensionless, unit variance) is the temperature anomaly
of the air that was ``shift_deg`` upstream (west) ``lag_days`` before: a pattern moving into the
window. Same-day conditions over the target window do not carry it; context does (the ERA5 box
upstream, the previous day). On date ``t`` at a target point (lat, lon), with ``d = t - lag_days``::

    D = (B_up(t2m)(d) - clim(d, lat)) / t2m_anomaly_k
    clim(d, lat) = t2m_mean_k + t2m_season_k * cos(2 pi (doy(d) - season_peak_doy) / 365.25)
                   + t2m_lat_k_per_deg * (lat - 56)

``B_up`` is the same bilinear interpolation of the decoded daily ERA5 t2m aggregate, at (lat,
lon - shift_deg); ``doy(d)`` is 1.0 at 00 UTC on 1 January (the stamp of a daily ERA5 step, as
:func:`hpcdiff.timeaxis.fractional_day_of_year` counts it). ``clim`` is the deterministic part of the
coarse t2m (:func:`hpcdiff.data.synth.weather.t2m_climate`), so with daily ERA5 ``D`` is the latent T
(unit variance) at the upstream point up to int16 packing; with hourly ERA5 it is the latent T's daily
mean, up to the daily mean of the seasonal and diurnal terms, which differs from ``clim`` by under
0.1 K (0.07 K on ``tiny``). Where the world holds no day ``d`` (the first ``lag_days`` of a block),
``D = 0``. The default driver has zero strength: the law without it, and no extra day read.

The coarse weather (:class:`CoarseWeather`) is a smooth latent Gaussian process mapped to physical
ERA5 fields (:mod:`hpcdiff.data.synth.weather`); the orography (:class:`OrographySpec`) is synthetic.

Presets (years 1991-2005; measured on 2 shared cores, ``hpcdiff synth OUT --preset P``, including
~3 s to import ``global_land_mask``): ``tiny`` 32 x 32, 6 days a year, hourly ERA5 (4 s, 8 MB);
``demo`` 64 x 64, 60 days a year, daily ERA5 (5 s, 49 MB; every day would take 13 s, 286 MB);
``bench`` 256 x 256, every day, daily ERA5 (66 s, 4.2 GB, 1.5 GB peak memory);
``danra`` DANRA's grid at its real size, 589 x 789 at 2.5 km on DANRA's projection (:data:`DANRA_PROJECTION`),
2 days a year (every year, so that ``preprocess/synthetic.yaml``'s split applies unchanged), daily ERA5
(10-12 s, 283 MiB, 1.2 GiB peak memory, of which 0.9 GiB is ``global_land_mask``'s global mask).
``context`` is ``demo`` with a driver only context carries (``Driver(t2m_k=2.0, tp_latent=0.4,
shift_deg=2.0, lag_days=1)``) and an ERA5 box reaching 6 deg west (margins west 6, east, south, north 2
deg: 53.0-58.75 N, 3.0-14.0 E, 24 x 45 cells, against demo's 16 x 21; the upstream points lie 4 deg
inside its western edge): 15 s, 57 MB, 1.1 GB peak memory, measured when ``demo`` took 12-14 s (the
5 s above are from a quieter machine). ``D`` has standard deviation 1.03 over its dates (0 on the
first day of each block).
The other presets keep the projection the target grid has always had (:class:`LambertConformal`'s
defaults: central meridian 8 E, radius 6 371 229 m).

The ``danra`` grid is centred at the latitude of origin, 56.7 N, and at 10.5 E (the longitude the other
presets centre Denmark on): it spans 47.8-64.1 N and 9.7 W-27.2 E (corners 47.8 N 0.3 W, 50.9 N 26.5 E,
59.8 N 9.7 W, 64.1 N 27.2 E), so its ERA5 box crosses 0 deg E; Denmark lies in rows 194-338 and columns
332-484, at least 194 cells (485 km) from every edge.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hpcdiff.data.lambert import LambertConformal
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import dates_of_year

# DANRA's grid mapping: spherical Lambert conformal conic, tangent at 56.7 N, central meridian 25 E,
# earth radius 6 367 470 m
DANRA_PROJECTION = LambertConformal(standard_parallels=(56.7, 56.7), central_meridian=25.0, origin_lat=56.7,
                                    earth_radius_m=6_367_470.0)


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
class Driver:
    """The large-scale driver ``D`` (see the module docstring): the t2m anomaly, in units of
    ``CoarseWeather.t2m_anomaly_k``, of the ERA5 air ``shift_deg`` degrees of longitude upstream (west;
    negative: east) ``lag_days`` days before. It adds ``t2m_k * D`` (K) to the fine t2m and
    ``tp_latent * D`` to the latent ``z`` of tp."""

    t2m_k: float = 0.0
    tp_latent: float = 0.0
    shift_deg: float = 2.0
    lag_days: int = 1

    def __post_init__(self) -> None:
        if int(self.lag_days) != self.lag_days or self.lag_days < 0:
            raise HpcdiffError(f"driver lag_days must be a whole number of days >= 0, got {self.lag_days!r}")

    @property
    def active(self) -> bool:
        """Whether the driver enters the law (a non-zero strength)."""
        return self.t2m_k != 0.0 or self.tp_latent != 0.0


@dataclasses.dataclass(frozen=True)
class Law:
    """The whole generative process: coarse weather, fine law given the coarse state, orography, and
    the large-scale driver (none by default)."""

    coarse: CoarseWeather = CoarseWeather()
    fine: FineLaw = FineLaw()
    orography: OrographySpec = OrographySpec()
    driver: Driver = Driver()


def law_from_dict(data: dict) -> Law:
    """The :class:`Law` of ``dataclasses.asdict(law)`` as stored in ``world.json`` (lists back to tuples);
    a ``world.json`` written before the driver existed has no ``driver``: the zero driver."""
    def value(raw: object) -> object:
        if isinstance(raw, dict):
            return NoiseSpec(**raw)
        return tuple(raw) if isinstance(raw, list) else raw

    def build(cls: type, values: dict) -> object:
        return cls(**{f.name: value(values[f.name]) for f in dataclasses.fields(cls) if f.name in values})

    return Law(coarse=build(CoarseWeather, data["coarse"]), fine=build(FineLaw, data["fine"]),
               orography=build(OrographySpec, data["orography"]),
               driver=build(Driver, data.get("driver", {})))


@dataclasses.dataclass(frozen=True)
class Preset:
    """What to write. ``days_per_year`` ``None``: every day; otherwise a block of that many consecutive
    days per year, whose start moves by 97 days from year to year so that the blocks visit every
    season. ``era5_flavour``: ``nc3``, ``nc4`` or ``alternate`` (even years nc3, odd years nc4). The
    target grid: ``shape`` ``(H, W)`` cells of ``dx_m`` on ``projection``, centred on ``centre`` (lat,
    lon in degrees; :func:`hpcdiff.data.lambert.centred_grid`). The ERA5 box covers the target's lat/lon
    extent plus ``margin_deg`` degrees: one number on every side, or ``(west, east, south, north)``.
    ``law``: the world's :class:`Law` (``None``: ``Law()``)."""

    name: str
    shape: tuple[int, int]
    years: tuple[int, ...] = tuple(range(1991, 2006))
    days_per_year: int | None = None
    era5_freq: str = "1D"
    era5_flavour: str = "alternate"
    dx_m: float = 2500.0
    centre: tuple[float, float] = (56.0, 10.5)  # lat, lon (degrees)
    margin_deg: float | tuple[float, float, float, float] = 1.0
    projection: LambertConformal = LambertConformal()
    law: Law | None = None

    def dates(self, year: int) -> np.ndarray:
        """The dates ``[n]`` datetime64[D] written for ``year``."""
        every = dates_of_year(year)
        if self.days_per_year is None:
            return every
        start = ((year - self.years[0]) * 97) % (every.size - self.days_per_year + 1)
        return every[start:start + self.days_per_year]

    def flavour(self, year: int) -> str:
        """The ERA5 file layout of ``year``: ``nc3`` or ``nc4``."""
        if self.era5_flavour == "alternate":
            return "nc3" if year % 2 == 0 else "nc4"
        return self.era5_flavour


PRESETS = {
    "tiny": Preset("tiny", shape=(32, 32), days_per_year=6, era5_freq="1h"),
    "demo": Preset("demo", shape=(64, 64), days_per_year=60, era5_freq="1D"),
    "bench": Preset("bench", shape=(256, 256), era5_freq="1D"),
    # DANRA's grid: its projection and size, centred at the latitude of origin and Denmark's longitude
    "danra": Preset("danra", shape=(589, 789), days_per_year=2, era5_freq="1D", centre=(56.7, 10.5),
                    projection=DANRA_PROJECTION),
    # demo with a driver only context carries: the ERA5 box reaches 6 deg west, upstream of the shift
    "context": Preset("context", shape=(64, 64), days_per_year=60, era5_freq="1D",
                      margin_deg=(6.0, 2.0, 2.0, 2.0),
                      law=Law(driver=Driver(t2m_k=2.0, tp_latent=0.4, shift_deg=2.0, lag_days=1))),
}


def get_preset(name: str) -> Preset:
    """The preset ``name``; a one-line error naming the valid ones otherwise."""
    if name not in PRESETS:
        raise HpcdiffError(f"unknown synthetic preset {name!r} (valid: {', '.join(PRESETS)})")
    return PRESETS[name]

