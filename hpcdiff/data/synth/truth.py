"""The exact conditional law p(fine | coarse, statics) evaluated on a written world: its parameters and
mean, the truth the target files hold, an oracle ensemble drawn from the law, and the bilinear baseline.

The conditional mean of tp is exact: ``c ((a^2 + sd^2) Phi(a/sd) + a sd phi(a/sd))`` with ``a`` the
mean of ``z`` (its median is ``c max(a, 0)^2``, P(tp = 0) is ``Phi(-a/sd)``). One draw takes a
generator and draws the three noise fields in the order t2m, tp, e, each on ``World.noise_shape``, cut
to ``[:H, :W]``. The truth is the draw seeded ``(world seed, TAG_TRUTH = 2, day)``, the oracle's member
``m`` the draw seeded ``(seed, TAG_ORACLE = 3, day, m)``, ``day`` counted from 1900-01-01: neither
depends on batching.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.special
import xarray as xr

from hpcdiff.data.regrid import apply_bilinear
from hpcdiff.data.synth.era5 import coarse_daily
from hpcdiff.data.synth.fields import gaussian_field
from hpcdiff.data.synth.geometry import World
from hpcdiff.data.synth.meta import SEED_EPOCH, TAG_ORACLE, TAG_TRUTH, TARGET_META, TARGET_VARS
from hpcdiff.data.synth.weather import seasonal_cycle, t2m_climate
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import as_dates, day_of_year, to_days


def _regridded(world: World, dates: np.ndarray) -> dict[str, np.ndarray]:
    """Bilinear ``B(v)`` ``[T, H, W]`` of the target variables' ERA5 daily aggregates."""
    daily = coarse_daily(world, dates)
    return {name: apply_bilinear(world.plan, daily[name]) for name in TARGET_VARS}


def season(world: World, dates: np.ndarray) -> np.ndarray:
    """``cos(2 pi (doy - peak) / 365.25)`` ``[T]``, doy = 1 on 1 January."""
    doy = day_of_year(to_days(dates)).astype(np.float64)
    return np.cos(2 * np.pi * (doy - world.law.fine.season_peak_doy) / 365.25)


def driver_field(world: World, dates: Sequence | np.ndarray) -> np.ndarray:
    """The large-scale driver ``D`` ``[T, H, W]`` (dimensionless) of ``dates`` ``[T]``: the daily ERA5 t2m
    of ``d = date - lag_days``, interpolated bilinearly at (lat, lon - shift_deg) of the target points,
    minus its climate at ``d`` and the target latitude, over ``t2m_anomaly_k``; 0 where the world holds
    no day ``d`` (see :mod:`hpcdiff.data.synth.law`)."""
    dates = as_dates(dates)
    law = world.law
    before = dates - np.timedelta64(int(law.driver.lag_days), "D")
    held = world.holds(before)
    out = np.zeros((dates.size, *world.shape))
    if held.any():
        days = before[held]
        upstream = apply_bilinear(world.upstream_plan, coarse_daily(world, days)["t2m"])
        cycle = seasonal_cycle(law, days.astype("datetime64[s]"))[:, None, None]
        climate = t2m_climate(law, season=cycle, lat=world.lat[None])
        out[held] = (upstream - climate) / law.coarse.t2m_anomaly_k
    return out


def conditional_params(world: World, dates: Sequence | np.ndarray) -> dict[str, np.ndarray]:
    """The law's location parameters ``[T, H, W]``: ``t2m`` and ``e`` means (K, kg m-2) and ``tp_latent``
    the mean ``a`` of the latent Gaussian ``z`` (tp = c max(z, 0)^2), the driver's terms included when it
    has a strength. The noise stds are ``world.law.fine.*_noise.std``."""
    dates = as_dates(dates)
    fine, driver = world.law.fine, world.law.driver
    coarse = _regridded(world, dates)
    s = season(world, dates)[:, None, None]
    lsm, oro = world.lsm[None], world.orography[None]
    t2m = coarse["t2m"] - fine.lapse_rate_k_per_m * oro + fine.land_sea_k * s * (lsm - 0.5)
    latent = (np.sqrt(np.maximum(coarse["tp"], 0.0) / fine.tp_scale_kg_m2) - fine.tp_offset
              + fine.tp_orography_per_m * oro)
    e = coarse["e"] + (1 - lsm) * (fine.e_sea_kg_m2 + fine.e_sea_season_kg_m2 * s)
    if driver.active:  # a world without a driver reads no extra day
        d = driver_field(world, dates)
        t2m = t2m + driver.t2m_k * d
        latent = latent + driver.tp_latent * d
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
    ``(world.seed, TAG_TRUTH, day)``."""
    dates = as_dates(dates)
    params = conditional_params(world, dates)
    out = {name: np.empty((dates.size, *world.shape)) for name in TARGET_VARS}
    for i, day in enumerate(to_days(dates, epoch=SEED_EPOCH)):
        rng = np.random.default_rng((world.seed, TAG_TRUTH, int(day)))
        one = draw(world, {k: v[i] for k, v in params.items()}, rng)
        for name in TARGET_VARS:
            out[name][i] = one[name]
    return out


def _target_dataset(world: World, dates: np.ndarray, fields: dict[str, np.ndarray], *, dims: tuple[str, ...],
                    coords: dict | None = None) -> xr.Dataset:
    """``fields`` (t2m, tp, e, physical units, dims ``dims``) as a CF dataset on the target grid, float32."""
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
    Member ``m`` of date ``d`` uses the generator seeded ``(seed, TAG_ORACLE, days since 1900 of d, m)``."""
    if members < 1 or seed < 0:
        raise HpcdiffError(f"oracle ensemble needs members >= 1 and seed >= 0 (got {members}, {seed})")
    dates = as_dates(dates)
    params = conditional_params(world, dates)
    out = {name: np.empty((dates.size, members, *world.shape), np.float32) for name in TARGET_VARS}
    for i, day in enumerate(to_days(dates, epoch=SEED_EPOCH)):
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

