"""Latent datasets: a dataset encoded once by an autoencoder run (``hpcdiff encode``, :mod:`hpcdiff.data.
encode`), for diffusion in the latent space (Rombach et al. 2022).

A latent dataset has the shard format and manifest of any dataset, on the *latent grid*
``(ceil(H / f), ceil(W / f))`` of the autoencoder's factor ``f``:

- ``target`` ``[n, Cl, h, w]``: the encoder's posterior means, normalized per latent channel by their
  statistics over the training split (recorded as the targets' ``stats``; channels ``z0``, ``z1``, ...);
- ``cond`` ``[n, Cc (+ Cl), h, w]``: the source's normalized conditions, brought to the latent grid by
  :func:`block_mean`, then (unless encoded without it) the *encoded baseline*: the source's ERA5
  baseline of the targets (:class:`~hpcdiff.data.residual.Residual`, the targets' own ERA5 channels
  mapped into their normalization) through the encoder, normalized like the latents and named like them
  (``z0``, ...), so that ``diffusion.residual: true`` diffuses the latents' residual to it exactly as a
  pixel run diffuses the targets' residual to ERA5 (its scale, the residual's RMS over the training
  split, is the latent targets' ``residual_rms``); ``static.h5`` holds the statics brought to the grid
  by block means (the land-sea mask becomes the land fraction of each latent cell);
- the manifest's ``latent`` section (:class:`LatentInfo`): the factor, the source dataset (its grid,
  normalization fingerprint and target entries), and the autoencoder (its run, checkpoint, spec and the
  file ``autoencoder.pt`` in the dataset holding its weights, with its SHA-256).

A cell of the latent grid covers the ``f x f`` block of the source grid that the autoencoder's padding
(:func:`hpcdiff.models.unet.grid_padding`: split evenly, the odd one after) puts under it;
:func:`block_mean` averages the *source* pixels of that block (padding pixels do not count), so training
(conditions from the shards) and sampling (conditions of a pixel dataset, brought to the latent grid at
run time) see the same values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hpcdiff.errors import HpcdiffError

AUTOENCODER_FILE = "autoencoder.pt"


def _padding(size: int, factor: int) -> tuple[int, int]:
    """As :func:`hpcdiff.models.unet.grid_padding` (not imported: this module stays free of torch)."""
    extra = -size % factor
    return extra // 2, extra - extra // 2


def latent_grid(shape: tuple[int, int], factor: int) -> tuple[int, int]:
    """``(ceil(H / f), ceil(W / f))``."""
    return -(-shape[0] // factor), -(-shape[1] // factor)


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """``x [..., H, W]`` -> ``[..., ceil(H / f), ceil(W / f)]``: the mean of each latent cell's source pixels
    (the cell's ``f x f`` block of the grid as the autoencoder pads it, padding excluded). Float64
    inputs stay float64; anything else is averaged in float64 and returned as float32."""
    x = np.asarray(x)
    h, w = x.shape[-2:]
    (top, bottom), (left, right) = _padding(h, factor), _padding(w, factor)
    pad = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    values = np.pad(x.astype(np.float64), pad)
    weights = np.pad(np.ones((h, w)), [(top, bottom), (left, right)])
    hh, ww = values.shape[-2] // factor, values.shape[-1] // factor
    sums = values.reshape(*x.shape[:-2], hh, factor, ww, factor).sum(axis=(-3, -1))
    counts = weights.reshape(hh, factor, ww, factor).sum(axis=(-3, -1))
    out = sums / counts
    return out if x.dtype == np.float64 else out.astype(np.float32)


def latent_names(channels: int) -> list[str]:
    return [f"z{c}" for c in range(channels)]


@dataclasses.dataclass(frozen=True)
class LatentInfo:
    """The ``latent`` section of a latent dataset's manifest."""

    factor: int
    source_dataset: str  # the encoded dataset's folder, as it was when encoding ran
    source_fingerprint: str  # its normalization fingerprint: sampling reads conditions of such a dataset
    source_shape: tuple[int, int]  # its grid (H, W)
    source_targets: tuple[dict[str, Any], ...]  # its targets' manifest entries (names, units, stats, bounds)
    autoencoder: dict[str, Any]  # run, checkpoint, step, spec (the autoencoder's run spec state)
    file_sha256: str  # of AUTOENCODER_FILE in the dataset
    baseline: dict[str, Any] | None = None  # the source's residual map (index, a, b, scale): encoded baseline

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> LatentInfo | None:
        if data is None:
            return None
        source = data["source"]
        return cls(factor=int(data["factor"]), source_dataset=str(source["dataset"]),
                   source_fingerprint=str(source["fingerprint"]),
                   source_shape=(int(source["shape"][0]), int(source["shape"][1])),
                   source_targets=tuple(dict(t) for t in source["targets"]),
                   autoencoder=dict(data["autoencoder"]), file_sha256=str(data["file"]["sha256"]),
                   baseline=None if data.get("baseline") is None else dict(data["baseline"]))

    @property
    def target_names(self) -> list[str]:
        return [str(t["name"]) for t in self.source_targets]


def read_autoencoder_file(root: Path, info: LatentInfo) -> dict[str, Any]:
    """The autoencoder weights of the latent dataset ``root`` (``weights_only`` load, SHA-256 checked against
    the manifest): ``{"spec": run spec state, "weights": state dict}``."""
    import torch

    from hpcdiff.data.shards import file_sha256

    path = Path(root) / AUTOENCODER_FILE
    if not path.is_file():
        raise HpcdiffError(f"{path}: missing (the latent dataset's autoencoder); encode the dataset again")
    if file_sha256(path) != info.file_sha256:
        raise HpcdiffError(f"{path}: sha256 mismatch (changed after encoding); encode the dataset again")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file: torch says why in its first line
        raise HpcdiffError(f"{path}: cannot read ({(str(err).splitlines() or [type(err).__name__])[0]})") \
            from None
    if not isinstance(data, dict) or not {"spec", "weights"} <= data.keys():
        raise HpcdiffError(f"{path}: not an autoencoder file (no spec and weights)")
    return data
