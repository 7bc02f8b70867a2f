"""Large-scale context in the dataset: the neighbouring days' conditions (``temporal``) and the ERA5 box
(``context``), preprocessed from the mini world (whose ERA5 fields are linear in lat/lon, so every box
value is known), read back by the loader across month ends, a leap day and split edges; dates whose
context is incomplete are dropped, listed in the manifest and refused by name when sampled."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mini_world import expected_era5, write_mini_world, write_recipe

from hpcdiff.cli import main
from hpcdiff.config import load_config
from hpcdiff.data.context import ContextSelection, plan_context
from hpcdiff.data.loader import ShardDataset
from hpcdiff.data.manifest import read_manifest
from hpcdiff.data.recipe import ContextSection, PreprocessRecipe
from hpcdiff.data.transforms import forward
from hpcdiff.errors import HpcdiffError
from hpcdiff.sample.conditions import ConditionReader
from hpcdiff.timeaxis import iso_dates

DAYS = 70  # 1 January .. 10 March (2000 is a leap year: 29 February is in)
CONTEXT = """
context:
  days: [-2, -1, 0, 1]
  neighbours: split
  box: {lon: [5.0, 15.0], lat: [53.5, 57.5], coarsen: 2, variables: [t2m, msl]}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("context")
    world = write_mini_world(base / "world", days=DAYS)
    recipe = write_recipe(base / "r.yaml", world)
    recipe.write_text(recipe.read_text() + CONTEXT)
    out = base / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress"]) == 0
    return out


def by_date(ds: ShardDataset) -> dict[str, dict[str, np.ndarray]]:
    """Every sample of the split, by ISO date."""
    out = {}
    for i in range(len(ds)):
        batch = ds[i]
        for k, day in enumerate(iso_dates(batch["time"].numpy())):
            out[day] = {key: batch[key][k].numpy() for key in ("cond", "context") if key in batch}
    return out


def test_the_manifest_lists_the_days_the_box_and_every_dropped_date(dataset, capsys):
    manifest = read_manifest(dataset)
    info = manifest.context
    assert info.days == (-2, -1, 0, 1) and info.offsets == [-2, -1, 1]
    assert info.box_variables == ("t2m", "msl")
    # 0.5 deg ERA5 cells, 53.5..57.5 x 5..15 = 9 x 21 cells, coarsened by 2 (the odd last row/column cut)
    assert info.box_shape == (4, 10)
    np.testing.assert_allclose(info.box_lat, [57.25, 56.25, 55.25, 54.25])
    np.testing.assert_allclose(info.box_lon, np.arange(5.25, 15.0, 1.0))
    held = {d for dates in manifest.split_dates().values() for d in dates}
    for year in (2000, 2001, 2002, 2003):  # the files begin on 1 January: days -2 / -1 are missing
        for day in (f"{year}-01-01", f"{year}-01-02"):
            assert day in info.dropped and day not in held
        assert info.dropped[f"{year}-01-01"].missing == f"{year - 1}-12-30"
        assert "no complete ERA5 day" in info.dropped[f"{year}-01-01"].why
    assert "2000-02-29" in manifest.split_dates()["train"]  # the leap day keeps its context
    assert info.dropped["2000-03-10"].offset == 1  # the files' last day has no day +1
    assert main(["check", str(dataset)]) == 0
    assert "OK" in capsys.readouterr().out


def test_the_neighbouring_days_are_the_conditions_of_those_days(dataset):
    """Across month ends and the leap day: day -1's channels of D are day 0's of D - 1, day +1's those of
    D + 1, exactly (the same normalization)."""
    ds = ShardDataset(dataset, "train", batch_size=2, shuffle=False, drop_last=False,
                      context=ContextSelection(temporal=(-1, 1)))
    dynamic = len(ds.manifest.conditions)
    samples = by_date(ds)
    for day, prev, nxt in (("2000-02-01", "2000-01-31", "2000-02-02"),
                           ("2000-02-29", "2000-02-28", "2000-03-01"),
                           ("2001-03-01", "2001-02-28", "2001-03-02")):
        cond = samples[day]["cond"]
        np.testing.assert_array_equal(cond[dynamic:2 * dynamic], samples[prev]["cond"][:dynamic])
        np.testing.assert_array_equal(cond[2 * dynamic:3 * dynamic], samples[nxt]["cond"][:dynamic])
    assert ds.layout.names[dynamic:dynamic + 2] == ["t2m@-1", "tp@-1"]
    assert ds.layout.names[2 * dynamic] == "t2m@+1"


