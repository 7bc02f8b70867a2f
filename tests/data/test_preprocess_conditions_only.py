"""Conditions-only datasets (a recipe with ``target: null``): ERA5 for dates without truth, normalized with
the statistics of a named training dataset, and the one-line refusals of recipes that do not fit it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from future_world import YEAR, conditions_only_args, future_date, preprocess_args, write_future_root

from hpcdiff.cli import main
from hpcdiff.data.loader import ShardDataset
from hpcdiff.data.manifest import read_manifest
from hpcdiff.errors import HpcdiffError
from hpcdiff.sample.conditions import ConditionReader

SYNTHETIC_ERA5 = [  # preprocess/synthetic.yaml's era5.variables, as --set values
    "{name: t2m, units: K}", "{name: tp, units: m, kind: accumulation, transform: log1p, scale: 1.0}",
    "{name: e, units: m of water equivalent, kind: accumulation, transform: asinh, scale: 0.5}",
    "{name: msl, units: Pa}", "{name: u10, units: m s-1}", "{name: v10, units: m s-1}"]


@pytest.fixture(scope="module")
def future(tiny_dataset, tmp_path_factory):
    """``(root, dataset)``: the 2004 and 2032 ERA5 files, preprocessed with the tiny dataset's
    normalization."""
    base = tmp_path_factory.mktemp("future")
    root = write_future_root(tiny_dataset.parent / "world", base / "root")
    assert main(conditions_only_args(root, base / "ds", tiny_dataset)) == 0
    return root, base / "ds"


def test_manifest_records_the_normalization_and_has_its_fingerprint(future, tiny_dataset):
    training, manifest = read_manifest(tiny_dataset), read_manifest(future[1])
    assert manifest.conditions_only and not training.conditions_only
    assert manifest.fingerprint() == training.fingerprint()
    source = manifest.normalization_from
    assert source.dataset == str(tiny_dataset.resolve()) and source.fingerprint == training.fingerprint()
    stamp = json.loads((tiny_dataset / "manifest.json").read_text())["manifest_sha256"]
    assert source.manifest_sha256 == stamp
    assert manifest.targets == training.targets  # names, units, bounds for sampling and merging
    assert manifest.grid == training.grid
    days = [d for d in training.split_dates()["test"] if d.startswith(f"{YEAR}-")]
    assert list(manifest.splits) == ["all"]
    assert list(manifest.splits["all"].dates) == days + [future_date(d) for d in days]


def test_shards_hold_conditions_only_and_pass_check(future, capsys):
    manifest = read_manifest(future[1])
    for shard in manifest.splits["all"].shards:
        with h5py.File(future[1] / shard.path, "r") as f:
            assert set(f) == {"cond", "time"}
    assert main(["check", str(future[1])]) == 0
    assert "no targets (conditions-only)" in capsys.readouterr().out


def test_conditions_are_normalized_exactly_as_in_the_training_dataset(future, tiny_dataset):
    """The same date gives the same numbers in both datasets, and the moved file the same numbers again."""
    days = [d for d in read_manifest(tiny_dataset).split_dates()["test"] if d.startswith(f"{YEAR}-")]
    with ConditionReader(tiny_dataset) as trained, ConditionReader(future[1]) as new:
        for day in days:
            cond, _, doy = trained.read(day)
            np.testing.assert_array_equal(new.read(day)[0], cond)
            np.testing.assert_array_equal(new.read(future_date(day))[0], cond)
            assert new.read(future_date(day))[2] == doy


def test_the_loader_refuses_to_train_on_it(future, tiny_dataset):
    with pytest.raises(HpcdiffError, match="conditions-only dataset .* cannot be trained on; train on "
                       f"{tiny_dataset.resolve()}"):
        ShardDataset(future[1], "all", batch_size=2)


def _edited(tiny_dataset, tmp_path):
    data = json.loads((tiny_dataset / "manifest.json").read_text())
    data["conditions"][0]["stats"]["mean"] += 1.0
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "manifest.json").write_text(json.dumps(data))
    return tmp_path / "edited"


def _variables(*, drop: int | None = None, change: tuple[int, str, str] | None = None) -> str:
    entries = [e for i, e in enumerate(SYNTHETIC_ERA5) if i != drop]
    if change is not None:
        i, old, new = change
        entries[i] = entries[i].replace(old, new)
    return "era5.variables=[" + ", ".join(entries) + "]"


BAD = {  # case: (what it changes, words the one-line error must hold)
    "missing": (lambda ds, tmp: (tmp / "nowhere", []), "normalization.dataset {training}: not a dataset"),
    "edited": (lambda ds, tmp: (_edited(ds, tmp), []), "edited after preprocessing"),
    "variables": (lambda ds, tmp: (ds, [_variables(drop=5)]),
                  "the recipe's era5.variables ['t2m', 'tp', 'e', 'msl', 'u10']"),
    "scale": (lambda ds, tmp: (ds, [_variables(change=(1, "scale: 1.0", "scale: 2.0"))]),
              "era5.variables[1] (tp) has scale 2.0, the training dataset's 1.0"),
    "units": (lambda ds, tmp: (ds, [_variables(change=(0, "units: K", "units: degC"))]),
              "era5.variables[0] (t2m) has daily units 'degC', the training dataset's 'K'"),
    "domain": (lambda ds, tmp: (ds, ["domain={y: [0, 16], x: [0, 32]}"]),
               "shape (16, 32) (with the recipe's domain) differs from the training dataset's (32, 32)"),
    "split": (lambda ds, tmp: (ds, ["split={train_years: [2004], val_years: [], test_years: []}"]),
              "a conditions-only recipe (target: null) has no split"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_recipe_that_does_not_fit_is_one_line_and_leaves_nothing(case, future, tiny_dataset, tmp_path,
                                                                   capsys):
    change, words = BAD[case]
    training, sets = change(tiny_dataset, tmp_path)
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(conditions_only_args(future[0], out, training, *sets)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpcdiff: error: "), err
    assert words.format(training=training) in err[0], err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_normalization_and_a_missing_target_go_together(future, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(preprocess_args(out, f"root={tiny_dataset.parent / 'world'}",
                                f"normalization.dataset={tiny_dataset}")) == 1
    assert "normalization is only for a conditions-only recipe (target: null)" in capsys.readouterr().err
    assert main(preprocess_args(out, f"root={future[0]}", "target=null", "split=null")) == 1
    assert "set normalization.dataset to the training dataset" in capsys.readouterr().err
    assert not out.exists()


def test_compressed_shards_without_targets_hold_the_same_conditions(future, tiny_dataset, tmp_path):
    out = tmp_path / "lz4"
    sets = ["shards.compression=lz4", "shards.shard_mb=null", "shards.samples_per_shard=8"]
    assert main(conditions_only_args(future[0], out, tiny_dataset, *sets)) == 0
    assert main(["check", str(out)]) == 0
    manifest = read_manifest(out)
    assert len(manifest.splits["all"].shards) == 2
    assert manifest.fingerprint() == read_manifest(future[1]).fingerprint()
    with ConditionReader(out) as packed, ConditionReader(future[1]) as plain:
        for day in manifest.splits["all"].dates:
            np.testing.assert_array_equal(packed.read(day)[0], plain.read(day)[0])
