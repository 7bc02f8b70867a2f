"""Training checkpoints: step-numbered folders, written atomically, the last K kept.

Layout of ``RUN/checkpoints/``::

    step-00000200/ds/...        DeepSpeed engine state (model, optimizer, LR schedule; per-rank files)
    step-00000200/state.pt      rank 0: step, loader position, EMA (fp32), model spec, resolved config
    step-00000200/rng-<rank>.pt every rank's torch / numpy / python RNG states
    latest                      name of the newest complete checkpoint

All ranks write into ``.step-00000200.tmp``; after a barrier rank 0 renames it and then updates
``latest``, so a checkpoint folder under its final name is always complete. ``state.pt`` holds plain
tensors and containers only and is read with ``weights_only=True``: it is all sampling needs.
"""

from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_file
from hpcdiff.runspec import RunSpec

DS_TAG = "ds"
# What every reader of state.pt relies on (sampling, evaluation, resume).
STATE_KEYS = frozenset({"step", "ema", "run_spec", "config", "manifest"})


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as weights_only-loadable containers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))


def save(root: Path, *, step: int, engine: Any, state: dict[str, Any], rank: int, keep_last: int,
         barrier: Any) -> Path:
    """Write checkpoint ``step`` collectively (every rank calls this); returns its final folder."""
    final = step_dir(root, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    engine.save_checkpoint(str(tmp), tag=DS_TAG, save_latest=False)
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    if rank == 0:
        torch.save(state, tmp / "state.pt")
    barrier()
    if rank == 0:
        if final.exists():  # a rerun of the same step after a crash between rename and 'latest'
            shutil.rmtree(final)
        tmp.rename(final)
        with atomic_file(Path(root) / "latest") as latest_tmp:
            latest_tmp.write_text(final.name + "\n")
        prune(root, keep_last=keep_last)
    barrier()
    return final


def prune(root: Path, *, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, and stale temporaries."""
    for stale in Path(root).glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    return sorted(p for p in Path(root).glob("step-*") if (p / "state.pt").is_file())


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``latest`` file first, else the highest step)."""
    pointer = Path(root) / "latest"
    if pointer.is_file():
        candidate = Path(root) / pointer.read_text().strip()
        if (candidate / "state.pt").is_file():
            return candidate
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``None``/``"never"`` → start fresh; ``"auto"`` → latest if any; otherwise a checkpoint path."""
    if resume in (None, "never"):
        return None
    if resume == "auto":
        return latest(root)
    path = Path(resume)
    if path.is_dir() and not (path / "state.pt").is_file():
        path = latest(path) or path
    if not (path / "state.pt").is_file():
        raise HpcdiffError(f"{resume}: not a checkpoint (no state.pt)")
    return path


def load_state(path: Path) -> dict[str, Any]:
    """Read ``state.pt`` of a checkpoint folder (safe load, CPU)."""
    try:
        state = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # garbage bytes, or objects other than tensors and containers
        raise HpcdiffError(f"{path}/state.pt: cannot load checkpoint (not a state file of tensors and "
                           "containers: damaged, or not written by hpcdiff)") from None
    except (OSError, RuntimeError, EOFError) as err:
        raise HpcdiffError(f"{path}/state.pt: cannot load checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or not state.keys() >= STATE_KEYS:
        raise HpcdiffError(f"{path}/state.pt: not an hpcdiff checkpoint (expected a mapping with "
                           f"{', '.join(sorted(STATE_KEYS))})")
    return state


def load(path: Path, *, engine: Any, rank: int) -> dict[str, Any]:
    """Restore the engine (model, optimizer, LR schedule) and this rank's RNGs; return ``state.pt``."""
    state = load_state(path)
    loaded, _ = engine.load_checkpoint(str(path), tag=DS_TAG, load_optimizer_states=True,
                                       load_lr_scheduler_states=True)
    if loaded is None:
        raise HpcdiffError(f"{path}: DeepSpeed could not load the engine state")
    rng_file = Path(path) / f"rng-{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state


def check_compatible(state: dict[str, Any], *, spec: RunSpec, path: Path,
                     dataset: Path | None = None) -> None:
    """Refuse to resume a checkpoint whose run spec differs from the job's: another architecture,
    parameterization, or a dataset normalized with other statistics (both datasets named)."""
    saved = RunSpec.from_state(state.get("run_spec"), where=f"{path}/state.pt")
    if saved.normalization != spec.normalization:
        before = state.get("config", {}).get("data", {}).get("dataset", "?")
        raise HpcdiffError(f"{path}: the checkpoint was trained on {before} (normalization "
                           f"{saved.normalization[:12]}), but the job's dataset {dataset or ''} has other "
                           f"normalization statistics ({spec.normalization[:12]}); resume on the same "
                           "dataset")
    diff = saved.mismatch(spec)
    if diff:
        raise HpcdiffError(f"{path}: the checkpoint's run differs from the job's ({'; '.join(diff)})")
