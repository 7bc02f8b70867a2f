"""Training checkpoints: step-numbered folders, written atomically, checksummed, the last K kept.

Layout of ``RUN/checkpoints/``::

    step-00000200/state.pt            rank 0: step, loader position, EMA (fp32), model spec, resolved config
    step-00000200/engine.pt           rank 0: module weights (training precision), LR schedule, DeepSpeed's
                                      step counters, layout (ZeRO stage, dtype, ranks)
    step-00000200/optimizer.pt        ZeRO 0: the optimizer state (the same on every rank; rank 0 writes it)
    step-00000200/optimizer-<rank>.pt ZeRO 1/2: every rank's partition of the optimizer state
    step-00000200/rng-<rank>.pt       every rank's torch / numpy / python RNG states
    step-00000200/checksums.json      SHA-256 of every other file of the folder
    latest                            name of the newest complete checkpoint

**Atomic.** All ranks write into ``.step-00000200.tmp``; after a barrier rank 0 writes
``checksums.json`` and renames the folder, then updates ``latest``. A folder under its final name
without ``checksums.json`` is not a checkpoint: :func:`latest` and :func:`list_checkpoints` skip it, and
resuming one (a checkpoint of an hpcdiff that predates checksums) is refused with a one-line error.

**Safe to load.** Every file holds tensors and plain containers only and is read with
``torch.load(weights_only=True)``, so a crafted file cannot run code. DeepSpeed never reads a checkpoint:
:mod:`hpcdiff.train.engine` turns the engine's module, optimizer and LR-schedule state dicts into plain
data and loads them back (ZeRO 1/2 partitions need the same number of ranks).

**Verified before use.** Each rank hashes the files it wrote and rank 0 collects the digests into
``checksums.json``. :func:`load` checks that the folder holds exactly the recorded files and that every
digest matches before it unpickles anything; :func:`load_state` (all sampling reads) checks ``state.pt``'s
digest only. A mismatch, a missing or extra file, or bytes that do not load are a one-line
:class:`~hpcdiff.errors.HpcdiffError` naming the file.
"""

from __future__ import annotations

import collections
import json
import pickle
import random
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpcdiff.data.shards import file_sha256
from hpcdiff.dist import all_reduce_sum
from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_file, write_errors
from hpcdiff.runspec import AnySpec, spec_from_state
from hpcdiff.train import engine as ds

STATE = "state.pt"
ENGINE = "engine.pt"
CHECKSUMS = "checksums.json"
CHECKSUMS_FORMAT = "hpcdiff-checkpoint-checksums/1"
# What a damaged or hostile file raises inside torch.load (UnpicklingError covers weights_only refusals).
LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError)
# What restoring well-formed but foreign state raises inside torch / DeepSpeed.
RESTORE_ERRORS = (KeyError, IndexError, TypeError, ValueError, RuntimeError, AssertionError, AttributeError)
# What torch.load(weights_only=True) reads back without extra allowed globals (exact types: a defaultdict
# or an enum would be refused at resume).
MAPPINGS = (dict, collections.OrderedDict)
SEQUENCES = (list, tuple, set, torch.Size)
LEAVES = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device)
# What every reader of state.pt relies on (sampling, evaluation, resume).
STATE_KEYS = frozenset({"step", "ema", "run_spec", "config", "manifest"})


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def rng_file(rank: int) -> str:
    return f"rng-{rank}.pt"


def optimizer_file(rank: int, *, partitioned: bool) -> str:
    """``optimizer-<rank>.pt`` for a ZeRO partition, else ``optimizer.pt`` (one replicated state)."""
    return f"optimizer-{rank}.pt" if partitioned else "optimizer.pt"


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


# --- writing ---------------------------------------------------------------------------------------