def test_the_box_holds_the_era5_fields_over_it(dataset):
    """Coarsened cells of a field linear in lat/lon are its values at the cells' centres; the box carries
    its own statistics; each pixel's place in the box is where its lat/lon lie."""
    manifest = read_manifest(dataset)
    ds = ShardDataset(dataset, "val", batch_size=1, shuffle=False, drop_last=False,
                      context=ContextSelection(spatial=(-1, 0)))
    samples = by_date(ds)
    info = manifest.context
    lat, lon = np.meshgrid(info.box_lat, info.box_lon, indexing="ij")
    stats = {c.name: c.stats for c in manifest.context_channels}
    for day in ("2002-02-01", "2002-03-01"):
        context = samples[day]["context"]
        assert context.shape == (4, 4, 10)  # (t2m, msl) x days (-1, 0)
        for k, date in enumerate((np.datetime64(day) - 1, np.datetime64(day))):
            for c, name in enumerate(("t2m", "msl")):
                want = forward(expected_era5(name, np.array([date]), lat, lon)[0], stats[name])
                np.testing.assert_allclose(context[2 * k + c], want, atol=2e-3)
    cond = samples["2002-02-01"]["cond"]
    assert ds.layout.names[-2:] == ["ctx_y", "ctx_x"]
    px_lat, px_lon = ds.layout.fields["lat"], ds.layout.fields["lon"]
    rows = (info.box_lat[0] - px_lat) / 1.0  # fractional row, north to south, 1 deg coarse cells
    cols = (px_lon - info.box_lon[0]) / 1.0
    np.testing.assert_allclose(cond[-2], -1 + 2 * rows / 3, atol=1e-5)
    np.testing.assert_allclose(cond[-1], -1 + 2 * cols / 9, atol=1e-5)
    assert np.all(np.abs(cond[-2:]) <= 1.0)  # the target grid lies inside the box


def test_split_edges_follow_the_recipe():
    """``neighbours: split`` keeps a neighbour in the date's split's years; ``any`` takes any complete day."""
    dates = np.array(["2000-12-31", "2001-01-01", "2001-01-02"], "datetime64[D]")
    complete = np.arange(np.datetime64("2000-12-01"), np.datetime64("2001-02-01"))
    section = ContextSection(days=[-1, 0], neighbours="split")
    keep, dropped = plan_context(dates, section=section, complete=complete, allowed_years=[2001])
    assert keep.tolist() == [False, False, True]
    assert [(str(d), o, "outside" in why) for d, o, why in dropped][1] == ("2001-01-01", -1, True)
    keep, _ = plan_context(dates, section=ContextSection(days=[-1, 0, 1], neighbours="any"),
                           complete=complete, allowed_years=None)
    assert keep.all()
    leap = np.array(["2000-03-01"], "datetime64[D]")
    keep, dropped = plan_context(leap, section=ContextSection(days=[-1, 0]),
                                 complete=np.array(["2000-02-28", "2000-03-01"], "datetime64[D]"),
                                 allowed_years=None)
    assert not keep[0] and str(dropped[0][0] + dropped[0][1]) == "2000-02-29"


def test_a_date_left_out_for_its_context_is_an_error_naming_the_missing_day(dataset):
    with ConditionReader(dataset, context=ContextSelection(temporal=(-1,))) as reader:
        with pytest.raises(HpcdiffError, match=r"2001-01-02 was left out at preprocessing: its context needs "
                                               r"2000-12-31 \(day -2\)"):
            reader.read("2001-01-02")
        cond, context, _ = reader.read("2001-02-01")
        assert context is None and cond.shape[0] == reader.channels


def test_a_selection_the_dataset_lacks_is_refused(dataset):
    with pytest.raises(HpcdiffError, match=r"context.temporal offset \+2 is not among"):
        ShardDataset(dataset, "train", batch_size=2, context=ContextSelection(temporal=(2,)))
    with pytest.raises(HpcdiffError, match=r"context.spatial offset -3"):
        ShardDataset(dataset, "train", batch_size=2, context=ContextSelection(spatial=(-3,)))


