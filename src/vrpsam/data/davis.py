"""DAVIS 2016 / 2017 video object segmentation, read as one "class" per object track.

Layouts (``DATA`` is the path given)::

    DATA/JPEGImages/480p/<seq>/<frame>.jpg + DATA/Annotations/480p/<seq>/<frame>.png   (DAVIS as released)
    DATA/JPEGImages/<seq>/<frame>.jpg      + DATA/Annotations/<seq>/<frame>.png        (no resolution level)
    DATA/JPEGImages/<frame>.jpg            + DATA/Annotations/<frame>.png              (one sequence, named DATA)

Annotations: a palette PNG (DAVIS 2017) holds object ids, 1..254 = object, 0 = background,
255 = void (ignore); any other PNG (DAVIS 2016) is a binary mask of a single object, id 1
(:func:`vrpsam.data.base.binary_foreground`). Every (sequence, object id) is one class, numbered from
1 in (sequence, id) order and named ``<seq>/<id>``. Items are ``<seq>/<frame>``; every frame with an
annotation PNG is an item (only annotated frames are read).

Splits: none = every sequence in ``Annotations``; a name such as ``train`` or ``val`` reads the
sequence list ``DATA/ImageSets/2017/<split>.txt`` (one name per line) or, failing that, DAVIS 2016's
``DATA/ImageSets/480p/<split>.txt`` (frame pairs, whose folder names the sequence).

Episodes for video (:func:`vrpsam.data.episodes.video_episodes`): the first frame where the object
appears is the reference; every later annotated frame is a target.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import IGNORE, IndexedSource, binary_foreground, read_mask
from .folder import image_files

DAVIS_LAYOUT = ("DAVIS expects DATA/JPEGImages/480p/<seq>/<frame>.jpg and DATA/Annotations/480p/<seq>/<frame>.png "
                "(480p optional), or one sequence as DATA/JPEGImages/<frame>.jpg and DATA/Annotations/<frame>.png")


class DavisSource(IndexedSource):
    """DAVIS-format video datasets (see the module docstring)."""

    kind = "davis"
    layout = DAVIS_LAYOUT

    def __init__(self, root: str | os.PathLike, *, split: str | None = None, **options):
        super().__init__(root, split=split, **options)
        images, masks = self.root / "JPEGImages", self.root / "Annotations"
        for folder in (images, masks):
            if not folder.is_dir():
                raise DataError(f"{folder}: missing; {DAVIS_LAYOUT}")
        self.single = None
        if (images / "480p").is_dir():
            images, masks = images / "480p", masks / "480p"
            if not masks.is_dir():
                raise DataError(f"{masks}: missing; {DAVIS_LAYOUT}")
        elif image_files(images):
            self.single = self.root.resolve().name
            if split is not None:
                raise DataError(f"davis split {split!r}: {self.root} holds a single sequence")
        self.image_dir, self.mask_dir = images, masks

    def _sequences(self) -> list[str]:
        if self.single is not None:
            return [self.single]
        present = sorted(p.name for p in self.mask_dir.iterdir() if p.is_dir())
        if self.split is None:
            if not present:
                raise DataError(f"{self.mask_dir}: no sequence folders; {DAVIS_LAYOUT}")
            return present
        listed = self._split_list()
        missing = [seq for seq in listed if seq not in present]
        if missing:
            raise DataError(f"{self.mask_dir / missing[0]}: missing sequence listed in the {self.split!r} split")
        return listed

    def _split_list(self) -> list[str]:
        sets = self.root / "ImageSets"
        by_name, by_frames = sets / "2017" / f"{self.split}.txt", sets / "480p" / f"{self.split}.txt"
        if by_name.is_file():
            return sorted({line.strip() for line in by_name.read_text().splitlines() if line.strip()})
        if by_frames.is_file():
            lines = [line.split() for line in by_frames.read_text().splitlines() if line.strip()]
            return sorted({PurePosixPath(parts[0]).parent.name for parts in lines})
        raise DataError(f"{by_name}: missing; the DAVIS split {self.split!r} needs ImageSets/2017/{self.split}.txt "
                        f"or ImageSets/480p/{self.split}.txt")

    def _folders(self, seq: str) -> tuple[Path, Path]:
        if self.single is not None:
            return self.image_dir, self.mask_dir
        return self.image_dir / seq, self.mask_dir / seq

    @cached_property
    def _frames(self) -> dict[str, tuple[Path, Path]]:
        """``{item: (image, mask)}`` for every annotated frame."""
        frames = {}
        for seq in self._sequences():
            image_dir, mask_dir = self._folders(seq)
            for mask in sorted(mask_dir.glob("*.png")):
                image = image_dir / f"{mask.stem}.jpg"
                if not image.is_file():
                    raise DataError(f"{image}: missing frame for annotation {mask}; {DAVIS_LAYOUT}")
                frames[f"{seq}/{mask.stem}"] = (image, mask)
        if not frames:
            raise DataError(f"{self.mask_dir}: no annotation PNGs; {DAVIS_LAYOUT}")
        return frames

    @staticmethod
    def _sequence(item: str) -> str:
        return item.rsplit("/", 1)[0]

    def image_file(self, item: str) -> Path:
        return self._frames[item][0]

    def mask_file(self, item: str) -> Path:
        return self._frames[item][1]

    def _scan(self) -> list[str]:
        return sorted(self._frames)

    def _index_files(self) -> list[Path]:
        return [mask for _, mask in self._frames.values()]

    def object_ids(self, item: str) -> np.ndarray:
        """(H, W) uint8 object ids of a frame: 1..254 objects, 0 background, 255 void."""
        path = self.mask_file(item)
        values = read_mask(path)
        with Image.open(path) as image:
            palette = image.mode == "P"
        return values.astype(np.uint8) if palette else binary_foreground(values)

    def _count(self, item: str) -> dict[int, int]:
        counts = np.bincount(self.object_ids(item).ravel(), minlength=256)
        return {int(obj): int(counts[obj]) for obj in np.flatnonzero(counts[1:IGNORE]) + 1}

    @cached_property
    def tracks(self) -> list[tuple[str, int]]:
        """(sequence, object id) of every class, in class-id order (class ``i + 1`` is ``tracks[i]``)."""
        return sorted({(self._sequence(item), obj) for item, counts in self.index().items() for obj in counts})

    @cached_property
    def _track_ids(self) -> dict[tuple[str, int], int]:
        return {track: i + 1 for i, track in enumerate(self.tracks)}

    @property
    def classes(self) -> dict[int, str]:
        return {i + 1: f"{seq}/{obj}" for i, (seq, obj) in enumerate(self.tracks)}

    def _class_of(self, item: str, label: int) -> int:
        return self._track_ids[(self._sequence(item), label)]

    def frames(self, class_id: int) -> list[str]:
        """Every annotated frame of the class's sequence, in order (with or without the object)."""
        self.check_class(class_id)
        seq = self.tracks[class_id - 1][0]
        return [item for item in sorted(self._frames) if self._sequence(item) == seq]

    def mask(self, item: str, class_id: int) -> np.ndarray:
        self.check_class(class_id)
        seq, obj = self.tracks[class_id - 1]
        ids = self.object_ids(item)
        if self._sequence(item) != seq:
            return np.zeros_like(ids)
        out = (ids == obj).astype(np.uint8)
        out[ids == IGNORE] = IGNORE
        return out
