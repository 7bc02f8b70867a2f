"""Conditions-only datasets: ERA5 conditions for dates without truth (a later period, a climate
projection), normalized with the statistics of a named training dataset, so that a run trained there
downscales them (``hpcdiff sample``; :meth:`hpcdiff.data.manifest.Manifest.fingerprint` is the same).

The recipe has ``target: null`` and ``normalization: {dataset: TRAINING_DATASET}``. Before any value is
read, :func:`load_normalization` checks that the training dataset is one (its manifest verified), that its
conditions are the recipe's ERA5 variables (same names, units, kind, transform and scale, in order) and
that its grid is the static file's (shape, window, projection, lat/lon). The new dataset's manifest then
carries the training dataset's channel entries (:func:`borrowed_channels`) and where they came from
(:func:`normalization_record`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcdiff.config import from_dict
from hpcdiff.data.context import BoxPlan
from hpcdiff.data.era5 import units_of
from hpcdiff.data.manifest import MANIFEST, Manifest, read_manifest
from hpcdiff.data.recipe import ContextSection, Era5Variable, PreprocessRecipe
from hpcdiff.data.sources import TargetGrid
from hpcdiff.data.statics import StaticFields
from hpcdiff.data.units import same_units
from hpcdiff.errors import HpcdiffError

LATLON_ATOL = 1e-4  # degrees: static.h5 stores lat/lon as float32


def load_normalization(recipe: PreprocessRecipe, *, grid: TargetGrid, window: tuple[slice, slice],
                       statics: StaticFields) -> Manifest:
    """The manifest of the recipe's ``normalization.dataset``, checked against the recipe's ERA5 variables
    and the grid of its static file (one-line errors naming what differs)."""
    assert recipe.normalization is not None
    dataset = Path(recipe.normalization.dataset)
    if not (dataset / MANIFEST).is_file():
        raise HpcdiffError(f"normalization.dataset {dataset}: not a dataset (no {MANIFEST}); name the "
                           "training dataset whose statistics to reuse")
    manifest = read_manifest(dataset)
    where = f"normalization.dataset {manifest.root}"
    if manifest.conditions_only:
        raise HpcdiffError(f"{where}: is itself a conditions-only dataset; name the training dataset it was "
                           f"normalized with ({manifest.normalization_from.dataset})")
    check_variables(recipe.era5.variables, trained_variables(manifest), where=where)
    check_grid(manifest, grid=grid, window=window, statics=statics, where=where,
               static_file=recipe.root / recipe.static.file)
    return manifest


def trained_variables(manifest: Manifest) -> list[Era5Variable]:
    """The ERA5 variables of the recipe the dataset was preprocessed with."""
    entries = manifest.recipe.get("era5", {}).get("variables", [])
    where = str(manifest.root / MANIFEST)
    return [from_dict(Era5Variable, e, where=where, prefix=f"recipe.era5.variables[{i}].")
            for i, e in enumerate(entries)]


def check_variables(ours: Sequence[Era5Variable], theirs: Sequence[Era5Variable], *, where: str) -> None:
    """The same condition channels in the same order: name, daily units (compared as units), transform
    and scale, which is what the normalization applies to. How the inputs become daily values (source
    name, kind, window, file units) may differ: a CORDEX ``pr`` flux becomes the daily ``tp`` total of
    an ERA5-trained dataset."""
    names, trained = [v.name for v in ours], [v.name for v in theirs]
    if names != trained:
        raise HpcdiffError(f"{where}: its conditions are {trained}, the recipe's era5.variables {names} "
                           "(same variables in the same order needed)")
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        compared = (("daily units", units_of(a), units_of(b)), ("transform", a.transform, b.transform),
                    ("scale", a.scale, b.scale))
        for field, x, y in compared:
            same = same_units(x, y) if field == "daily units" else x == y
            if not same:
                raise HpcdiffError(f"{where}: era5.variables[{i}] ({a.name}) has {field} {x!r}, the "
                                   f"training dataset's {y!r}")


def check_grid(manifest: Manifest, *, grid: TargetGrid, window: tuple[slice, slice], statics: StaticFields,
               where: str, static_file: Path) -> None:
    """The static file's grid and the recipe's domain must give the training dataset's grid."""
    ours = {"shape": tuple(statics.lsm.shape), "full grid shape": tuple(grid.lat.shape),
            "window (y, x)": tuple((cut.start, cut.stop) for cut in window),
            "grid mapping": grid.mapping_name, "projection": json.loads(json.dumps(grid.mapping))}
    theirs = {"shape": manifest.grid.shape, "full grid shape": manifest.grid.full_shape,
              "window (y, x)": manifest.grid.window, "grid mapping": manifest.grid.grid_mapping,
              "projection": manifest.grid.projection}
    for key, value in ours.items():
        if value != theirs[key]:
            raise HpcdiffError(f"{static_file}: {key} {value} (with the recipe's domain) differs from the "
                               f"training dataset's {theirs[key]} ({where})")
    path = manifest.root / manifest.static_path
    try:
        with h5py.File(path, "r") as f:
            lat, lon = f["lat"][...], f["lon"][...]
    except (OSError, KeyError) as err:
        raise HpcdiffError(f"{path}: cannot read the grid ({err})") from None
    same = [np.allclose(a, b, atol=LATLON_ATOL) for a, b in ((lat, statics.lat), (lon, statics.lon))]
    if not all(same):
        raise HpcdiffError(f"{static_file}: lat/lon differ from the training dataset's ({where})")


def borrowed_channels(manifest: Manifest) -> dict[str, list[dict[str, Any]]]:
    """The training dataset's manifest entries of ``targets``, ``conditions`` and ``static_channels``, as
    written there (so the normalization fingerprint is the same)."""
    return {key: [dict(e) for e in manifest.raw[key]] for key in ("targets", "conditions", "static_channels")}


def normalization_record(manifest: Manifest) -> dict[str, str]:
    """The manifest's ``normalization_from``: the training dataset, its manifest checksum and fingerprint."""
    return {"dataset": str(Path(manifest.root).resolve()),
            "manifest_sha256": str(manifest.raw["manifest_sha256"]), "fingerprint": manifest.fingerprint()}


def borrowed_context(manifest: Manifest, section: ContextSection, *, box: BoxPlan, where: str) -> None:
    """A conditions-only recipe with a context box reuses the training dataset's box statistics: that
    dataset must hold a box of the same variables and cells, for the same days (one-line errors)."""
    theirs = manifest.context
    if theirs is None or not theirs.has_box:
        raise HpcdiffError(f"normalization.dataset {where}: has no context box; the recipe's context.box "
                           "needs statistics fitted on a training dataset with the same box")
    names = [manifest.recipe["era5"]["variables"][i]["name"] for i in box.variables]
    ours = {"days": list(section.days), "box variables": names, "box shape": list(box.shape)}
    trained = {"days": list(theirs.days), "box variables": list(theirs.box_variables),
               "box shape": list(theirs.box_shape)}
    for key, value in ours.items():
        if value != trained[key]:
            raise HpcdiffError(f"normalization.dataset {where}: context {key} {trained[key]}, the recipe's "
                               f"{value}")
    pairs = ((box.lat, theirs.box_lat), (box.lon, theirs.box_lon))
    same = [np.allclose(a, b, atol=LATLON_ATOL) for a, b in pairs]
    if not all(same):
        raise HpcdiffError(f"normalization.dataset {where}: its context box lies elsewhere (cell centres "
                           "differ); use the same context.box and ERA5 grid")