@pytest.mark.parametrize(("section", "message"), [
    ("context: {days: [-1]}", "must list 0"),
    ("context: {days: [0], box: {lon: [5, 40], lat: [53.5, 57.5]}}", "reaches beyond the ERA5 inputs"),
    ("context: {days: [0], box: {lon: [5, 15], lat: [53.5, 57.5], variables: [u10]}}",
     "not in era5.variables"),
    ("context: {days: [0], box: {lon: [15, 5], lat: [53.5, 57.5]}}", "context.box.lon"),
    ("context: {days: [0], box: {lon: [11, 15], lat: [53.5, 57.5]}}", "does not contain the target grid"),
])
def test_bad_context_sections_are_one_line_errors(tmp_path, capsys, section, message):
    world = write_mini_world(tmp_path / "world", years=(2000, 2001, 2002, 2003), days=4)
    recipe = write_recipe(tmp_path / "r.yaml", world)
    recipe.write_text(recipe.read_text() + section + "\n")
    assert main(["preprocess", str(recipe), "--out", str(tmp_path / "ds"), "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ds").exists()


def test_the_recipe_section_is_typed(tmp_path):
    world = write_mini_world(tmp_path / "world", years=(2000,), days=2)
    recipe = write_recipe(tmp_path / "r.yaml", world)
    recipe.write_text(recipe.read_text() + CONTEXT)
    loaded = load_config(PreprocessRecipe, recipe)
    assert loaded.context.offsets == [-2, -1, 1] and loaded.context.box.coarsen == 2
    assert json.loads(json.dumps(list(loaded.context.box.lon))) == [5.0, 15.0]


def test_a_conditions_only_dataset_reuses_the_box_statistics(dataset, tmp_path, capsys):
    """ERA5 without targets, preprocessed with the training dataset's normalization and the same context:
    the same fingerprint, and the same conditions and box for the same date; another box is refused."""
    training = read_manifest(dataset)
    recipe = tmp_path / "future.yaml"
    recipe.write_text((dataset / "recipe.yaml").read_text())
    out = tmp_path / "future"
    args = ["preprocess", str(recipe), "--out", str(out), "--no-progress", "--set", "target=null",
            "--set", "split=null", "--set", f"normalization={{dataset: {dataset}}}"]
    assert main(args) == 0
    future = read_manifest(out)
    assert future.conditions_only and future.fingerprint() == training.fingerprint()
    assert "2000-01-02" in future.context.dropped  # no split: day -2 is missing all the same
    selection = ContextSelection(temporal=(-1,), spatial=(0, 1))
    with ConditionReader(dataset, context=selection) as a, ConditionReader(out, context=selection) as b:
        for day in ("2002-02-01", "2002-03-01"):
            cond, context, _ = a.read(day)
            assert context.shape == (4, 4, 10)
            np.testing.assert_array_equal(b.read(day)[0], cond)
            np.testing.assert_array_equal(b.read(day)[1], context)
    other = tmp_path / "other"
    assert main([*args[:3], str(other), *args[4:], "--set", "context.box.coarsen=1"]) != 0
    assert "context box shape [4, 10], the recipe's [9, 21]" in capsys.readouterr().err
    assert not other.exists()


@pytest.mark.parametrize("neighbours", ["split", "any"])
def test_at_a_split_edge_the_recipe_decides_whether_the_previous_year_is_read(tmp_path, neighbours):
    """2001 (train) is written whole, so 1 January 2002 (val) has its day -1 in the files: ``split``
    drops it (the day lies in a training year), ``any`` keeps it and its day -1 is 31 December 2001."""
    from mini_world import write_era5, write_static, write_target

    root = tmp_path / "world"
    for year, days in ((2000, 3), (2001, 365), (2002, 3), (2003, 3)):
        write_era5(root / "era5" / f"era5_{year}.nc", year, days=days, after=year != 2001)
        write_target(root / "danra" / f"danra_{year}.nc", year, days=days)
    write_static(root / "static" / "static.nc")
    recipe = write_recipe(tmp_path / "r.yaml", root)
    recipe.write_text(recipe.read_text() + f"context: {{days: [-1, 0], neighbours: {neighbours}}}\n")
    out = tmp_path / "ds"
    assert main(["preprocess", str(recipe), "--out", str(out), "--no-progress"]) == 0
    manifest = read_manifest(out)
    val = manifest.split_dates()["val"]
    if neighbours == "split":
        assert val == ["2002-01-02", "2002-01-03"]
        assert "outside the years of its split" in manifest.context.dropped["2002-01-01"].why
        return
    assert val[0] == "2002-01-01" and "2002-01-01" not in manifest.context.dropped
    selection = ContextSelection(temporal=(-1,))
    dynamic = len(manifest.conditions)
    new_year = by_date(ShardDataset(out, "val", batch_size=1, shuffle=False, drop_last=False,
                                    context=selection))["2002-01-01"]["cond"]
    old_year = by_date(ShardDataset(out, "train", batch_size=1, shuffle=False, drop_last=False))["2001-12-31"]
    np.testing.assert_array_equal(new_year[dynamic:2 * dynamic], old_year["cond"][:dynamic])