def save(root: Path, *, step: int, engine: Any, state: dict[str, Any], rank: int, keep_last: int,
         barrier: Callable[[], None]) -> Path:
    """Write checkpoint ``step`` collectively (every rank calls this); returns its final folder."""
    final = step_dir(root, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    _agree_written(tmp, lambda: _write_rank_files(tmp, engine=engine, state=state, rank=rank))
    if rank == 0:
        _write_checksums(tmp, _collect_digests(tmp))
        if final.exists():  # a rerun of the same step after a crash between rename and 'latest'
            shutil.rmtree(final)
        tmp.rename(final)
        with atomic_file(Path(root) / "latest") as latest_tmp:
            latest_tmp.write_text(final.name + "\n")
        prune(root, keep_last=keep_last)
    barrier()
    return final


def _agree_written(tmp: Path, write: Callable[[], None]) -> None:
    """Run this rank's ``write`` and agree with every rank on the outcome (an all-reduce, so it is also
    the barrier after the writes): a rank whose disk is full raises its one-line error, and the others
    raise one too instead of waiting for it forever. The incomplete ``tmp`` is never renamed."""
    error = None
    try:
        with write_errors(tmp):
            write()
    except HpcdiffError as err:
        error = str(err)
    failed = all_reduce_sum(torch.tensor([0.0 if error is None else 1.0], dtype=torch.float64))
    if float(failed[0]) > 0:
        raise HpcdiffError(error or f"{tmp}: another rank could not write its part of the checkpoint")


def _write_rank_files(tmp: Path, *, engine: Any, state: dict[str, Any], rank: int) -> None:
    """This rank's files, and ``.digests-<rank>.json`` with their SHA-256 for rank 0 to collect."""
    partitioned = ds.optimizer_is_partitioned(ds.engine_layout(engine))
    files: dict[str, Any] = {rng_file(rank): rng_state()}
    if partitioned or rank == 0:
        files[optimizer_file(rank, partitioned=partitioned)] = ds.optimizer_state(engine)
    if rank == 0:
        files.update({STATE: state, ENGINE: ds.engine_state(engine)})
    digests = {}
    for name, obj in files.items():
        _check_plain(obj, where=name)
        torch.save(obj, tmp / name)
        digests[name] = file_sha256(tmp / name)
    (tmp / f".digests-{rank}.json").write_text(json.dumps(digests))


def _check_plain(obj: Any, *, where: str) -> None:
    """Refuse to write what ``weights_only=True`` could not read back (found now, not at resume)."""
    if type(obj) in MAPPINGS:
        for key, value in obj.items():
            _check_plain(key, where=where)
            _check_plain(value, where=f"{where}[{key!r}]")
    elif type(obj) in SEQUENCES:
        for i, value in enumerate(obj):
            _check_plain(value, where=f"{where}[{i}]")
    elif not (type(obj) in LEAVES or isinstance(obj, torch.Tensor)):
        raise HpcdiffError(f"cannot checkpoint {where}: type {type(obj).__qualname__} is not plain data "
                           "(weights_only=True could not read it back)")


def _collect_digests(tmp: Path) -> dict[str, str]:
    """Merge the ranks' ``.digests-*.json`` (and remove them); every file must have been reported."""
    digests: dict[str, str] = {}
    for part in sorted(tmp.glob(".digests-*.json")):
        digests.update(json.loads(part.read_text()))
        part.unlink()
    unreported = sorted(set(_listing(tmp)) - set(digests))
    if unreported:
        raise HpcdiffError(f"{tmp}: no rank reported a checksum for {', '.join(unreported)}")
    return digests


def write_checksums(folder: Path) -> None:
    """Hash every file of ``folder`` into its ``checksums.json``: seals a checkpoint folder made by other
    means (a benchmark's synthetic one). :func:`save` writes it itself."""
    folder = Path(folder)
    _write_checksums(folder, {name: file_sha256(folder / name) for name in _listing(folder)})


def _write_checksums(folder: Path, digests: dict[str, str]) -> None:
    record = {"format": CHECKSUMS_FORMAT, "algorithm": "sha256", "files": dict(sorted(digests.items()))}
    (folder / CHECKSUMS).write_text(json.dumps(record, indent=1) + "\n")  # the folder rename commits it


def prune(root: Path, *, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, and stale temporaries."""
    for stale in Path(root).glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


# --- finding ---------------------------------------------------------------------------------------


def is_complete(path: Path) -> bool:
    """A checkpoint folder with its ``state.pt`` and ``checksums.json`` (contents are checked at load)."""
    return (Path(path) / STATE).is_file() and (Path(path) / CHECKSUMS).is_file()


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    return sorted(p for p in Path(root).glob("step-*") if is_complete(p))


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``latest`` file first, else the highest step)."""
    pointer = Path(root) / "latest"
    if pointer.is_file():
        candidate = Path(root) / pointer.read_text().strip()
        if is_complete(candidate):
            return candidate
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """``None``/``"never"`` → start fresh; ``"auto"`` → latest if any; otherwise a checkpoint path.
    Checkpoints without checksums (written before hpcdiff recorded them) are refused, not skipped."""
    if resume in (None, "never"):
        return None
    if resume == "auto":
        return _latest_with_checksums(root)
    path = Path(resume)
    if path.is_dir() and not (path / STATE).is_file():
        path = _latest_with_checksums(path) or path
    if not (path / STATE).is_file():
        raise HpcdiffError(f"{resume}: not a checkpoint (no state.pt)")
    return path


def _latest_with_checksums(root: Path) -> Path | None:
    found = latest(root)
    unsealed = sorted(p for p in Path(root).glob("step-*") if (p / STATE).is_file() and not is_complete(p))
    if found is None and unsealed:
        raise _predates_checksums(unsealed[-1])
    return found


def _predates_checksums(path: Path) -> HpcdiffError:
    return HpcdiffError(f"{path}: checkpoint has no {CHECKSUMS} (written before hpcdiff checksummed "
                        "checkpoints); it cannot be verified, so it is not loaded: start a new run folder")


# --- verifying and reading -------------------------------------------------------------------------


def _listing(folder: Path) -> list[str]:
    """The entries of a checkpoint folder that checksums cover (all but ``checksums.json`` and the ranks'
    digest reports)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name != CHECKSUMS and not p.name.startswith(".digests-"))


def read_checksums(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` from a checkpoint's ``checksums.json``."""
    file = Path(path) / CHECKSUMS
    if not file.is_file():
        raise _predates_checksums(Path(path))
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise HpcdiffError(f"{file}: unreadable ({_first_line(err)})") from None
    files = record.get("files") if isinstance(record, dict) else None
    valid = isinstance(files, dict) and all(isinstance(x, str) for item in files.items() for x in item)
    if not valid or record.get("format") != CHECKSUMS_FORMAT:
        raise HpcdiffError(f"{file}: not an hpcdiff checksums file ({CHECKSUMS_FORMAT})")
    return files


def verify(path: Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """Check ``names`` (default: the whole folder, which must hold exactly the recorded files) against
    ``checksums.json``; returns the recorded checksums. Reads no file's contents but to hash it."""
    path = Path(path)
    recorded = read_checksums(path)
    if names is None:
        present = set(_listing(path))
        missing, extra = sorted(set(recorded) - present), sorted(present - set(recorded))
        if missing:
            raise HpcdiffError(f"{path}: {', '.join(missing)} missing ({CHECKSUMS} lists it)")
        if extra:
            raise HpcdiffError(f"{path}: {', '.join(extra)} not part of the checkpoint ({CHECKSUMS} does not "
                               "list it)")
    for name in sorted(recorded) if names is None else names:
        _verify_file(path, name, recorded)
    return recorded


def _verify_file(path: Path, name: str, recorded: dict[str, str]) -> None:
    file = path / name
    if name not in recorded:
        raise HpcdiffError(f"{file}: not listed in {CHECKSUMS}")
    try:
        digest = file_sha256(file)
    except OSError as err:
        raise HpcdiffError(f"{file}: cannot read ({err.strerror or _first_line(err)})") from None
    if digest != recorded[name]:
        raise HpcdiffError(f"{file}: SHA-256 does not match {CHECKSUMS} (the file is damaged or was changed)")


def _read(path: Path, name: str) -> Any:
    """``torch.load(weights_only=True)`` of a verified file on the CPU; any failure is one line."""
    file = Path(path) / name
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4 ...": the error below says what matters
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise HpcdiffError(f"{file}: not a loadable checkpoint file (refused by the weights-only loader: "
                           f"{_refusal(err)})") from None
    except LOAD_ERRORS as err:
        raise HpcdiffError(f"{file}: cannot load checkpoint file ({_first_line(err)})") from None


def _refusal(err: pickle.UnpicklingError) -> str:
    """The line of torch's long weights-only message that names what was refused."""
    lines = [line.strip() for line in str(err).splitlines() if "Unsupported" in line]
    return lines[0].split(". ")[0].removeprefix("WeightsUnpickler error: ") if lines else _first_line(err)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].split('. ')[0]}" if lines else type(err).__name__


def _read_state(path: Path) -> dict[str, Any]:
    state = _read(path, STATE)
    if not isinstance(state, dict):
        raise HpcdiffError(f"{Path(path) / STATE}: not a checkpoint state (a {type(state).__name__})")
    return state


def _optimizer_name(recorded: dict[str, str], rank: int) -> str | None:
    """``optimizer.pt`` (ZeRO 0) or this rank's ``optimizer-<rank>.pt`` (ZeRO 1/2), whichever is there."""
    for partitioned in (False, True):
        name = optimizer_file(rank, partitioned=partitioned)
        if name in recorded:
            return name
    return None


def load_state(path: Path) -> dict[str, Any]:
    """``state.pt`` of a checkpoint folder (verified against ``checksums.json``, safe load, CPU): all that
    sampling reads. The other files are neither read nor hashed."""
    verify(path, [STATE])
    state = _read_state(path)
    if not state.keys() >= STATE_KEYS:
        raise HpcdiffError(f"{Path(path) / STATE}: not an hpcdiff checkpoint state (expected a mapping with "
                           f"{', '.join(sorted(STATE_KEYS))})")
    return state


def load(path: Path, *, engine: Any, rank: int) -> dict[str, Any]:
    """Restore the engine (model, optimizer, LR schedule) and this rank's RNGs; return ``state.pt``.

    Every file of the folder is verified first (each rank checks all of them, so all ranks stop alike on a
    damaged checkpoint), then this rank's files are read, and only then is the engine touched."""
    path = Path(path)
    recorded = verify(path)
    state, shared = _read_state(path), _read(path, ENGINE)
    optimizer_name = _optimizer_name(recorded, rank)
    optimizer = None if optimizer_name is None else _read(path, optimizer_name)
    rng = _read(path, rng_file(rank)) if rng_file(rank) in recorded else None
    try:
        ds.check_layout(engine, shared["layout"], where=str(path))
        if optimizer is None:
            raise HpcdiffError(f"{path}: no optimizer state for rank {rank}")
        ds.restore_engine(engine, shared, optimizer, rank=rank)
        if rng is not None:  # a rank the saving run did not have keeps its fresh seed
            set_rng_state(rng)
    except RESTORE_ERRORS as err:
        raise HpcdiffError(f"{path}: cannot restore the training state ({_first_line(err)})") from None
    return state


def check_compatible(state: dict[str, Any], *, spec: AnySpec, path: Path,
                     dataset: Path | None = None) -> None:
    """Refuse to resume a checkpoint whose run spec differs from the job's: another kind of run, another
    architecture, parameterization, or a dataset normalized with other statistics (both datasets named)."""
    saved = spec_from_state(state.get("run_spec"), where=f"{path}/state.pt")
    if saved.normalization != spec.normalization:
        before = state.get("config", {}).get("data", {}).get("dataset", "?")
        raise HpcdiffError(f"{path}: the checkpoint was trained on {before} (normalization "
                           f"{saved.normalization[:12]}), but the job's dataset {dataset or ''} has other "
                           f"normalization statistics ({spec.normalization[:12]}); resume on the same "
                           "dataset")
    diff = saved.mismatch(spec)
    if diff:
        raise HpcdiffError(f"{path}: the checkpoint's run differs from the job's ({'; '.join(diff)})")
