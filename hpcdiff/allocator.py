"""The C heap for large CPU tensors: glibc's malloc settings, applied once per process.

glibc serves an allocation above its mmap threshold (128 KiB, raised as blocks are freed, to 32 MiB at
most) with pages mapped for it alone and unmaps them when it is freed, and it returns a heap top of
more than twice that threshold to the kernel. The next tensor of that size faults in fresh, zeroed
pages again. One feature map of DANRA's full 589 x 789 grid (32 channels, fp32) is 59 MiB, always above
the threshold, so every layer of every network call paid the page faults of its outputs anew: on the
CPU a forward pass at the full grid cost 1.4-1.8x per pixel what the cheapest grid size did, at the same
FLOPs per pixel, and with the settings below it takes 2.2x less time and costs no more per pixel than
any other size (``docs/performance_unet.md``).

:func:`tune_malloc` serves every block from the heap (``M_MMAP_MAX = 0``) and keeps up to 2 GiB of
freed heap top (``M_TRIM_THRESHOLD``), so the pages of one network call are reused by the next. The
price is resident memory: it stays at its peak instead of following the live bytes, and blocks freed
inside the heap stay with the process, so the peak is higher too (at 589 x 789, 1.43x glibc's default
for a sampling call, 1.22x for a training step). The settings apply to host memory only; GPU memory has
its own allocator. It changes nothing where the user chose these settings or an
allocator: ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_`` or their
``GLIBC_TUNABLES`` in the environment, jemalloc / tcmalloc / mimalloc in ``LD_PRELOAD``, or
``HPCDIFF_MALLOC=system``. Not glibc (macOS, musl): nothing to do.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Mapping

from hpcdiff.errors import HpcdiffError

ENV = "HPCDIFF_MALLOC"
CHOICES = ("heap", "system")
# mallopt(3) parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_BYTES = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of freed heap top
# the user's own choice of what this module sets (others, e.g. MALLOC_ARENA_MAX, do not conflict)
_USER_MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
_USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.mmap_max", "glibc.malloc.trim_threshold")
_PRELOADED_MALLOCS = ("jemalloc", "tcmalloc", "mimalloc")

_applied: str | None = None


def user_choice(environ: Mapping[str, str]) -> str | None:
    """Why the process's allocator is left as it is (a sentence), or None to tune it."""
    choice = environ.get(ENV, "heap")
    if choice not in CHOICES:
        raise HpcdiffError(f"environment variable {ENV}={choice!r} must be one of {', '.join(CHOICES)}")
    if choice == "system":
        return f"{ENV}=system"
    for name in _USER_MALLOC_VARS:
        if name in environ:
            return f"{name} is set"
    tunables = environ.get("GLIBC_TUNABLES", "")
    for name in _USER_TUNABLES:
        if name in tunables:
            return f"GLIBC_TUNABLES sets {name}"
    preload = environ.get("LD_PRELOAD", "")
    for lib in _PRELOADED_MALLOCS:
        if lib in preload:
            return f"{lib} is preloaded"
    return None


def tune_malloc(environ: Mapping[str, str] | None = None) -> str:
    """Apply the heap settings to this process once; returns what was done (for logs and tests):
    ``"heap"`` when applied, else why not. Idempotent: later calls return the first answer."""
    global _applied
    if _applied is None:
        _applied = _tune(os.environ if environ is None else environ)
    return _applied


def _tune(environ: Mapping[str, str]) -> str:
    reason = user_choice(environ)
    if reason is not None:
        return f"left as is: {reason}"
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "left as is: not glibc"
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)):
        return "left as is: mallopt refused the settings"
    return "heap"
