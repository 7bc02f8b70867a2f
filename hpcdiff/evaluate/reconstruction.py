"""How well an autoencoder reconstructs fields, in physical units: an autoencoder run's validation metrics.

Per target variable ``v``, from reconstructions and truths ``[B, Ct, H, W]`` in physical units (K,
kg m-2) and each field's land mask:

- ``v_rmse``: root mean squared error over land pixels;
- ``v_psd_high_ratio``: power of the reconstructions over the truth's in the upper half of wavenumbers
  (at or above half the Nyquist wavenumber), over whole fields, as the evaluation reports it for samples
  (:func:`hpcdiff.evaluate.metrics.radial_psd`; spectra need the whole field). Below 1: too smooth;
- precipitation only (:data:`hpcdiff.evaluate.indices.PRECIPITATION`): ``v_q999_error``, the 99.9th
  percentile of the reconstructed land values minus the truth's (kg m-2), and ``v_dry_leakage``, the share
  of land pixels dry in the truth (below :data:`DRY_KG_M2`) that the reconstruction makes wet.

:class:`ReconstructionTally` adds batches on each rank and merges the ranks with sums only (a
``reduce`` such as an all-reduce): counts and sums add; the percentiles are exact whatever the number of
ranks, because each rank keeps its largest values, as many as the percentile can read of all ranks'
values together (:func:`top_needed`), and the ranks' lists are merged by a sum of tables in which each
rank fills its own row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from hpcdiff.evaluate.indices import PRECIPITATION
from hpcdiff.evaluate.metrics import high_power_ratio, radial_psd

DRY_KG_M2 = 0.1  # a pixel with less precipitation than this is dry
QUANTILE = 0.999
Reduce = Callable[[np.ndarray], np.ndarray]  # the sum of a float64 array over ranks


def top_needed(count: int, q: float) -> int:
    """How many of the largest of ``count`` values the ``q``-quantile (linear interpolation, numpy's
    default) reads: ``count - floor(q (count - 1))``; never decreases with ``count``."""
    return count - math.floor(q * (count - 1)) if count else 0


def quantile_of_top(top: np.ndarray, count: int, q: float) -> float:
    """``np.quantile(values, q)`` of ``count`` values from their largest ones, ``top`` (at least
    :func:`top_needed` of them, any order)."""
    assert len(top) >= top_needed(count, q), (len(top), count, q)
    largest = np.sort(np.asarray(top, np.float64))[::-1]
    position = q * (count - 1)
    lo = math.floor(position)
    hi = min(lo + 1, count - 1)
    below, above = largest[count - 1 - lo], largest[count - 1 - hi]  # the lo-th and hi-th smallest values
    return float(below + (position - lo) * (above - below))


class TopValues:
    """The ``capacity`` largest values seen on this rank."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.values = capacity, np.empty(0, np.float64)

    def add(self, values: np.ndarray) -> None:
        merged = np.concatenate([self.values, np.asarray(values, np.float64).ravel()])
        if len(merged) > self.capacity:
            merged = np.partition(merged, len(merged) - self.capacity)[len(merged) - self.capacity:]
        self.values = merged

    def merged(self, reduce: Reduce, *, rank: int, world_size: int) -> np.ndarray:
        """Every rank's kept values, in one array (every rank calls it)."""
        table = np.zeros((world_size, self.capacity + 1), np.float64)  # column 0: how many values follow
        table[rank, 0] = len(self.values)
        table[rank, 1:1 + len(self.values)] = self.values
        table = reduce(table)
        return np.concatenate([row[1:1 + int(row[0])] for row in table])


