"""The typed reader of a dataset's ``manifest.json``: what a preprocessed dataset holds.

:func:`read_manifest` parses the file once into a frozen :class:`Manifest`; every stage (loader,
check, sampling, merge, evaluation, training) reads attributes, never the JSON's keys. The JSON itself
is written by :mod:`hpcdiff.data.preprocess`; ``Manifest.raw`` keeps it verbatim, e.g. for a
checkpoint to record which dataset a run saw.

Layout (schema :data:`SCHEMA_VERSION`): ``targets`` / ``conditions`` / ``static_channels`` (name,
units, normalization statistics; targets also their physical bounds and, where a condition of the same
name and transform exists, the RMS of the residual to it on the training split), ``grid`` (shape, the
window of the full grid, the projection), ``static`` (``static.h5`` and its checksum), ``batch_chunk``
(samples per HDF5 chunk), ``splits`` (shards with sample counts, byte sizes and checksums, and the dates),
``provenance`` (the software that wrote it, :func:`hpcdiff.provenance.provenance`) and
``manifest_sha256``: the SHA-256 of the manifest's own canonical JSON without that key
(:func:`manifest_checksum`), so an edited manifest is refused instead of silently changing what a
dataset means. :func:`write_manifest` is the one way to write the file.

A *conditions-only* dataset (a recipe with ``target: null``: dates without truth) has
``conditions_only: true``, shards without ``target``, and ``normalization_from`` naming the training
dataset whose statistics it reuses (path, ``manifest_sha256``, normalization fingerprint); its
``targets`` / ``conditions`` / ``static_channels`` are that dataset's entries, so the two fingerprints
are equal and the targets' names, units and bounds are there for sampling and merging.

A dataset preprocessed with a ``context:`` section has ``context`` (:class:`~hpcdiff.data.context.
ContextInfo`): the stored days, the box's variables, statistics and cell centres, and every date dropped
because its context was incomplete, with the day it lacked. A *latent* dataset (``hpcdiff encode``) has
``latent`` (:class:`~hpcdiff.data.latent.LatentInfo`): its targets are an autoencoder's latents on a
coarser grid, and the section names the autoencoder and the pixel dataset it encoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpcdiff.config import read_versioned_json
from hpcdiff.data.context import ContextInfo
from hpcdiff.data.latent import LatentInfo
from hpcdiff.data.transforms import Bounds, ChannelStats
from hpcdiff.errors import HpcdiffError
from hpcdiff.timeaxis import calendar_name

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
CHECKSUM_KEY = "manifest_sha256"


@dataclasses.dataclass(frozen=True)
class Channel:
    """One channel of a dataset: ``name``, ``units``, normalization ``stats``; for targets the physical
    ``bounds`` and ``residual_rms`` (RMS over the training split of the normalized target minus its
    same-name condition mapped into the target's normalization; ``None`` where there is none)."""

    name: str
    units: str
    stats: ChannelStats
    bounds: Bounds = (None, None)
    residual_rms: float | None = None


@dataclasses.dataclass(frozen=True)
class Shard:
    path: str  # relative to the dataset folder
    n: int
    sha256: str
    bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class Split:
    n: int
    shards: tuple[Shard, ...]
    dates: tuple[str, ...]  # ISO, in shard order


@dataclasses.dataclass(frozen=True)
class Grid:
    shape: tuple[int, int]  # (H, W) of the dataset
    full_shape: tuple[int, int]  # of the target files' grid the window was cut from
    window: tuple[tuple[int, int], tuple[int, int]]  # (y, x) index ranges [start, stop) in the full grid
    grid_mapping: str | None
    projection: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class NormalizationSource:
    """The training dataset a conditions-only dataset took its normalization from."""

    dataset: str  # its folder, as it was when preprocessing ran
    manifest_sha256: str
    fingerprint: str  # its :meth:`Manifest.fingerprint`


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A dataset as the preprocessing wrote it; ``root`` is the dataset folder."""

    root: Path
    targets: tuple[Channel, ...]
    conditions: tuple[Channel, ...]
    static_channels: tuple[Channel, ...]
    grid: Grid
    static_path: str
    static_sha256: str
    batch_chunk: int
    splits: dict[str, Split]
    recipe: dict[str, Any]
    raw: dict[str, Any] = dataclasses.field(repr=False, compare=False)
    normalization_from: NormalizationSource | None = None  # set for a conditions-only dataset
    calendar: str = "standard"  # of its dates and day numbers (see hpcdiff.timeaxis)
    context: ContextInfo | None = None  # neighbouring days and the large-domain box (recipe context)
    latent: LatentInfo | None = None  # a latent dataset's autoencoder and source (hpcdiff encode)

    @property
    def conditions_only(self) -> bool:
        """No targets in the shards (no truth): conditions to downscale with a run trained elsewhere."""
        return self.normalization_from is not None

    @property
    def target_names(self) -> list[str]:
        return [c.name for c in self.targets]

    @property
    def condition_names(self) -> list[str]:
        """The network's condition channels: dynamic ERA5 channels, then the static ones."""
        return [c.name for c in self.conditions] + [c.name for c in self.static_channels]

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise HpcdiffError(f"{self.root}: no split {name!r} (splits: {', '.join(self.splits)})")
        return self.splits[name]

    def split_dates(self) -> dict[str, list[str]]:
        """Split name -> the ISO dates it holds."""
        return {name: list(split.dates) for name, split in self.splits.items()}

    def target_transforms(self) -> list[tuple[ChannelStats, Bounds]]:
        """``(stats, bounds)`` per target, for :func:`hpcdiff.data.transforms.inverse_transform`."""
        return [(c.stats, c.bounds) for c in self.targets]

    def normalization(self) -> dict[str, list[list[Any]]]:
        """Channel names and the statistics that map them to normalized values (what a trained network
        depends on), by kind."""
        out = {kind: [[c.name, *c.stats.normalization()] for c in getattr(self, kind)]
               for kind in ("targets", "conditions", "static_channels")}
        if self.context is not None and self.context.has_box:
            out["context"] = [[c.name, *c.stats.normalization()] for c in self.context_channels]
        return out

    @property
    def context_channels(self) -> tuple[Channel, ...]:
        """The context box's channels (one per variable; every stored day uses its statistics)."""
        return parse_channels(self.context.box_channels) if self.context is not None else ()

    def fingerprint(self) -> str:
        """SHA-256 of :meth:`normalization`: two datasets with the same fingerprint feed a network the same
        values for the same physical inputs."""
        return normalization_fingerprint(self.normalization())


def canonical_sha256(data: Any) -> str:
    """SHA-256 of the canonical JSON of ``data`` (sorted keys, compact separators): independent of a
    file's indentation and key order."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def normalization_fingerprint(normalization: Mapping[str, Any]) -> str:
    return canonical_sha256(normalization)


def check_replaceable(out: Path) -> None:
    """Refuse an output folder that a new dataset may not replace: anything but a dataset, an empty
    folder or nothing (a safety net against ``--out ~``)."""
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise HpcdiffError(f"{out}: exists and is not a dataset (no {MANIFEST}); refusing to replace it")


def manifest_checksum(data: Mapping[str, Any]) -> str:
    """:func:`canonical_sha256` of ``data`` without :data:`CHECKSUM_KEY`."""
    return canonical_sha256({key: value for key, value in data.items() if key != CHECKSUM_KEY})


def write_manifest(dataset: Path, data: Mapping[str, Any]) -> Path:
    """Write ``dataset/manifest.json`` from ``data``, stamped with its :func:`manifest_checksum`
    (an existing stamp is replaced); returns the path."""
    stamped = {**{k: v for k, v in data.items() if k != CHECKSUM_KEY}, CHECKSUM_KEY: manifest_checksum(data)}
    path = Path(dataset) / MANIFEST
    path.write_text(json.dumps(stamped, indent=1))
    return path


def _check_stamp(data: Mapping[str, Any], path: Path) -> None:
    """Refuse a manifest whose content does not match its :data:`CHECKSUM_KEY`."""
    stored = data.get(CHECKSUM_KEY)
    if stored is None:
        raise HpcdiffError(f"{path}: no {CHECKSUM_KEY} (written by an older hpcdiff); preprocess again")
    if stored != manifest_checksum(data):
        raise HpcdiffError(f"{path}: edited after preprocessing (checksum mismatch); preprocess again")


def read_manifest(dataset: Path) -> Manifest:
    """The dataset's manifest; a one-line error if it is missing, invalid, of another schema, or
    edited after preprocessing (its content no longer matches its ``manifest_sha256``)."""
    path = Path(dataset) / MANIFEST
    data = read_versioned_json(path, version_key="schema_version", version=SCHEMA_VERSION,
                               missing=f"{dataset}: not a dataset (no {MANIFEST}); run hpcdiff preprocess",
                               upgrade="preprocess again")
    _check_stamp(data, path)
    try:
        return parse_manifest(data, root=Path(dataset))
    except (KeyError, TypeError, ValueError) as err:
        raise HpcdiffError(f"{path}: malformed manifest ({type(err).__name__}: {err})") from None


def parse_manifest(data: Mapping[str, Any], *, root: Path) -> Manifest:
    """A :class:`Manifest` from the JSON mapping (raises ``KeyError``/``ValueError`` when malformed)."""
    grid = data["grid"]
    window = grid.get("window") or {"y": [0, grid["shape"][0]], "x": [0, grid["shape"][1]]}
    return Manifest(
        root=Path(root),
        targets=parse_channels(data["targets"]), conditions=parse_channels(data["conditions"]),
        static_channels=parse_channels(data["static_channels"]),
        grid=Grid(shape=_pair(grid["shape"]), full_shape=_pair(grid.get("full_shape", grid["shape"])),
                  window=(_pair(window["y"]), _pair(window["x"])), grid_mapping=grid.get("grid_mapping"),
                  projection=dict(grid.get("projection") or {})),
        static_path=str(data["static"]["path"]), static_sha256=str(data["static"]["sha256"]),
        batch_chunk=int(data["batch_chunk"]),
        splits={name: _split(split) for name, split in data["splits"].items()},
        recipe=dict(data.get("recipe") or {}), raw=dict(data),
        normalization_from=_normalization_from(data),
        calendar=calendar_name(data.get("calendar"), where=f"{root}: manifest"),
        context=ContextInfo.from_json(data.get("context")), latent=LatentInfo.from_json(data.get("latent")))


def _normalization_from(data: Mapping[str, Any]) -> NormalizationSource | None:
    """The source of a conditions-only dataset's normalization; ``None`` for a dataset with targets."""
    if not data.get("conditions_only", False):
        return None
    source = data["normalization_from"]
    return NormalizationSource(dataset=str(source["dataset"]), manifest_sha256=str(source["manifest_sha256"]),
                               fingerprint=str(source["fingerprint"]))


def _pair(values: Sequence[Any]) -> tuple[int, int]:
    if len(values) != 2:
        raise ValueError(f"expected two integers, got {values!r}")
    return int(values[0]), int(values[1])


def parse_channels(entries: Sequence[Mapping[str, Any]]) -> tuple[Channel, ...]:
    """Channels from their manifest entries (``name``, ``units``, ``stats``, optional ``bounds`` and
    ``residual_rms``)."""
    out = []
    for e in entries:
        bounds = e.get("bounds") or (None, None)
        rms = e.get("residual_rms")
        out.append(Channel(name=str(e["name"]), units=str(e["units"]), stats=ChannelStats.of(e["stats"]),
                           bounds=(bounds[0], bounds[1]), residual_rms=None if rms is None else float(rms)))
    return tuple(out)


def _split(entry: Mapping[str, Any]) -> Split:
    shards = tuple(Shard(path=str(s["path"]), n=int(s["n"]), sha256=str(s["sha256"]), bytes=s.get("bytes"))
                   for s in entry["shards"])
    return Split(n=int(entry["n"]), shards=shards, dates=tuple(str(d) for d in entry.get("dates", [])))
