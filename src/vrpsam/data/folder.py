"""Datasets of binary masks grouped by class folder: the generic format for users' data.

Layout (one folder per class; the class names are the folder names, sorted, numbered from 1)::

    DATA/<class>/images/<stem>.jpg      (any of .jpg .jpeg .png .bmp .webp .tif .tiff)
    DATA/<class>/masks/<stem>.png       same stem; binary

Every image needs its mask. Masks are binary (:func:`vrpsam.data.base.binary_foreground`: values
0/1 use 1 as foreground, anything else uses ``value >= 128``); there is no ignore value.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import DataError
from ..io.images import IMAGE_SUFFIXES
from .base import IndexedSource, binary_foreground, read_mask

FOLDER_LAYOUT = "folder expects DATA/<class>/images/<stem>.jpg and DATA/<class>/masks/<stem>.png"


class Sample(NamedTuple):
    class_name: str
    image: Path
    mask: Path


def image_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """The image files directly inside ``folder`` (by suffix, any case), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


class BinaryMaskSource(IndexedSource):
    """Items ``<class>/<stem>``, each an image with a binary mask of exactly one class."""

    def __init__(self, root: str | os.PathLike, *, split: str | None = None, **options):
        if split is not None:
            raise DataError(f"{self.kind} split {split!r}: this format has no splits")
        super().__init__(root, **options)

    @abstractmethod
    def _discover(self) -> dict[str, Sample]:
        """``{item: Sample}`` over the whole dataset, with every file checked to exist."""

    @cached_property
    def samples(self) -> dict[str, Sample]:
        return self._discover()

    @cached_property
    def _classes(self) -> dict[int, str]:
        names = sorted({s.class_name for s in self.samples.values()})
        return {i + 1: name for i, name in enumerate(names)}

    @property
    def classes(self) -> dict[int, str]:
        return dict(self._classes)

    @cached_property
    def _class_ids(self) -> dict[str, int]:
        return {name: class_id for class_id, name in self.classes.items()}

    def image_file(self, item: str) -> Path:
        return self.samples[item].image

    def mask_file(self, item: str) -> Path:
        return self.samples[item].mask

    def _scan(self) -> list[str]:
        return sorted(self.samples)

    def _index_files(self) -> list[Path]:
        return [s.mask for s in self.samples.values()]

    def _foreground(self, item: str) -> np.ndarray:
        """(H, W) uint8 in {0, 1}: the item's binary mask."""
        return binary_foreground(read_mask(self.mask_file(item)))

    def _count(self, item: str) -> dict[int, int]:
        pixels = int(self._foreground(item).sum())
        return {self._class_ids[self.samples[item].class_name]: pixels} if pixels else {}

    def mask(self, item: str, class_id: int) -> np.ndarray:
        self.check_class(class_id)
        foreground = self._foreground(item)
        return foreground if self._class_ids[self.samples[item].class_name] == class_id else np.zeros_like(foreground)


def paired_samples(class_name: str, image_dir: Path, mask_dir: Path, layout: str, item_prefix: str,
                   suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Sample]:
    """``{item_prefix + stem: Sample}`` for every image in ``image_dir`` with its mask ``mask_dir/<stem>.png``."""
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: missing; {layout}")
    images = image_files(image_dir, suffixes)
    if not images:
        raise DataError(f"{image_dir}: no images; {layout}")
    samples = {}
    for image in images:
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise DataError(f"{mask}: missing mask of {image}; {layout}")
        samples[item_prefix + image.stem] = Sample(class_name, image, mask)
    return samples


def class_folders(root: Path, layout: str) -> list[Path]:
    """The non-hidden sub-folders of ``root``, sorted; at least one."""
    if not root.is_dir():
        raise DataError(f"{root}: missing; {layout}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class folders; {layout}")
    return folders


class FolderSource(BinaryMaskSource):
    """Users' data in the class-folder layout of the module docstring."""

    kind = "folder"
    layout = FOLDER_LAYOUT

    def __init__(self, root: str | os.PathLike, **options):
        super().__init__(root, **options)
        class_folders(self.root, FOLDER_LAYOUT)

    def _discover(self) -> dict[str, Sample]:
        samples: dict[str, Sample] = {}
        for folder in class_folders(self.root, FOLDER_LAYOUT):
            samples.update(paired_samples(folder.name, folder / "images", folder / "masks", FOLDER_LAYOUT,
                                          f"{folder.name}/"))
        return samples
