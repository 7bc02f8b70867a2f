"""Preprocessing scaling (1 vs 2 MPI ranks) and peak memory vs. the number of years.

    python tools/bench_preprocess.py --world WORLD [--work DIR] [--json out.json]

- ``WORLD``: a ``hpcdiff synth --preset bench`` folder (written if missing).
- *scaling*: ``mpiexec -n 1`` and ``mpiexec -n 2`` of ``hpcdiff preprocess preprocess/synthetic.yaml``
  (``OMP_NUM_THREADS=1`` per rank), wall time of the whole command; every run and the best of
  ``--repeat``.
- *memory*: one process under ``/usr/bin/time -v``, every date of the first 3 years vs. every date of
  all years (``split.test_dates=null``), maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "preprocess" / "synthetic.yaml"
VENV_BIN = str(Path(sys.executable).parent)


def preprocess_cmd(world: Path, out: Path, *overrides: str) -> list[str]:
    sets = [arg for o in (f"root={world}", *overrides) for arg in ("--set", o)]
    return [sys.executable, "-m", "hpcdiff.cli", "preprocess", str(RECIPE), "--out", str(out),
            "--no-progress", *sets]


def run(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds, proc.stderr


def scaling(world: Path, work: Path, *, repeat: int) -> dict[str, Any]:
    mpiexec = shutil.which("mpiexec", path=os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")]))
    out: dict[str, Any] = {}
    for ranks in (1, 2):
        runs = [run([mpiexec, "-n", str(ranks), *preprocess_cmd(world, work / f"ds{ranks}")])[0]
                for _ in range(repeat)]
        out[f"ranks_{ranks}_runs_s"] = runs
        out[f"ranks_{ranks}_s"] = min(runs)
    out["speedup"] = out["ranks_1_s"] / out["ranks_2_s"]
    return out


def world_years(world: Path) -> list[int]:
    info = json.loads((world / "world.json").read_text())
    return [int(y) for y in info["years"]]


def peak_rss_mb(world: Path, out: Path, years: list[int]) -> tuple[float, float]:
    """Seconds and max RSS (MiB) of one process over every date of ``years`` (first = train)."""
    size = len(years) // 3
    parts = {"train": years[:size], "val": years[size:2 * size], "test": years[2 * size:]}
    overrides = [f"split.{name}_years={part}" for name, part in parts.items()] + ["split.test_dates=null"]
    seconds, stderr = run(["/usr/bin/time", "-v", *preprocess_cmd(world, out, *overrides)])
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    return seconds, kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (args.world / "world.json").exists():
        from hpcdiff.data.synth import write_world

        write_world(args.world, preset="bench", seed=0, progress=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        results = {"scaling": scaling(args.world, work, repeat=args.repeat)}
        years = world_years(args.world)
        memory = {}
        for subset in (years[:3], years):
            seconds, mib = peak_rss_mb(args.world, work / f"mem{len(subset)}", subset)
            memory[f"{len(subset)}_years"] = {"seconds": seconds, "max_rss_MiB": mib}
        results["memory"] = memory
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
