"""The sampling plan: what a sampling run must contain, fixed at its first start (``SAMPLES/plan.json``).

A rerun (a resumed task, another array chunk, a resubmission) reads the same plan and must agree with
it: another checkpoint, sampler, seed or set of dates is refused. The plan is written atomically and
exclusively (:func:`write_plan`), so two first starts with different plans cannot both succeed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from hpcdiff.config import from_dict, read_versioned_json, to_dict
from hpcdiff.data.manifest import Channel, parse_channels
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import create_temporary, ensure_writable_dir

PLAN = "plan.json"
PLAN_VERSION = 2


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """Dates x members from one checkpoint with one sampler. ``targets``: the manifest entries of the
    target channels the network was trained with (names, units, statistics, bounds): what ``merge``
    needs to turn parts into physical units."""

    run: str
    checkpoint: str
    checkpoint_step: int
    checkpoint_sha256: str
    dataset: str
    dates: list[str]
    members: int
    sampler: str
    steps: int
    spacing: str
    eta: float
    seed: int
    precision: str
    image_shape: tuple[int, int]
    targets: list[dict[str, Any]]
    tile: tuple[int, int] | None = None  # overlapping tiles of this size (None: the whole grid per call)
    tile_overlap: int = 0
    version: int = PLAN_VERSION

    @property
    def channels(self) -> list[str]:
        return [t["name"] for t in self.targets]

    def target_channels(self) -> tuple[Channel, ...]:
        return parse_channels(self.targets)

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=1)


def read_plan(out: Path) -> SamplePlan:
    path = Path(out) / PLAN
    data = read_versioned_json(path, version_key="version", version=PLAN_VERSION,
                               missing=f"{out}: not a sampling output (no {PLAN})",
                               upgrade="sample into a new folder")
    return from_dict(SamplePlan, data, where=str(path))


def write_plan(out: Path, plan: SamplePlan) -> None:
    """Create ``plan.json``, or check that the existing one (an earlier or concurrent start) agrees.
    Creation is exclusive (a hard link of a finished temporary), so of two simultaneous first starts
    exactly one writes and the other compares."""
    path = Path(out) / PLAN
    ensure_writable_dir(Path(out))
    if not path.is_file():
        tmp = create_temporary(path, suffix="", directory=False)
        try:
            tmp.write_text(plan.to_json())
            with contextlib.suppress(FileExistsError):  # another start created it first: compare below
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    old, new = to_dict(read_plan(out)), to_dict(plan)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise HpcdiffError(f"{out}: holds a sampling run with a different plan ({', '.join(diff)} differ); "
                           "use another --out or remove it")

