"""What every segmentation dataset looks like to the rest of vrpsam, and views onto part of one.

A *source* is a set of images, each annotated for some classes. It answers four questions:

- ``classes``: ``{class id: name}``; ids are positive integers (0 is background everywhere);
- ``items(class_id)``: the sorted ids of the images in which that class has foreground;
- ``image(item)``: the image as (H, W, 3) uint8 RGB;
- ``mask(item, class_id)``: (H, W) uint8 with 1 = the class, 0 = anything else, 255 = ignore.

``load(item, class_id)`` reads both and refuses a mask whose size differs from its image's.
``restrict(classes, items, ignored=...)`` gives a view limited to some classes (a fold's training or test
classes) or some images (a held-out validation set); see :mod:`vrpsam.data.folds`. Its ``ignored`` classes
read as ignore (255) in its masks: training on a view whose held-out classes are ignored teaches them
neither as foreground nor as background.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, Iterable

import numpy as np

from ..errors import DataError, InputError, VrpsamError
from ..io.images import load_image, load_mask
from .index import class_index

IGNORE = 255


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB; a missing or corrupt file is a :class:`DataError` naming it."""
    try:
        return load_image(path)
    except VrpsamError as exc:
        raise DataError(str(exc)) from None


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Raw (H, W) mask values (palette indices or grey levels); errors as :func:`read_image`."""
    try:
        return load_mask(path)
    except VrpsamError as exc:
        raise DataError(str(exc)) from None


def binary_foreground(values: np.ndarray) -> np.ndarray:
    """The rule for binary masks (FSS-1000, folders, DAVIS 2016): (H, W) uint8 in {0, 1}.

    A mask whose values are all 0 or 1 has foreground 1; any other mask (0/255, or grey levels from
    anti-aliasing or JPEG) has foreground ``value >= 128``, as HSNet reads FSS-1000.
    """
    threshold = 1 if values.max(initial=0) <= 1 else 128
    return (values >= threshold).astype(np.uint8)


class SegmentationSource(ABC):
    """A dataset of images annotated per class (see the module docstring)."""

    #: How :func:`vrpsam.data.folds.split_fold` splits this source's classes into folds.
    fold_rule: str = "block"

    @property
    @abstractmethod
    def name(self) -> str:
        """Where the data comes from, for messages and episode files (e.g. ``pascal:/data (val)``)."""

    @property
    @abstractmethod
    def classes(self) -> dict[int, str]:
        """``{class id: name}`` in increasing id order."""

    @abstractmethod
    def items(self, class_id: int) -> list[str]:
        """Sorted ids of the images where ``class_id`` has (enough) foreground."""

    @abstractmethod
    def image_file(self, item: str) -> Path:
        """The file the image of ``item`` is read from."""

    @abstractmethod
    def mask_file(self, item: str) -> Path:
        """The file the annotation of ``item`` is read from (named in error messages)."""

    @abstractmethod
    def mask(self, item: str, class_id: int) -> np.ndarray:
        """(H, W) uint8: 1 = ``class_id``, 0 = other, 255 = ignore."""

    def image(self, item: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return read_image(self.image_file(item))

    def load(self, item: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The image (H, W, 3) and its mask (H, W) for ``class_id``, checked to be the same size."""
        image, mask = self.image(item), self.mask(item, class_id)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{self.mask_file(item)}: mask is {mask.shape[0]}x{mask.shape[1]} but image "
                f"{self.image_file(item)} is {image.shape[0]}x{image.shape[1]} (HxW)"
            )
        return image, mask

    def restrict(self, classes: Iterable[int] | None = None, items: Iterable[str] | None = None,
                 label: str = "", ignored: Iterable[int] = ()) -> "SourceView":
        """A view with only ``classes`` (default: all) and only ``items`` (default: all), whose masks
        mark the pixels of the ``ignored`` classes as :data:`IGNORE`."""
        return SourceView(self, classes, items, label, ignored)

    def check_class(self, class_id: int) -> None:
        if class_id not in self.classes:
            raise InputError(f"class {class_id} is not a class of {self.name}")


