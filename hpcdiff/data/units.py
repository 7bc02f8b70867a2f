"""Units of input files, through pint with CF spellings (``cf_xarray``'s registry): ``m s**-1``,
``m s-1`` and ``m/s`` are one unit, ``meters``, ``metres`` and ``m`` another, and a file in ``mm`` or
``degC`` is converted rather than refused. Spellings that are not units (CDS's ``m of water
equivalent``) are mapped first.

Daily totals: an accumulation (a depth of water per step, or a mass per area) summed over the day, or
a flux (per second) averaged over the day times its length, is expressed in ``kg m-2``; a depth of
water becomes a mass per area through the density of water.
"""

from __future__ import annotations

import functools
import re

from hpcdiff.errors import HpcdiffError

WATER_KG_M3 = 1000.0  # density of liquid water: m of water equivalent -> kg m-2
DAILY_TOTAL_UNITS = "kg m-2"
SECONDS_PER_DAY = 86400.0
NOT_UNITS = {"m of water equivalent": "m", "m water equivalent": "m", "metres of water equivalent": "m"}


@functools.cache
def registry():
    """The CF-aware unit registry (imported on first use: pint costs ~0.3 s). cf_xarray redefines a few
    of pint's units on import and logs each at WARNING; that is its intent, not a problem of ours."""
    import logging

    pint_log = logging.getLogger("pint.util")
    level = pint_log.level
    pint_log.setLevel(logging.ERROR)
    try:
        from cf_xarray.units import units
    finally:
        pint_log.setLevel(level)
    return units


def parse(units: str, *, where: str):
    """The pint unit of a CF ``units`` string; a one-line error naming ``where`` if it is not one."""
    text = re.sub(r"\s+", " ", str(units)).strip()
    text = NOT_UNITS.get(text, text)
    try:
        return registry().Unit(text)
    except Exception as err:  # pint raises several unrelated types for bad strings
        raise HpcdiffError(f"{where}: {units!r} is not a unit ({type(err).__name__})") from None


def conversion(source: str, target: str, *, where: str) -> tuple[float, float]:
    """``(scale, offset)`` with ``value_in_target = value_in_source * scale + offset``; a one-line error
    naming ``where`` when the units measure different things."""
    ureg = registry()
    src, dst = parse(source, where=where), parse(target, where=where)
    try:
        zero = ureg.Quantity(0.0, src).to(dst).magnitude
        one = ureg.Quantity(1.0, src).to(dst).magnitude
    except Exception:
        raise HpcdiffError(f"{where}: units {source!r} cannot be converted to {target!r}") from None
    return float(one - zero), float(zero)


def same_units(a: str, b: str) -> bool:
    """Whether two spellings are the same unit (scale 1, offset 0)."""
    try:
        return conversion(a, b, where="units") == (1.0, 0.0)
    except HpcdiffError:
        return False


def daily_total_factor(units: str, kind: str, *, where: str) -> float:
    """Factor from the daily aggregate of a variable in ``units`` to a daily total in ``kg m-2``: the sum
    of an ``accumulation`` (``m`` of water, ``kg m-2``) or the mean of a ``flux`` (``kg m-2 s-1``,
    ``m s-1``) times the day's length."""
    ureg = registry()
    q = ureg.Quantity(1.0, parse(units, where=where))
    if kind == "flux":
        q = q * ureg.Quantity(SECONDS_PER_DAY, "s")
    if q.check("[length]"):
        q = q * ureg.Quantity(WATER_KG_M3, "kg m-3")
    try:
        return float(q.to(DAILY_TOTAL_UNITS).magnitude)
    except Exception:
        what = "a flux (per second)" if kind == "flux" else "an amount (m of water or kg m-2)"
        raise HpcdiffError(f"{where}: a variable of kind {kind} must be {what}; {units!r} is not") from None
