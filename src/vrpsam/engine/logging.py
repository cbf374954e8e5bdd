"""What a training run writes while it runs: a CSV log always, TensorBoard events when installed.

``log.csv`` has one row per training iteration (``kind=train``: iteration, epoch, loss, lr, seconds
since the run started), one per validation pass (``kind=val``: miou, fbiou on the validation split)
and, with ``calibrate_prior``, one per prior setting tried at the end (``kind=prior_xM+BsS``: mean
validation mIoU with the prior's scale times M, its bias plus B and self-support weight S).
On resume the rows after the resumed iteration are dropped first, so the file always describes one
uninterrupted run. Only the main process writes.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_bytes

COLUMNS = ("kind", "iteration", "epoch", "loss", "lr", "time", "miou", "fbiou")


class CsvLog:
    """Appends rows of :data:`COLUMNS` to ``path`` (the header is written once)."""

    def __init__(self, path: str | os.PathLike, *, resume_after: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_after is None or not self.path.exists():
            atomic_write_bytes(self.path, (",".join(COLUMNS) + "\n").encode())
        else:
            self._truncate_after(resume_after)

    def _truncate_after(self, iteration: int) -> None:
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if int(row["iteration"]) <= iteration]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, out.getvalue().encode())

    def write(self, **row: Any) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"log columns: {', '.join(sorted(unknown))} unknown")
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n").writerow({k: _format(v) for k, v in row.items()})


def read_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a ``log.csv``, as strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _format(value: Any) -> Any:
    return f"{value:.8g}" if isinstance(value, float) else value


class TensorBoardLog:
    """Scalars to TensorBoard event files, or nothing when ``tensorboard`` is not installed."""

    def __init__(self, folder: str | os.PathLike, enabled: bool = True) -> None:
        self._writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional dependency: the CSV log carries the same numbers
            return
        self._writer = SummaryWriter(log_dir=str(folder))

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def progress_bar(total: int, initial: int, enabled: bool, description: str):
    """A tqdm bar over iterations on the main process, a silent stand-in elsewhere."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=description, dynamic_ncols=True, leave=False)