class IndexedSource(SegmentationSource):
    """A dataset on disk whose class presence is read from every annotation once.

    Subclasses list the items (:meth:`_scan`), count each item's foreground pixels per label
    (:meth:`_count`, which also validates the annotation) and name the files whose change makes the
    index stale (:meth:`_index_files`). The index lives in memory and, when ``index_cache`` is given,
    in a JSON file there, never inside the dataset folder. ``min_pixels`` is the foreground a class
    needs in an image for that image to be listed in ``items``.
    """

    kind: ClassVar[str] = ""
    #: The expected layout, in one line, for error messages.
    layout: ClassVar[str] = ""
    default_min_pixels: ClassVar[int] = 1

    def __init__(self, root: str | os.PathLike, *, split: str | None = None, min_pixels: int | None = None,
                 index_cache: str | os.PathLike | None = None):
        self.root = Path(root)
        self.split = split
        self.min_pixels = self.default_min_pixels if min_pixels is None else int(min_pixels)
        if self.min_pixels < 1:
            raise InputError(f"min_pixels: expected >= 1, got {min_pixels}")
        self.index_cache = None if index_cache is None else Path(index_cache)
        self._index: dict[str, dict[int, int]] | None = None
        self._by_class: dict[int, list[str]] | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.root}" + (f" ({self.split})" if self.split else "")

    @abstractmethod
    def _scan(self) -> list[str]:
        """All item ids, sorted."""

    @abstractmethod
    def _count(self, item: str) -> dict[int, int]:
        """``{label: foreground pixels}`` of one item, for labels with at least one pixel."""

    @abstractmethod
    def _index_files(self) -> list[Path]:
        """The annotation files the index is computed from."""

    def _class_of(self, item: str, label: int) -> int:
        """The class id of ``label`` in ``item`` (labels are class ids unless a source says otherwise)."""
        return label

    def index(self) -> dict[str, dict[int, int]]:
        """``{item: {label: foreground pixels}}`` over every item, built once."""
        if self._index is None:
            self._index = class_index(self.name, self._index_files(), self._build_index, self.index_cache)
        return self._index

    def _build_index(self) -> dict[str, dict[int, int]]:
        items = self._scan()
        # PNG decoding releases the GIL, so threads speed up the one-time scan of large datasets.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            counts = list(pool.map(self._count, items))
        return dict(zip(items, counts))

    def all_items(self) -> list[str]:
        """Every item id, sorted, whether or not it has foreground of any class."""
        return sorted(self.index())

    def items(self, class_id: int) -> list[str]:
        self.check_class(class_id)
        if self._by_class is None:
            by_class: dict[int, list[str]] = {c: [] for c in self.classes}
            for item in sorted(self.index()):
                for label, pixels in self.index()[item].items():
                    if pixels >= self.min_pixels:
                        by_class[self._class_of(item, label)].append(item)
            self._by_class = by_class
        return list(self._by_class[class_id])


class SourceView(SegmentationSource):
    """Part of a source: some of its classes and/or some of its images; reads go to the source.

    ``ignored``: classes of the source, outside the view's own, whose pixels its masks mark as
    :data:`IGNORE` (where the requested class does not cover them).
    """

    def __init__(self, base: SegmentationSource, classes: Iterable[int] | None = None,
                 items: Iterable[str] | None = None, label: str = "", ignored: Iterable[int] = ()):
        self.base = base
        if classes is None:
            chosen = list(base.classes)
        else:
            chosen = sorted({int(c) for c in classes})
            unknown = [c for c in chosen if c not in base.classes]
            if unknown:
                raise InputError(f"classes {unknown} are not classes of {base.name}")
        self._classes = {c: base.classes[c] for c in chosen}
        self._allowed = None if items is None else frozenset(items)
        ignored = sorted({int(c) for c in ignored})
        bad = [c for c in ignored if c not in base.classes or c in self._classes]
        if bad:
            raise InputError(f"ignored classes {bad}: not classes of {base.name} outside the view's own")
        # class -> its items, so that a mask reads only the ignored classes present in its image
        self._ignored = {c: frozenset(base.items(c)) for c in ignored}
        self.label = label
        self.fold_rule = base.fold_rule

    @property
    def name(self) -> str:
        return f"{self.base.name} [{self.label}]" if self.label else self.base.name

    @property
    def classes(self) -> dict[int, str]:
        return dict(self._classes)

    def items(self, class_id: int) -> list[str]:
        self.check_class(class_id)
        items = self.base.items(class_id)
        return items if self._allowed is None else [i for i in items if i in self._allowed]

    def image_file(self, item: str) -> Path:
        return self.base.image_file(item)

    def mask_file(self, item: str) -> Path:
        return self.base.mask_file(item)

    def image(self, item: str) -> np.ndarray:
        return self.base.image(item)

    def mask(self, item: str, class_id: int) -> np.ndarray:
        mask = self.base.mask(item, class_id)
        present = [other for other, items in self._ignored.items() if item in items]
        if not present:
            return mask
        ignored = np.logical_or.reduce([self.base.mask(item, other) == 1 for other in present])
        return np.where(ignored & (mask != 1), IGNORE, mask).astype(mask.dtype)
