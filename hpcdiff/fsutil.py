"""Atomic file and folder writes: outputs appear complete under their final name or not at all.

An output ``NAME`` is written into a temporary ``.NAME.HOST.PID.RANDOM[SUFFIX].tmp`` next to it and
renamed when complete. Temporaries are created with modes 0666 / 0777 less the umask, as ``open`` and
``mkdir`` would create the output itself, so colleagues sharing a project folder can read the results.
A temporary whose process was killed is removed by the next write of the same output on the same host
(:func:`remove_stale_temporaries`); nothing else is ever removed.

A write that fails because the file system is full, over quota, read-only or not ours
(:data:`WRITE_ERRNOS`) ends as a one-line :class:`~hpcdiff.errors.HpcdiffError` naming the output,
with the temporary removed; :func:`require_free_space` refuses a large write before it starts (HDF5
libraries do not always fail cleanly half-way through).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from hpcdiff.errors import HpcdiffError

_RANDOM_BYTES = 8  # 16 hex digits in a temporary's name
WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
# HDF5 names the system error in its message ("errno = 28") when h5py raises without an errno (closing
# a file); netCDF-C says only RuntimeError("NetCDF: HDF error"): such an error on a file system with less
# than _NEARLY_FULL_BYTES left is taken for a full disk.
_HDF5_ERRNO = re.compile(r"\berrno = (\d+)")
_NEARLY_FULL_BYTES = 1 << 20


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged user may still write on the file system of ``folder`` (or of its nearest
    existing parent, for a folder not created yet)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def require_free_space(folder: Path, needed: int, *, what: str) -> None:
    """One-line error unless the file system of ``folder`` has ``needed`` bytes free for ``what``."""
    free = free_bytes(folder)
    if free < needed:
        raise HpcdiffError(f"{folder}: not enough free space for {what}: needs {format_bytes(needed)}, "
                           f"{format_bytes(free)} free")


def write_failure(err: BaseException, path: Path) -> HpcdiffError | None:
    """The one-line error for a failed write of ``path`` that the user must fix on the file system
    (full, over quota, read-only, not writable), or ``None`` for any other error."""
    code = getattr(err, "errno", None) or (int(m[1]) if (m := _HDF5_ERRNO.search(str(err))) else 0)
    reason = WRITE_ERRNOS.get(code)
    filename = getattr(err, "filename", None)
    if filename and not Path(os.fsdecode(filename)).absolute().is_relative_to(path.absolute().parent):
        reason = None  # about another file (an input that cannot be read): not this output's failure
    if reason is None and isinstance(err, RuntimeError) and "HDF error" in str(err):
        with contextlib.suppress(OSError):
            if free_bytes(path.parent) < _NEARLY_FULL_BYTES:
                reason = WRITE_ERRNOS[errno.ENOSPC]
    if reason is None:
        return None
    return HpcdiffError(f"{path}: cannot write ({reason}); nothing was written")


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Turn a file-system write failure inside the block into a one-line error naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        failure = write_failure(err, path)
        if failure is None:
            raise
        raise failure from None


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
    ``suffix`` goes before ``.tmp`` (``.nc``, ``.h5``), for libraries that look at the extension. A full
    disk or another file-system refusal (:func:`write_failure`) ends as a one-line error naming ``path``.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp_path = create_temporary(path, suffix=suffix, directory=False)
    try:
        with write_errors(path):
            yield tmp_path
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (an old finished
    ``path`` is removed only after the new one is complete). On failure nothing is left behind; a full
    disk or another file-system refusal (:func:`write_failure`) ends as a one-line error naming ``path``."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp_path = create_temporary(path, suffix="", directory=True)
    try:
        with write_errors(path):
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
