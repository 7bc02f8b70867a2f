"""How often the block bootstrap's 95 % interval covers a known mean (0): independent and AR(1) series
laid on consecutive days (blocks) and on scattered dates (resampled one by one).

    python tools/bootstrap_coverage.py [--series 300] [--reps 500]
"""

from __future__ import annotations

import argparse

import numpy as np

from hpcdiff.evaluate import bootstrap

START = np.datetime64("2001-01-01")
CASES = ((125, 0.0), (125, 0.5), (343, 0.5))  # (values, lag-1 correlation)


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / np.sqrt(1 - phi ** 2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--reps", type=int, default=500)
    args = parser.parse_args()
    print("values  correlation  block  coverage (consecutive days)  coverage (scattered dates)")
    for n, phi in CASES:
        rng = np.random.default_rng(1)
        layouts = {"consecutive": START + np.arange(n), "scattered": START + 2 * np.arange(n)}
        hits = dict.fromkeys(layouts, 0)
        for seed in range(args.series):
            x = ar1(rng, n, phi)
            for name, dates in layouts.items():
                interval = bootstrap.mean_interval(x, bootstrap.resample_indices(dates, reps=args.reps,
                                                                                 seed=seed))
                hits[name] += interval.lo <= 0.0 <= interval.hi
        covered = {name: count / args.series for name, count in hits.items()}
        print(f"{n:6d}  {phi:11.1f}  {bootstrap.block_length(n):5d}  {covered['consecutive']:27.2f}"
              f"  {covered['scattered']:26.2f}")


if __name__ == "__main__":
    main()
