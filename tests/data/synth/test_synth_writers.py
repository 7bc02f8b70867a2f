"""Writing a world: its folder, byte-identical reruns and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcdiff.data.synth import World, write_world
from hpcdiff.errors import HpcdiffError


def test_folder_layout_and_world_json(world: World) -> None:
    meta = json.loads((world.root / "world.json").read_text())
    assert {"preset", "seed", "years", "era5_freq", "law", "target_grid", "format_version"} <= set(meta)
    assert meta["preset"] == "tiny" and meta["years"] == list(range(1991, 2006)) and meta["era5_freq"] == "1h"
    assert meta["target_grid"]["shape"] == [32, 32]
    for year in world.years:
        assert world.era5_path(year).is_file() and world.danra_path(year).is_file()
        assert world.flavours[year] == ("nc3" if year % 2 == 0 else "nc4")
    assert world.static_path.is_file()
    assert [p.name for p in world.root.iterdir() if p.name.startswith(".")] == []


def test_same_seed_same_bytes_other_seed_other_bytes(world: World, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    again = write_world(tmp_path / "again", preset="tiny", seed=0, progress=True)
    assert "synth tiny" in capsys.readouterr().err
    files = sorted(p.relative_to(world.root) for p in world.root.rglob("*") if p.is_file())
    assert sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file()) == files
    for rel in files:
        assert (world.root / rel).read_bytes() == (again / rel).read_bytes(), rel
    write_world(again, preset="tiny", seed=0, progress=False)  # rerun replaces, identically
    for rel in files:
        assert (world.root / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = write_world(tmp_path / "other", preset="tiny", seed=1, progress=False)
    for rel in (Path("era5/era5_1992.nc"), Path("era5/era5_1993.nc"), Path("danra/danra_1995.nc")):
        assert (world.root / rel).read_bytes() != (other / rel).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]


def test_unknown_preset_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(HpcdiffError, match="'huge'.*tiny, demo, bench"):
        write_world(tmp_path / "w", preset="huge")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_a_one_line_error_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HpcdiffError) as err:
        write_world(blocker / "w", preset="tiny", progress=False)
    assert "\n" not in str(err.value) and str(blocker) in str(err.value)
    assert list(tmp_path.iterdir()) == [blocker]

