"""FSS-1000: 1000 classes, each a folder of images with binary masks.

Two layouts:

- the dataset: ``DATA/<class>/<n>.jpg`` with ``DATA/<class>/<n>.png`` (masks 0/255);
- one class as shipped in the FSS-1000 repository's example: ``DATA/image/<n>.jpg`` with
  ``DATA/label/<n>.png`` (RGB masks with values 0/1); the class is named after ``DATA``.

FSS-1000 stores masks as RGB PNGs, not always with equal channels at every pixel, so a mask is read
as PIL's luma (``convert("L")``, as HSNet does) and then binarised
(:func:`vrpsam.data.base.binary_foreground`). Classes are the sorted folder names,
numbered from 1; items are ``<class>/<n>``. FSS-1000 has no official class split in the data itself
(HSNet ships list files for it); use :func:`vrpsam.data.folds.split_fold` or explicit class lists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .base import binary_foreground
from .folder import BinaryMaskSource, Sample, class_folders, paired_samples

# Masks sit next to the images as .png, so only JPEGs are images here.
FSS_IMAGE_SUFFIXES = (".jpg", ".jpeg")
FSS_LAYOUT = "FSS-1000 expects DATA/<class>/<n>.jpg + <n>.png, or DATA/image/<n>.jpg + DATA/label/<n>.png"


class FssSource(BinaryMaskSource):
    """FSS-1000 in either layout of the module docstring."""

    kind = "fss"
    layout = FSS_LAYOUT

    def __init__(self, root, **options):
        super().__init__(root, **options)
        class_folders(self.root, FSS_LAYOUT)

    def _discover(self) -> dict[str, Sample]:
        if (self.root / "image").is_dir() and (self.root / "label").is_dir():
            name = self.root.resolve().name
            return paired_samples(name, self.root / "image", self.root / "label", FSS_LAYOUT, f"{name}/",
                                  FSS_IMAGE_SUFFIXES)
        samples: dict[str, Sample] = {}
        for folder in class_folders(self.root, FSS_LAYOUT):
            samples.update(paired_samples(folder.name, folder, folder, FSS_LAYOUT, f"{folder.name}/",
                                          FSS_IMAGE_SUFFIXES))
        return samples

    def _foreground(self, item: str) -> np.ndarray:
        return binary_foreground(read_luma(self.mask_file(item)))


def read_luma(path: Path) -> np.ndarray:
    """(H, W) uint8 luma of any image file; a missing or corrupt file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: no such mask file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
