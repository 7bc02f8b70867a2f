"""The coarse weather on the ERA5 grid: four latent unit-variance Gaussian fields (T, P, W, E), smooth
in space and in time, mapped to the six ERA5 variables in file units. Any day is computable alone
(seeded ``(seed, TAG_LATENT, day)``, days since 1900-01-01), so years join smoothly and the files of
one year do not depend on which other years are written."""

from __future__ import annotations

import numpy as np

from hpcdiff.data.synth.fields import gaussian_field, padded_shape
from hpcdiff.data.synth.geometry import World
from hpcdiff.data.synth.law import Law, NoiseSpec
from hpcdiff.data.synth.meta import SEED_EPOCH, TAG_LATENT
from hpcdiff.data.units import WATER_KG_M3
from hpcdiff.timeaxis import fractional_day_of_year, to_days

OMEGA = 7.292e-5  # earth's rotation, rad s-1
AIR_DENSITY = 1.25  # kg m-3
METRES_PER_DEG = np.pi * 6_371_229.0 / 180.0


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


def _steps_of_year(world: World, year: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``times`` ``[T]`` datetime64[s] of ``year``'s ERA5 file, the day index ``[T]`` into the anchors
    of ``days`` = dates + the two days after, and the fraction of the day ``[T]``.

    Hourly files hold the steps 00..23 UTC of each date and, after a date whose next day is not in the
    world, that day's 00 UTC step: CDS stamps an hourly accumulation at the end of its hour, so a day's
    total needs it (in the next year's file when that year continues the dates)."""
    dates = world.dates[year]
    if world.era5_freq == "1D":
        return dates.astype("datetime64[s]"), np.arange(dates.size), np.zeros(dates.size)
    hours = np.arange(24)
    times = (dates.astype("datetime64[s]")[:, None] + hours * np.timedelta64(3600, "s")).ravel()
    index, frac = np.repeat(np.arange(dates.size), 24), np.tile(hours / 24.0, dates.size)
    after = dates[-1] + np.timedelta64(1, "D")
    if not np.isin(after, world.dates.get(year + 1, np.array([], "datetime64[D]"))):
        times = np.append(times, after.astype("datetime64[s]"))
        index, frac = np.append(index, dates.size), np.append(frac, 0.0)
    return times, index, frac


def era5_fields(world: World, year: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ERA5 file of ``year`` as intended, before packing: ``times`` ``[T]`` datetime64[s] and
    fields ``[T, n_lat, n_lon]`` float64 in file units (K, m, m of water equivalent, Pa, m s-1); tp
    and e are accumulations over the time step (1 h or 1 day)."""
    times, index, frac = _steps_of_year(world, year)
    days = to_days(world.dates[year], epoch=SEED_EPOCH)
    anchors = latent_anchors(world, np.append(days, [days[-1] + 1, days[-1] + 2]))
    f = frac[:, None, None, None]
    latent = (1 - f) * anchors[index] + f * anchors[index + 1]  # [T, 4, n_lat, n_lon]
    return times, coarse_weather(world, times, latent)


def seasonal_cycle(law: Law, times: np.ndarray) -> np.ndarray:
    """``cos(2 pi (doy - season_peak_doy) / 365.25)`` ``[T]`` at the instants ``times`` ``[T]``
    datetime64[s], ``doy`` as :func:`~hpcdiff.timeaxis.fractional_day_of_year` counts it (1.0 at 00 UTC on
    1 January: a daily step's stamp)."""
    doy = fractional_day_of_year(times)
    return np.cos(2 * np.pi * (doy - law.fine.season_peak_doy) / 365.25)


def t2m_climate(law: Law, *, season: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The deterministic part of the coarse t2m (K): ``t2m_mean_k + t2m_season_k * season +
    t2m_lat_k_per_deg * (lat - 56)``, ``season`` (:func:`seasonal_cycle`) and ``lat`` (degrees)
    broadcast against each other. The coarse t2m adds ``t2m_anomaly_k`` x the latent T (and, hourly,
    the diurnal cycle)."""
    cw = law.coarse
    return cw.t2m_mean_k + cw.t2m_season_k * season + cw.t2m_lat_k_per_deg * (lat - 56.0)


def coarse_weather(world: World, times: np.ndarray, latent: np.ndarray) -> dict[str, np.ndarray]:
    """Physical ERA5 fields ``[T, n_lat, n_lon]`` from the latent state ``[T, 4, n_lat, n_lon]`` at
    ``times`` ``[T]`` datetime64[s]. Hourly steps get a diurnal cycle; daily ones are daily values."""
    cw, hourly = world.law.coarse, world.era5_freq == "1h"
    doy = fractional_day_of_year(times)
    hour = (times - times.astype("datetime64[D]")).astype(np.float64)[:, None, None] / 3600.0
    season = seasonal_cycle(world.law, times)[:, None, None]
    lat = world.era5_lat[None, :, None]
    g_t, g_p, g_w, g_e = (latent[:, i] for i in range(4))
    diurnal = np.sin(2 * np.pi * (hour - 9) / 24) if hourly else 0.0
    t2m = (t2m_climate(world.law, season=season, lat=lat)
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

