"""How much of the `context` world's driver each kind of context carries, measured without any network:
the share of the driver term's variance (``2 K x D`` in t2m, land and sea pixels of every date that has
its previous days) explained by a least-squares fit on the ERA5 t2m anomaly the network could read

    none        the same day, at the pixel (what the same-day conditions on the target grid carry)
    temporal    the same day and days -1, -2, at the pixel
    spatial     the same day at the pixel and at the pixel's upstream point (the box of day 0)
    both        days -2, -1, 0 at the pixel and at its upstream point (the box of those days)

(anomaly: ERA5 daily t2m bilinear at the point minus the world's climatology, over its anomaly scale;
the fit is linear, so a network can do at least as well). The upper bound is 1: `both` holds D itself.

    python tools/context_probe.py WORLD     (a `hpcdiff synth --preset context` folder)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hpcdiff.data.regrid import apply_bilinear
from hpcdiff.data.synth import coarse_daily, load_world
from hpcdiff.data.synth.truth import driver_field
from hpcdiff.data.synth.weather import seasonal_cycle, t2m_climate


def anomaly(world, dates: np.ndarray, plan) -> np.ndarray:
    """ERA5 daily t2m anomaly ``[T, H, W]`` (units of the world's anomaly scale) at ``plan``'s points."""
    t2m = apply_bilinear(plan, coarse_daily(world, dates)["t2m"])
    season = seasonal_cycle(world.law, dates.astype("datetime64[s]"))[:, None, None]
    return (t2m - t2m_climate(world.law, season=season, lat=world.lat[None])) / world.law.coarse.t2m_anomaly_k


def explained(target: np.ndarray, columns: list[np.ndarray]) -> float:
    """R^2 of the least-squares fit of ``target`` on ``columns`` (and a constant)."""
    x = np.column_stack([np.ones(target.size), *[c.ravel() for c in columns]])
    coef, *_ = np.linalg.lstsq(x, target.ravel(), rcond=None)
    residual = target.ravel() - x @ coef
    return 1.0 - residual.var() / target.var()


def main(root: Path) -> int:
    world = load_world(root)
    dates = np.concatenate([d[2:] for d in world.dates.values()])  # each has days -2 and -1
    driver = driver_field(world, dates)
    here, upstream = world.plan, world.upstream_plan
    days = {k: dates - np.timedelta64(k, "D") for k in (0, 1, 2)}
    at_pixel = {k: anomaly(world, d, here) for k, d in days.items()}
    at_upstream = {k: anomaly(world, d, upstream) for k, d in days.items()}
    arms = {"none": [at_pixel[0]], "temporal": [at_pixel[0], at_pixel[1], at_pixel[2]],
            "spatial": [at_pixel[0], at_upstream[0]],
            "both": [*at_pixel.values(), *at_upstream.values()]}
    print(f"{dates.size} dates; the driver term's std {2.0 * driver.std():.2f} K in t2m")
    print("| arm | share of the driver's variance explained | unexplained std (K of t2m) |")
    print("|---|---|---|")
    for name, columns in arms.items():
        r2 = explained(driver, columns)
        print(f"| {name} | {r2:.3f} | {2.0 * driver.std() * np.sqrt(max(1.0 - r2, 0.0)):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
