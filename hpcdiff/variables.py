"""What each known target variable *is*: CF metadata and physical bounds, in one table.

Bounds are part of a variable's definition: a daily precipitation amount is never negative, so no
output of hpcdiff may hold a negative ``tp``. The preprocessing copies a target's bounds into the
manifest (:class:`hpcdiff.data.manifest.Channel`), decoding clamps to them
(:func:`hpcdiff.data.transforms.inverse_transform`), and ``merge`` / ``evaluate`` report any value
outside them. Evaporation (``e``) is signed (ERA5 convention: negative is evaporation), so it has none.
A variable missing from the table has no bounds and gets its name as ``long_name``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Variable:
    """CF attributes and the closed physical interval ``[lower, upper]`` (``None``: unbounded)."""

    standard_name: str | None
    long_name: str
    cell_methods: str | None = None
    comment: str | None = None
    lower: float | None = None
    upper: float | None = None

    def cf_attrs(self) -> dict[str, str]:
        """The non-empty CF attributes of a NetCDF variable."""
        attrs = {"standard_name": self.standard_name, "long_name": self.long_name,
                 "cell_methods": self.cell_methods, "comment": self.comment}
        return {k: v for k, v in attrs.items() if v is not None}


VARIABLES: dict[str, Variable] = {
    "t2m": Variable("air_temperature", "2 m air temperature, daily mean", "time: mean", lower=0.0),
    "tp": Variable("precipitation_amount", "total precipitation, daily sum", "time: sum", lower=0.0),
    "e": Variable("water_evapotranspiration_amount",
                  "evaporation, daily sum (negative values are evaporation)", "time: sum",
                  comment="ERA5/ECMWF sign convention: downward fluxes are positive, so evaporation is "
                          "negative and condensation (dew) positive, opposite to the upward-positive "
                          "convention of the standard name"),
}


def describe(name: str) -> Variable:
    """The table's entry of ``name``, or an unbounded one named after it."""
    return VARIABLES.get(name, Variable(None, name))


def bounds_of(name: str) -> tuple[float | None, float | None]:
    var = describe(name)
    return var.lower, var.upper


def count_outside(values: np.ndarray, bounds: tuple[float | None, float | None]) -> int:
    """How many finite ``values`` (any shape) lie outside ``bounds``."""
    lower, upper = bounds
    count = 0
    if lower is not None:
        count += int(np.count_nonzero(values < lower))
    if upper is not None:
        count += int(np.count_nonzero(values > upper))
    return count
