"""The reference methods a model is scored against, computed exactly as the model sees its inputs.

- **bilinear**: the ERA5 condition channel of the same name as the target (bilinearly regridded to the
  target grid by the preprocessing), inverse-transformed with the *condition's* statistics; a
  deterministic one-member "ensemble" ``[T, 1, H, W]``.
- **oracle** (synthetic worlds only: ``world.json`` under the recipe's ``root``): members drawn from
  the exact conditional law (:func:`hpcdiff.data.synth.oracle_ensemble`), cut to the dataset's
  window; the best any model can do.

On a synthetic world the shards' truth must agree with the world's own truth, or the dataset does not
belong to that world (a regenerated or moved ``root``): :func:`check_world_truth`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hpcdiff.data import synth
from hpcdiff.data.manifest import Manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.evaluate.truth import physical, read_dated

# float32 shards vs the float64 law: measured differences are ~1e-7 relative (t2m 2e-5 K), far below these
TRUTH_RTOL = 1e-4
TRUTH_ATOL_STD = 1e-3  # absolute tolerance, as a fraction of the truth's std over the compared dates


def bilinear(manifest: Manifest, dates: np.ndarray) -> dict[str, np.ndarray]:
    """``{target: [T, 1, H, W] float64}`` for every target that has a condition channel of its name."""
    conditions = manifest.conditions
    names = [c.name for c in manifest.targets if c.name in {k.name for k in conditions}]
    if not names:
        return {}
    normalized = read_dated(manifest, dates, key="cond")
    return {name: values[:, None] for name, values in physical(normalized, conditions, names).items()}


def synthetic_world(manifest: Manifest) -> synth.World | None:
    """The synthetic world the dataset was made from, or None (not synthetic, or the world is gone)."""
    root = Path(manifest.recipe["root"])
    if not (root / "world.json").is_file():
        return None
    world = synth.load_world(root)
    if tuple(world.shape) != manifest.grid.full_shape:
        raise HpcdiffError(f"{root}: synthetic world grid {world.shape} is not the dataset's "
                           f"{manifest.grid.full_shape}")
    return world


def _window(manifest: Manifest) -> tuple[slice, slice]:
    (y0, y1), (x0, x1) = manifest.grid.window
    return slice(y0, y1), slice(x0, x1)


def oracle(world: synth.World, manifest: Manifest, dates: np.ndarray, *, members: int,
           seed: int) -> dict[str, np.ndarray]:
    """``{target: [T, members, H, W] float32}`` drawn from the exact law, on the dataset's window."""
    ys, xs = _window(manifest)
    ds = synth.oracle_ensemble(world, dates, members=members, seed=seed)
    return {name: ds[name].transpose("time", "member", "y", "x").values[..., ys, xs]
            for name in manifest.target_names}


def check_world_truth(world: synth.World, manifest: Manifest, dates: np.ndarray, *,
                      truth: Mapping[str, np.ndarray]) -> None:
    """The shards' ``truth`` ``{name: [T, H, W]}`` equals the world's truth for ``dates`` (float32
    precision), or a one-line error: the dataset and the world do not belong together."""
    ys, xs = _window(manifest)
    law = synth.truth(world, dates)
    for name, values in truth.items():
        expected = law[name][..., ys, xs]
        atol = TRUTH_ATOL_STD * max(float(expected.std()), 1e-6)
        if not np.allclose(values, expected, rtol=TRUTH_RTOL, atol=atol):
            worst = float(np.abs(values - expected).max())
            raise HpcdiffError(f"{world.root}: the dataset's truth of {name!r} differs from the synthetic "
                               f"world's (max |difference| {worst:.3g}); was the world regenerated?")
