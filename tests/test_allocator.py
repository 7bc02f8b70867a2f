"""The C heap settings (hpcdiff.allocator): observed through glibc's own accounting (mallinfo2) in a fresh
process, since they are process-wide and cannot be undone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from hpcdiff.allocator import user_choice
from hpcdiff.errors import HpcdiffError

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# Allocates a 64 MiB tensor (above any mmap threshold glibc would choose) and frees it; reports the bytes
# it added to mmapped blocks while it lives and what the heap grew by and kept after the free.
PROBE = r"""
import ctypes, json, sys
SETUP
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2()  # what imports mapped and grew before the settings stays as it is
big = torch.ones(64 * 2**20, dtype=torch.uint8)
mapped = libc.mallinfo2().hblkhd - before.hblkhd
del big
heap_kept = libc.mallinfo2().arena - before.arena
print(json.dumps({"answer": ANSWER, "mapped": mapped, "heap_kept": heap_kept}))
"""
MiB = 2**20


def probe(setup: str, answer: str, env: dict[str, str]) -> dict:
    code = PROBE.replace("SETUP", setup).replace("ANSWER", answer)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "HPCDIFF_MALLOC"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**clean, "OMP_NUM_THREADS": "1", **env}, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


TUNE = "from hpcdiff.allocator import tune_malloc; answer = tune_malloc()"


def test_large_tensors_come_from_the_heap_and_stay_there():
    tuned = probe(TUNE, "answer", {})
    assert tuned["answer"] == "heap"
    assert tuned["mapped"] == 0  # served from the heap, not a mapping of its own
    assert tuned["heap_kept"] >= 64 * MiB  # kept for the next tensor, not trimmed

    default = probe(TUNE, "answer", {"HPCDIFF_MALLOC": "system"})
    assert default["answer"] == "left as is: HPCDIFF_MALLOC=system"
    assert default["mapped"] >= 64 * MiB  # glibc's default: a mapping of its own, unmapped on free
    assert default["heap_kept"] < 64 * MiB


def test_the_command_line_sets_up_the_heap_before_any_command():
    # `hpcdiff check` on a folder that is no dataset: the command fails, the heap setting is in place
    cli = "from hpcdiff.cli import main; main(['check', '/nonexistent/dataset'])"
    assert probe(cli, "None", {})["mapped"] == 0
    assert probe(cli, "None", {"HPCDIFF_MALLOC": "system"})["mapped"] >= 64 * MiB


def test_a_users_own_malloc_settings_are_left_alone():
    user = probe(TUNE, "answer", {"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert user["answer"] == "left as is: MALLOC_MMAP_THRESHOLD_ is set"
    assert user["mapped"] >= 64 * MiB
    assert user_choice({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) == \
        "GLIBC_TUNABLES sets glibc.malloc.trim_threshold"
    assert user_choice({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}) == "jemalloc is preloaded"
    assert user_choice({"MALLOC_ARENA_MAX": "2"}) is None  # does not touch what is set here
    assert user_choice({}) is None


def test_an_unknown_choice_is_a_clear_error():
    with pytest.raises(HpcdiffError, match=r"HPCDIFF_MALLOC='jemalloc' must be one of heap, system"):
        user_choice({"HPCDIFF_MALLOC": "jemalloc"})
