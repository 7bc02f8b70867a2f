"""The synthetic world: ERA5-like coarse NetCDF, DANRA-like 2.5 km targets and statics over Denmark,
drawn from a generative law whose conditional p(fine | coarse, statics) is known exactly.

Folder (``world.json``, ``era5/era5_<YYYY>.nc``, ``danra/danra_<YYYY>.nc``, ``static/static.nc``): ERA5
of even years in the legacy CDS NetCDF3 layout, of odd years in the new CDS NetCDF4 layout
(:mod:`~hpcdiff.data.synth.era5`); targets and statics on a Lambert conformal grid
(:mod:`~hpcdiff.data.synth.writers`). The truth in the target files is computed from the ERA5 files as
written (after int16 packing), so anyone reading the files can reproduce the law.

Modules, one concern each:

- :mod:`~hpcdiff.data.synth.meta`: variable names, units, file-format constants, seed-stream tags;
- :mod:`~hpcdiff.data.synth.law`: the law's parameters (and its formulas) and the presets;
- :mod:`~hpcdiff.data.synth.geometry`: grids, statics, :class:`World`, ``world.json``;
- :mod:`~hpcdiff.data.synth.fields`: Gaussian random fields of known spectrum and covariance;
- :mod:`~hpcdiff.data.synth.weather`: the coarse weather in ERA5 file units;
- :mod:`~hpcdiff.data.synth.era5`: ERA5 files, written and read back as daily aggregates;
- :mod:`~hpcdiff.data.synth.truth`: conditional law, truth, oracle ensemble, bilinear baseline;
- :mod:`~hpcdiff.data.synth.writers`: target and static files, :func:`write_world`.

Public API (what the rest of hpcdiff uses):

- :func:`write_world` ``(out, *, preset, seed, progress) -> Path``: ``hpcdiff synth``.
- :func:`load_world` ``(root) -> World``: the law, grids and statics of a written world.
- :func:`coarse_daily` ``(world, dates)``: ERA5 daily aggregates ``[T, n_lat, n_lon]`` read from the
  files by the preprocessing's reader (states: mean of the steps 00..23 UTC; tp, e: daily sum, kg m-2).
- :func:`conditional_params` / :func:`conditional_mean` ``(world, dates)``: the law's parameters and
  the exact conditional mean ``[T, H, W]`` (physical units).
- :func:`driver_field` ``(world, dates)``: the large-scale driver ``D`` ``[T, H, W]`` that only context
  (the ERA5 box upstream, the previous day) carries, whatever the law's strength (the law adds it only
  with a strength).
- :func:`truth` ``(world, dates)``: what the target files hold, ``[T, H, W]`` float64.
- :func:`oracle_ensemble` ``(world, dates, *, members, seed)``: draws from the exact law,
  ``(time, member, y, x)``, independent of batching.
- :func:`bilinear_baseline` ``(world, dates)``: bilinear interpolation of the ERA5 daily aggregates.
"""

from hpcdiff.data.synth.era5 import coarse_daily
from hpcdiff.data.synth.geometry import World, is_world, load_world
from hpcdiff.data.synth.law import PRESETS, Driver, Law, get_preset
from hpcdiff.data.synth.meta import ERA5_VARS, TARGET_VARS
from hpcdiff.data.synth.truth import (
    bilinear_baseline,
    conditional_mean,
    conditional_params,
    driver_field,
    oracle_ensemble,
    truth,
)
from hpcdiff.data.synth.writers import write_world

__all__ = [
    "ERA5_VARS",
    "PRESETS",
    "TARGET_VARS",
    "Driver",
    "Law",
    "World",
    "bilinear_baseline",
    "coarse_daily",
    "conditional_mean",
    "conditional_params",
    "driver_field",
    "get_preset",
    "is_world",
    "load_world",
    "oracle_ensemble",
    "truth",
    "write_world",
]
