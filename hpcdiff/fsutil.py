"""Atomic file and folder writes: outputs appear complete under their final name or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hpcdiff.errors import HpcdiffError


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and check that we may write there; one-line error otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HpcdiffError(f"{path}: cannot create output folder ({err.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise HpcdiffError(f"{path}: output folder is not writable")
    return path


@contextlib.contextmanager
def atomic_file(path: Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary lives in the same folder so the final ``os.replace`` is atomic on POSIX file systems.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (an old finished
    ``path`` is removed only after the new one is complete). On failure nothing is left behind."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp_path
        replace_dir(tmp_path, path)
    finally:
        if tmp_path.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)


def replace_dir(tmp: Path, path: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``path`` (same parent); an old ``path`` is moved aside
    first and removed only after the rename."""
    path = Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
