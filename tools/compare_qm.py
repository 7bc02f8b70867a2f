"""Which quantile mapping makes the better ``qm`` baseline: one mapping per pixel, or one pooled over
land; per season or per month. Fits on DATASET's training split, maps the bilinear field of its test
split, and prints, over land: the MAE against the truth, the mean |quantile error| over the levels
0.01 .. 0.99 of the pooled land values, the same error of the per-pixel 0.9 quantile (the local climate),
and the time taken.

    python tools/compare_qm.py DATASET [DATASET ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hpcdiff.data.manifest import read_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.evaluate import baselines, qm
from hpcdiff.evaluate.truth import load_truth, read_static

LEVELS = np.linspace(0.01, 0.99, 99)


def errors(mapped: np.ndarray, truth: np.ndarray, land: np.ndarray) -> dict[str, float]:
    """``mapped``, ``truth`` ``[T, H, W]``: MAE, pooled quantile error, per-pixel q90 error (land)."""
    x, y = mapped[:, land], truth[:, land]
    return {"mae": float(np.abs(x - y).mean()),
            "quantile_error": float(np.abs(np.quantile(x, LEVELS) - np.quantile(y, LEVELS)).mean()),
            "pixel_q90_error": float(np.abs(np.quantile(x, 0.9, axis=0)
                                            - np.quantile(y, 0.9, axis=0)).mean())}


def compare(dataset: str) -> None:
    manifest = read_manifest(dataset)
    land = read_static(manifest).land
    dates = np.asarray(manifest.split("test").dates, "datetime64[D]")
    truth, bilinear = load_truth(manifest, dates), baselines.bilinear(manifest, dates)
    training = qm.read_training(manifest)
    print(f"{dataset}: {training.dates.size} training dates, {dates.size} test dates, "
          f"{int(land.sum())} land pixels")
    print("variable  group   pooling  mae      quantile_error  pixel_q90_error  seconds")
    for name in bilinear:
        base = errors(bilinear[name][:, 0], truth[name], land)
        print(f"{name:8s}  -       bilinear {base['mae']:.4f}   {base['quantile_error']:.4f}          "
              f"{base['pixel_q90_error']:.4f}")
        for group in qm.GROUPS:
            for pooling in qm.POOLINGS:
                start = time.perf_counter()
                try:
                    mapped = qm.qm_baseline(manifest, training, dates, bilinear={name: bilinear[name]},
                                            land=land, group=group, pooling=pooling)[name][:, 0]
                except HpcdiffError as err:
                    print(f"{name:8s}  {group:6s}  {pooling:7s}  -- {err}")
                    continue
                seconds = time.perf_counter() - start
                e = errors(mapped, truth[name], land)
                print(f"{name:8s}  {group:6s}  {pooling:7s}  {e['mae']:.4f}   {e['quantile_error']:.4f}"
                      f"          {e['pixel_q90_error']:.4f}           {seconds:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+")
    for dataset in parser.parse_args().datasets:
        compare(dataset)


if __name__ == "__main__":
    main()
