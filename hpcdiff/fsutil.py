"""Atomic file and folder writes: outputs appear complete under their final name or not at all.

An output ``NAME`` is written into a temporary ``.NAME.HOST.PID.RANDOM[SUFFIX].tmp`` next to it and
renamed when complete. Temporaries are created with modes 0666 / 0777 less the umask, as ``open`` and
``mkdir`` would create the output itself, so colleagues sharing a project folder can read the results.
A temporary whose process was killed is removed by the next write of the same output on the same host
(:func:`remove_stale_temporaries`); nothing else is ever removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from hpcdiff.errors import HpcdiffError

_RANDOM_BYTES = 8  # 16 hex digits in a temporary's name


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


def _host() -> str:
    """This host's name as it appears in temporaries' names (letters, digits and ``-``)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"


def temporary_name(path: Path, *, suffix: str = "", pid: int | None = None) -> Path:
    """A fresh temporary name for ``path``, in its folder: ``.NAME.HOST.PID.RANDOM{suffix}.tmp``
    (``pid`` defaults to this process)."""
    path = Path(path)
    pid = os.getpid() if pid is None else pid
    return path.with_name(f".{path.name}.{_host()}.{pid}.{secrets.token_hex(_RANDOM_BYTES)}{suffix}.tmp")


def _temporary_pattern(path: Path, suffix: str) -> re.Pattern[str]:
    name = re.escape(f".{Path(path).name}.")
    return re.compile(rf"{name}(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[0-9a-f]{{{2 * _RANDOM_BYTES}}}"
                      + re.escape(f"{suffix}.tmp"))


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (signal 0 checks without signalling)."""
    if pid <= 0:
        return True  # 0 and negative numbers address process groups: never take them for a dead process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or a number we did not write: keep its temporary
    return True


def remove_stale_temporaries(path: Path, *, suffix: str = "") -> list[Path]:
    """Remove the temporaries of output ``path`` (made by :func:`atomic_file` with the same ``suffix``,
    or by :func:`atomic_dir`) that were created on this host by a process that no longer exists.
    Temporaries of other hosts (a shared file system) and of live processes are kept, and so is
    everything whose name does not match. Returns the removed paths."""
    path = Path(path)
    pattern, host, prefix = _temporary_pattern(path, suffix), _host(), f".{path.name}."
    try:
        # Names only, no stat: a part folder may hold thousands of files on a parallel file system.
        names = [name for name in os.listdir(path.parent) if name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match["host"] != host or _process_alive(int(match["pid"])):
            continue
        entry = path.parent / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def create_temporary(path: Path, *, suffix: str, directory: bool) -> Path:
    """Create a new temporary for ``path`` (a file or an empty folder) with the umask's permissions."""
    remove_stale_temporaries(path, suffix=suffix)
    while True:
        tmp = temporary_name(path, suffix=suffix)
        try:
            if directory:
                os.mkdir(tmp, 0o777)  # the kernel applies the umask (and a default ACL, if any)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue  # a clash of 64 random bits: draw again
        except OSError as err:
            raise HpcdiffError(f"{path.parent}: cannot create a temporary for {path.name} "
                               f"({err.strerror})") from None
        return tmp


@contextlib.contextmanager
def atomic_file(path: Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary lives in the same folder so the final ``os.replace`` is atomic on POSIX file systems.
    ``suffix`` goes before ``.tmp`` (``.nc``, ``.h5``), for libraries that look at the extension.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp_path = create_temporary(path, suffix=suffix, directory=False)
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
    tmp_path = create_temporary(path, suffix="", directory=True)
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
