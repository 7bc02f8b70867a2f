"""Training logs: CSV files (always) and TensorBoard (optional), written by rank 0 only."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def train_columns(terms: Sequence[str]) -> tuple[str, ...]:
    """The columns of ``train.csv`` for a run whose loss has the per-sample ``terms`` (``loss`` first)."""
    return ("step", "epoch", *terms, "lr", "grad_norm", "samples_per_s_rank", "samples_per_s_total",
            "data_wait_share", "step_time_s", "peak_mem_mb")


def val_columns(terms: Sequence[str], extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The columns of ``val.csv``: the loss ``terms`` as ``val_<term>``, the sample count, then ``extra``."""
    return ("step", *(f"val_{t}" for t in terms), "val_samples", *extra)


TRAIN_COLUMNS = train_columns(("loss", "mse", "vlb"))  # a diffusion run's
VAL_COLUMNS = val_columns(("loss", "mse", "vlb"))


class MetricsLog:
    """Append rows to ``train.csv`` / ``val.csv`` (``columns``: ``{"train": ..., "val": ...}``, default
    a diffusion run's). On resume from step ``resume_step`` the rows after it (logged by the run that was
    killed) are dropped first, so the history reads as one run."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_step: int = 0, tensorboard: bool = False,
                 columns: dict[str, tuple[str, ...]] | None = None):
        self.enabled = enabled
        self.paths = {"train": Path(run_dir) / "train.csv", "val": Path(run_dir) / "val.csv"}
        self.columns = columns or {"train": TRAIN_COLUMNS, "val": VAL_COLUMNS}
        self.writer = None
        if not enabled:
            return
        for kind, path in self.paths.items():
            _truncate_after(path, resume_step, self.columns[kind])
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=resume_step + 1)

    def log(self, kind: str, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.paths[kind].open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns[kind]).writerow(
                {k: _fmt(row.get(k)) for k in self.columns[kind]})
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # full precision: the loss history is compared across resumes
    return "" if value is None else value


def _truncate_after(path: Path, step: int, columns: tuple[str, ...]) -> None:
    """Rewrite ``path`` keeping its header and rows with ``step <= step``; create it if missing."""
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("step") and int(r["step"]) <= step]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))
