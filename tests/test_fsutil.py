"""hpcdiff.fsutil: outputs appear whole under their final name, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_dir, atomic_file, ensure_writable_dir


def test_atomic_file_success_and_failure(tmp_path):
    target = tmp_path / "a.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("one")
        assert not target.exists()
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "ds"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "x").write_text("2")
        raise RuntimeError("killed")
    assert (target / "x").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "y").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_unwritable_location_even_for_root():
    # /proc refuses new folders whatever the user; a read-only mount behaves the same way.
    with pytest.raises(HpcdiffError, match="/proc/hpcdiff-out: cannot create output folder"):
        ensure_writable_dir(Path("/proc/hpcdiff-out"))


def test_output_below_a_file_is_an_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(HpcdiffError, match="cannot create output folder"):
        ensure_writable_dir(tmp_path / "file" / "sub")
