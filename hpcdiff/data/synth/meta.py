"""Names, units and file-format constants of the synthetic world's files, and the seed-stream tags."""

from __future__ import annotations

import netCDF4
import numpy as np

FORMAT_VERSION = 1  # of world.json
ERA5_STEP_DEG = 0.25
ERA5_VARS = ("t2m", "tp", "e", "msl", "u10", "v10")
ACCUMULATIONS = ("tp", "e")
TARGET_VARS = ("t2m", "tp", "e")
SEED_EPOCH = np.datetime64("1900-01-01", "D")  # day numbers in seeds count from here: non-negative
NC3_EPOCH = np.datetime64("1900-01-01", "D")  # legacy CDS time: hours since 1900-01-01
DANRA_EPOCH = np.datetime64("1990-01-01", "D")  # target time: days since 1990-01-01
TAG_LATENT, TAG_TRUTH, TAG_ORACLE, TAG_OROGRAPHY = 1, 2, 3, 4  # seed streams: (seed, tag, ...)
PACK_HALF_RANGE = 32766  # int16 packing uses -32766..32766; -32767 is the fill value, as CDS does
FILL_INT16 = np.int16(-32767)
NC4_COORDINATES = "number valid_time latitude longitude expver"

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
# units, long_name, standard_name, cell_methods
TARGET_META = {
    "t2m": ("K", "2 metre temperature, daily mean", "air_temperature", "time: mean"),
    "tp": ("kg m-2", "total precipitation, daily sum", "precipitation_amount", "time: sum"),
    "e": ("kg m-2", "evaporation, daily sum (negative: evaporation, positive: condensation)", None,
          "time: sum"),
}


def set_attrs(var: netCDF4.Variable, attrs: dict) -> None:
    """Set the attributes ``attrs`` of ``var``, skipping ``None`` values."""
    for key, value in attrs.items():
        if value is not None:
            var.setncattr(key, value)


def era5_attrs(name: str) -> dict:
    """``units``, ``long_name`` and ``standard_name`` of the ERA5 variable ``name``, as CDS writes them."""
    units, long_name, standard_name = ERA5_META[name]
    return {"units": units, "long_name": long_name, "standard_name": standard_name}
