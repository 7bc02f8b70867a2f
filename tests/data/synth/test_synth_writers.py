"""Writing a world: its folder, byte-identical reruns, one-line errors, and what ``hpcdiff synth DIR``
may replace (a world, an empty folder) and must leave untouched (anything else)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcdiff.cli import main
from hpcdiff.data.synth import World, is_world, write_world
from hpcdiff.data.synth.writers import check_replaceable
from hpcdiff.errors import HpcdiffError


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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


def test_synth_refuses_a_folder_of_other_files_untouched(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.tex").write_text("years of work\n")
    (out / "sub" / "data.nc").write_bytes(b"\x00\x01")
    before = snapshot(tmp_path)
    assert main(["synth", str(out), "--preset", "tiny", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpcdiff: error: ") and len(err.splitlines()) == 1
    assert str(out) in err and "world.json" in err
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_synth_refuses_a_plain_file_of_that_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "world"
    out.write_text("not a folder\n")
    assert main(["synth", str(out), "--preset", "tiny", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "not a folder" in err
    assert out.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_what_may_be_replaced(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")
    old = tmp_path / "old_world"
    old.mkdir()
    (old / "world.json").write_text(json.dumps({"format_version": 0, "preset": "tiny", "seed": 3, "law": {}}))
    assert is_world(old)
    check_replaceable(old)  # a world of an older format is still a world
    for content in ("{not json", json.dumps({"title": "my own world.json"}), "[1, 2]"):
        (tmp_path / "user").mkdir(exist_ok=True)
        (tmp_path / "user" / "world.json").write_text(content)
        assert not is_world(tmp_path / "user")
        with pytest.raises(HpcdiffError, match="holds no synthetic world"):
            check_replaceable(tmp_path / "user")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(HpcdiffError, match="not a folder"):
        check_replaceable(tmp_path / "dangling")


def test_an_empty_folder_becomes_the_world(tmp_path: Path) -> None:
    out = tmp_path / "world"
    out.mkdir()
    assert write_world(out, preset="tiny", seed=0, progress=False) == out
    assert is_world(out) and (out / "static" / "static.nc").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]
