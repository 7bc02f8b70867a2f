"""Times the ``scores`` package's fair CRPS and rank histogram, which ``hpcdiff evaluate`` uses, against
the hand-written numpy versions hpcdiff used before (kept here as the reference), on a demo-sized
ensemble, and checks that they agree.

    python tools/bench_verification.py [--dates 100] [--members 8 32] [--size 64]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from hpcdiff.evaluate import metrics


def hand_crps_fair(ens: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> float:
    """The former hand-written fair CRPS: O(M log M) per pixel from the sorted members."""
    x = np.sort(ens[..., mask], axis=1).astype(np.float64)  # [T, M, P]
    y = obs[..., mask].astype(np.float64)[:, None, :]
    m = x.shape[1]
    skill = np.abs(x - y).mean(axis=1)
    k = np.arange(1, m + 1, dtype=np.float64)[None, :, None]
    spread = ((2 * k - m - 1) * x).sum(axis=1) / (m * (m - 1))
    return float((skill - spread).mean())


def hand_rank_histogram(ens: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The former hand-written rank histogram (ties broken at random)."""
    x, y = ens[..., mask], obs[..., mask][:, None, :]
    below, ties = (x < y).sum(axis=1), (x == y).sum(axis=1)
    rank = below + np.random.default_rng(0).integers(0, ties + 1)
    return np.bincount(rank.ravel(), minlength=x.shape[1] + 1)


def best_of(fn: Callable[..., object], *args: object, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=100)
    parser.add_argument("--members", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mask = rng.random((args.size, args.size)) > 0.4
    metrics.crps_fair(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2)))  # import scores before timing
    print("members  crps hand [s]  crps scores [s]  ratio  rank hand [s]  rank scores [s]  ratio")
    for members in args.members:
        ens = rng.normal(size=(args.dates, members, args.size, args.size)).astype(np.float32)
        obs = rng.normal(size=(args.dates, args.size, args.size)).astype(np.float32)
        t_hand, crps_hand = best_of(hand_crps_fair, ens, obs, mask)
        t_lib, crps_lib = best_of(metrics.crps_fair, ens, obs, mask)
        assert abs(crps_hand - crps_lib) < 1e-9 * abs(crps_hand), (crps_hand, crps_lib)
        r_hand, hist_hand = best_of(hand_rank_histogram, ens, obs, mask)
        r_lib, hist_lib = best_of(metrics.rank_histogram, ens, obs, mask)
        assert np.allclose(hist_hand, hist_lib), (hist_hand, hist_lib)  # no ties in continuous values
        print(f"{members:7d}  {t_hand:13.3f}  {t_lib:15.3f}  {t_lib / t_hand:5.1f}  {r_hand:13.3f}  "
              f"{r_lib:15.3f}  {r_lib / r_hand:5.1f}")


if __name__ == "__main__":
    main()
