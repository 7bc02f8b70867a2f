"""hpcdiff.fsutil: outputs appear whole under their final name, or not at all."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest

from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import (
    atomic_dir,
    atomic_file,
    ensure_writable_dir,
    format_bytes,
    remove_stale_temporaries,
    require_free_space,
    temporary_name,
    write_failure,
)


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


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_outputs_respect_the_umask(tmp_path, umask):
    with atomic_file(tmp_path / "a.nc", suffix=".nc") as tmp:
        tmp.write_text("x")
    with atomic_dir(tmp_path / "ds") as tmp:
        (tmp / "x").write_text("1")
    assert stat.S_IMODE((tmp_path / "a.nc").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "ds").stat().st_mode) == 0o777 & ~umask


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()  # reaped: the pid names no process until the system hands it out again
    return proc.pid


def test_temporary_names_carry_host_and_pid(tmp_path):
    name = temporary_name(tmp_path / "samples.nc", suffix=".nc", pid=123).name
    assert re.fullmatch(r"\.samples\.nc\.[A-Za-z0-9-]+\.123\.[0-9a-f]{16}\.nc\.tmp", name), name
    with atomic_file(tmp_path / "a.txt") as tmp:
        assert re.fullmatch(rf"\.a\.txt\.[A-Za-z0-9-]+\.{os.getpid()}\.[0-9a-f]{{16}}\.tmp", tmp.name)


def test_rerun_removes_temporaries_of_dead_processes_only(tmp_path):
    out, dead = tmp_path / "ds", dead_pid()
    stale, live = temporary_name(out, pid=dead), temporary_name(out, pid=os.getpid())
    for folder in (stale, live):
        folder.mkdir()
        (folder / "shard-0.h5").write_text("half")
    unrelated = [tmp_path / ".ds.old", tmp_path / ".ds.notes.tmp", tmp_path / f".ds.{dead}.tmp",
                 temporary_name(tmp_path / "other", pid=dead), temporary_name(out, suffix=".nc", pid=dead)]
    for path in unrelated:
        path.write_text("keep")
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("1")
    assert not stale.exists() and (live / "shard-0.h5").exists()
    assert all(path.read_text() == "keep" for path in unrelated)
    names = [out.name, live.name, *(p.name for p in unrelated)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_rerun_of_a_file_removes_its_dead_temporary(tmp_path):
    out, dead = tmp_path / "samples.nc", dead_pid()
    stale = temporary_name(out, suffix=".nc", pid=dead)
    stale.write_text("half")
    other_host = stale.with_name(stale.name.replace(f".{dead}.", f"-elsewhere.{dead}.", 1))
    other_host.write_text("another node's")
    with atomic_file(out, suffix=".nc") as tmp:
        tmp.write_text("whole")
    assert not stale.exists() and other_host.exists() and out.read_text() == "whole"


def test_remove_stale_temporaries_reports_what_it_removed(tmp_path):
    stale = temporary_name(tmp_path / "ds", pid=dead_pid())
    stale.mkdir()
    assert remove_stale_temporaries(tmp_path / "ds") == [stale]
    assert remove_stale_temporaries(tmp_path / "ds") == []
    assert remove_stale_temporaries(tmp_path / "missing" / "ds") == []


MIB_OF_FLOATS = np.ones(1 << 18, np.float32)


def _write_h5(path: Path, data: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data)


def _write_nc(path: Path, data: np.ndarray) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("x", data.size)
        nc.createVariable("x", "f4", ("x",))[:] = data


@pytest.mark.parametrize("writer", [_write_h5, _write_nc])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(small_disk, writer):
    disk = small_disk(512)
    target = disk / "out.h5"
    with pytest.raises(HpcdiffError) as err, atomic_file(target, suffix=".h5") as tmp:
        writer(tmp, np.tile(MIB_OF_FLOATS, 2))
    assert str(err.value) == f"{target}: cannot write (no space left on the device); nothing was written"
    assert list(disk.iterdir()) == []


def test_a_full_disk_inside_a_folder_output_leaves_nothing(small_disk):
    disk = small_disk(512)
    with pytest.raises(HpcdiffError, match="report: cannot write .no space left"), \
            atomic_dir(disk / "report") as tmp:
        (tmp / "small.txt").write_text("fits")
        (tmp / "big.bin").write_bytes(bytes(1 << 20))
    assert list(disk.iterdir()) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_file(tmp_path / "out.txt"):
        (tmp_path / "no-such-input").read_text()  # an input's error, not the output's: not rewritten
    with pytest.raises(RuntimeError, match="HDF error"), atomic_file(tmp_path / "out.nc"):
        raise RuntimeError("NetCDF: HDF error")  # plenty of room: not taken for a full disk
    assert list(tmp_path.iterdir()) == []


def test_free_space_is_checked_against_a_real_file_system(small_disk):
    disk = small_disk(256)
    require_free_space(disk, 200 * 1024, what="a small file")
    with pytest.raises(HpcdiffError) as err:
        require_free_space(disk / "not-yet" / "made", 1 << 20, what="the big file")
    assert str(err.value) == f"{disk / 'not-yet' / 'made'}: not enough free space for the big file: needs " \
                             "1.0 MiB, 256.0 KiB free"


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1536, 5 * 2**30, 3 * 2**50)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 GiB", "3072.0 TiB"]


@pytest.mark.parametrize(("err", "reason"), [
    (OSError(28, "No space left on device"), "no space left on the device"),
    (OSError(122, "Disk quota exceeded"), "disk quota exceeded"),
    (RuntimeError("Can't decrement id ref count (file write failed: errno = 28, error message = "
                  "'No space left on device')"), "no space left on the device"),  # h5py closing a file
    (OSError(2, "No such file or directory"), None),
    (RuntimeError("NetCDF: HDF error"), None),  # plenty of room in tmp_path: not a full disk
])
def test_write_failures_are_recognized(tmp_path, err, reason):
    failure = write_failure(err, tmp_path / "out.h5")
    if reason is None:
        assert failure is None
    else:
        assert str(failure) == f"{tmp_path / 'out.h5'}: cannot write ({reason}); nothing was written"
