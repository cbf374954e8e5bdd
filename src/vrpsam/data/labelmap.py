"""Datasets annotated by one class-index PNG per image (PASCAL SegmentationClassAug, HSNet's COCO PNGs).

Pixel value ``c`` in 1..N is class ``c``, 0 is background and 255 is ignore (PASCAL's object
boundaries). Any other value makes the mask invalid: it is reported, never read as background.
"""

from __future__ import annotations

import os

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import DataError
from .base import IGNORE, IndexedSource, read_mask


class LabelMapSource(IndexedSource):
    """Images ``image_dir/<item>.jpg`` with class-index masks ``mask_dir/<item>.png``.

    Subclasses set ``class_names`` (class ``i + 1`` is ``class_names[i]``), ``image_dir``, ``mask_dir``
    and implement :meth:`_scan`.
    """

    class_names: ClassVar[tuple[str, ...]] = ()
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    image_dir: Path
    mask_dir: Path

    def __init__(self, root: str | os.PathLike, *, split: str | None = "val", **options) -> None:
        super().__init__(root, split=split or "val", **options)
        if self.split not in self.splits:
            raise DataError(f"{self.kind} split {self.split!r}: expected {' or '.join(repr(s) for s in self.splits)}")

    @property
    def classes(self) -> dict[int, str]:
        return {i + 1: name for i, name in enumerate(self.class_names)}

    def image_file(self, item: str) -> Path:
        return self.image_dir / f"{item}.jpg"

    def mask_file(self, item: str) -> Path:
        return self.mask_dir / f"{item}.png"

    def _index_files(self) -> list[Path]:
        return [self.mask_file(item) for item in self._scan()]

    def labels(self, item: str) -> tuple[np.ndarray, np.ndarray]:
        """The (H, W) uint8 class-index map of ``item`` and its value histogram (256,), validated."""
        path = self.mask_file(item)
        values = read_mask(path)
        if values.dtype != np.uint8:
            if values.size and (values.min() < 0 or values.max() > 255):
                raise DataError(f"{path}: values outside 0..255 are not class indices")
            values = values.astype(np.uint8)
        counts = np.bincount(values.ravel(), minlength=256)
        valid = np.zeros(256, dtype=bool)
        valid[: len(self.class_names) + 1] = True
        valid[IGNORE] = True
        bad = np.flatnonzero((counts > 0) & ~valid)
        if len(bad):
            raise DataError(f"{path}: value {int(bad[0])} is not a class index "
                            f"(0..{len(self.class_names)}, {IGNORE} = ignore)")
        return values, counts

    def _count(self, item: str) -> dict[int, int]:
        if not self.image_file(item).is_file():
            raise DataError(f"{self.image_file(item)}: missing image for mask {self.mask_file(item)}")
        _, counts = self.labels(item)
        return {c: int(counts[c]) for c in self.classes if counts[c] > 0}

    def mask(self, item: str, class_id: int) -> np.ndarray:
        self.check_class(class_id)
        labels, _ = self.labels(item)
        out = (labels == class_id).astype(np.uint8)
        out[labels == IGNORE] = IGNORE
        return out
