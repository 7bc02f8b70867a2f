"""What software made an output: hpcdiff's version and commit, and the versions of the libraries that
shape the numbers (torch, DeepSpeed, numpy, xarray, h5py).

Every stage records :func:`provenance` next to what it writes: the dataset's manifest, the run folder
and each checkpoint, the merged samples' global attributes and the evaluation report. The result is
computed once per process.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path

import hpcdiff

# Distribution names as pip knows them, keyed by how the provenance records them.
PACKAGES = {"torch": "torch", "deepspeed": "deepspeed", "numpy": "numpy", "xarray": "xarray", "h5py": "h5py"}
UNKNOWN = "unknown"
ABSENT = "absent"
GIT_TIMEOUT_S = 5.0


def git_commit(folder: Path) -> str:
    """The commit checked out in the git work tree whose top folder holds the package folder ``folder``
    (with ``-dirty`` when tracked files have uncommitted changes), or ``"unknown"`` when there is none
    (an installed package, even one inside some other repository) or git is unavailable."""
    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=True)
        return proc.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(folder).resolve().parent:
            return UNKNOWN
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return f"{commit}-dirty" if dirty else commit


def package_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``"absent"``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ABSENT


@functools.cache
def _cached() -> tuple[tuple[str, str], ...]:
    versions = {"hpcdiff": hpcdiff.__version__, "hpcdiff_commit": git_commit(Path(hpcdiff.__file__).parent)}
    versions.update({name: package_version(dist) for name, dist in PACKAGES.items()})
    return tuple(versions.items())


def provenance() -> dict[str, str]:
    """``{"hpcdiff": version, "hpcdiff_commit": commit, "torch": ..., "deepspeed": ..., "numpy": ...,
    "xarray": ..., "h5py": ...}``; a fresh dict on every call (cached per process)."""
    return dict(_cached())


def software_versions() -> dict[str, str]:
    """The library versions of :func:`provenance`, without hpcdiff's own version and commit."""
    return {k: v for k, v in provenance().items() if k in PACKAGES}
