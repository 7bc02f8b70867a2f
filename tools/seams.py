"""Seams of tiled full-domain sampling: differences across tile borders against the interior.

    python tools/seams.py SAMPLES.nc --tile 64 --overlap 16 [--reference OTHER.nc] [--json out.json]

For each variable of a merged ensemble (``hpcdiff merge``), the mean absolute difference between
neighbouring pixels across the borders of the tiles that ``hpcdiff sample`` would use (``tile``,
``overlap``: every row/column where a tile starts or ends inside the grid) divided by the same
statistic over every other row/column pair. A seam makes the ratio exceed 1; blending by the overlap
ramps should keep it at 1 within the sampling noise, like a sample of the whole grid at once
(``--reference``, the same statistic at the same positions). The power spectrum at the tile period
is reported the same way: the mean power of the x-wavenumbers ``k = W / stride`` (and its multiples)
against the neighbouring wavenumbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from hpcdiff.sample.tiles import tile_starts


def borders(size: int, tile: int, overlap: int) -> np.ndarray:
    """Indices ``j`` such that the pair ``(j - 1, j)`` straddles a tile's first or last pixel."""
    starts = tile_starts(size, tile, overlap)
    edges = {s for s in starts[1:]} | {s + tile for s in starts[:-1]}
    return np.array(sorted(j for j in edges if 0 < j < size), dtype=int)


def border_ratio(field: np.ndarray, axis: int, edges: np.ndarray) -> float:
    """Mean |difference| across ``edges`` along ``axis`` over the mean elsewhere (``field [..., H, W]``)."""
    diff = np.abs(np.diff(field, axis=axis))  # pair (j - 1, j) at index j - 1
    pairs = np.moveaxis(diff, axis, 0)
    at = np.zeros(pairs.shape[0], bool)
    at[edges - 1] = True
    return float(np.nanmean(pairs[at]) / np.nanmean(pairs[~at]))


def tile_period_power(field: np.ndarray, stride: int) -> float:
    """Power at the x-wavenumbers of the tile stride (and multiples) over the mean power of their
    neighbours (1 for no periodic seam)."""
    width = field.shape[-1]
    power = np.abs(np.fft.rfft(field - field.mean(axis=-1, keepdims=True), axis=-1)) ** 2
    power = power.reshape(-1, power.shape[-1]).mean(axis=0)
    harmonics = {round(m * width / stride) for m in range(1, width // 2 // max(width // stride, 1) + 1)}
    ks = sorted(harmonics & set(range(2, power.size - 2)))
    if not ks:
        return float("nan")
    at = np.mean([power[k] for k in ks])
    around = np.mean([power[k + d] for k in ks for d in (-2, -1, 1, 2)])
    return float(at / around)


def seams(path: Path, *, tile: tuple[int, int], overlap: int) -> dict[str, dict[str, float]]:
    out = {}
    with xr.open_dataset(path, engine="netcdf4") as ds:
        for name, var in ds.data_vars.items():
            if set(var.dims) >= {"y", "x"} and var.ndim >= 3:
                field = var.transpose(..., "y", "x").values.astype(np.float64)
                h, w = field.shape[-2:]
                out[name] = {
                    "rows": border_ratio(field, -2, borders(h, min(tile[0], h), overlap)),
                    "columns": border_ratio(field, -1, borders(w, min(tile[1], w), overlap)),
                    "tile_period_power": tile_period_power(field, min(tile[1], w) - overlap)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("--tile", type=int, nargs="+", required=True, help="tile side (or h w)")
    parser.add_argument("--overlap", type=int, required=True)
    parser.add_argument("--reference", type=Path, help="a whole-grid sample of the same dates")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tile = (args.tile[0], args.tile[-1])
    result = {"tile": list(tile), "overlap": args.overlap, "samples": str(args.samples),
              "tiled": seams(args.samples, tile=tile, overlap=args.overlap)}
    if args.reference:
        result["reference"] = str(args.reference)
        result["whole"] = seams(args.reference, tile=tile, overlap=args.overlap)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