class VariableTally:
    """The sums of one variable's metrics on this rank; ``psd_bins``: the radial spectrum's bins of the
    validation fields, ``capacity``: the values kept for the percentile (precipitation only)."""

    def __init__(self, name: str, *, psd_bins: int, capacity: int) -> None:
        self.name, self.precipitation = name, name in PRECIPITATION
        self.sums = np.zeros(4, np.float64)  # squared error, land pixels, dry pixels, dry pixels made wet
        self.psd = np.zeros((2, psd_bins), np.float64)  # summed spectra of reconstructions and truths
        self.top = [TopValues(capacity if self.precipitation else 0) for _ in range(2)]  # recon, truth

    def add(self, recon: np.ndarray, truth: np.ndarray, land: np.ndarray) -> None:
        """``recon``, ``truth`` ``[B, H, W]`` (physical units), ``land`` ``[B, H, W]`` bool."""
        r, t = recon[land].astype(np.float64), truth[land].astype(np.float64)
        self.sums[:2] += ((r - t) ** 2).sum(), r.size
        for i, fields in enumerate((recon, truth)):
            _, psd = radial_psd(fields)
            self.psd[i] += psd * len(fields)
        if self.precipitation:
            dry = t < DRY_KG_M2
            self.sums[2:] += dry.sum(), (dry & (r >= DRY_KG_M2)).sum()
            self.top[0].add(r)
            self.top[1].add(t)

    def result(self, reduce: Reduce, *, rank: int, world_size: int) -> dict[str, float]:
        """The variable's metrics over all ranks (every rank calls it; NaN where nothing was counted)."""
        sums, psd = reduce(self.sums), reduce(self.psd)
        n = self.name
        out = {f"{n}_rmse": math.sqrt(sums[0] / sums[1]) if sums[1] else math.nan,
               f"{n}_psd_high_ratio": (high_power_ratio(self._wavenumbers(), psd[0], psd[1])
                                       if psd[1].sum() > 0 else math.nan)}
        if self.precipitation:
            top = [t.merged(reduce, rank=rank, world_size=world_size) for t in self.top]
            count = int(sums[1])
            out[f"{n}_q999_error"] = (quantile_of_top(top[0], count, QUANTILE)
                                      - quantile_of_top(top[1], count, QUANTILE)) if count else math.nan
            out[f"{n}_dry_leakage"] = float(sums[3] / sums[2]) if sums[2] else math.nan
        return out

    def _wavenumbers(self) -> np.ndarray:
        """The bins' wavenumbers (cycles per pixel): only which bins lie in the upper half matters."""
        return np.arange(1, self.psd.shape[1] + 1, dtype=np.float64)


class ReconstructionTally:
    """The metrics of ``names`` (target variables) over validation fields of ``shape`` ``(H, W)``, of at
    most ``pixels`` land values per variable over all ranks (bounds the values kept for percentiles)."""

    def __init__(self, names: Sequence[str], *, shape: tuple[int, int], pixels: int) -> None:
        capacity = top_needed(pixels, QUANTILE)
        self.variables = [VariableTally(n, psd_bins=min(shape) // 2, capacity=capacity) for n in names]

    def add(self, recon: np.ndarray, truth: np.ndarray, land: np.ndarray) -> None:
        """``recon``, ``truth`` ``[B, Ct, H, W]`` in physical units; ``land`` ``[B, H, W]`` bool."""
        assert recon.shape == truth.shape and recon.shape[1] == len(self.variables), \
            (recon.shape, truth.shape, len(self.variables))
        assert land.shape == (recon.shape[0], *recon.shape[2:]), (land.shape, recon.shape)
        for c, variable in enumerate(self.variables):
            variable.add(recon[:, c], truth[:, c], land)

    def result(self, reduce: Reduce, *, rank: int = 0, world_size: int = 1) -> dict[str, float]:
        """``{variable_metric: value}`` over all ranks (every rank calls it, in the same order)."""
        out: dict[str, float] = {}
        for variable in self.variables:
            out.update(variable.result(reduce, rank=rank, world_size=world_size))
        return out


def metric_names(names: Sequence[str]) -> list[str]:
    """The keys :meth:`ReconstructionTally.result` gives for target variables ``names``, in order."""
    out = []
    for n in names:
        out += [f"{n}_rmse", f"{n}_psd_high_ratio"]
        out += [f"{n}_q999_error", f"{n}_dry_leakage"] if n in PRECIPITATION else []
    return out
