"""PASCAL-5i: VOC2012 images with the SBD-augmented class-index masks (``SegmentationClassAug``).

Layout (``DATA`` is the path given; ``DATA`` may also be the ``VOC2012`` folder itself)::

    DATA/VOC2012/JPEGImages/<id>.jpg
    DATA/VOC2012/SegmentationClassAug/<id>.png          values 1..20 = class, 0 = bg, 255 = boundary
    DATA/VOC2012/ImageSets/Segmentation/val.txt         the VOC2012 val image ids, one per line

Splits (the official PFENet/BAM list files are not needed): ``val`` is every id in ``val.txt`` (1449
images; each must have a mask); ``train`` is every other mask in ``SegmentationClassAug`` (10582 with
the standard SBD copy, i.e. ``train_aug``). The boundary value 255 is ignore.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from ..errors import DataError
from .labelmap import LabelMapSource

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# PFENet's list rule: a class is listed for an image when it covers at least 2 * 32 * 32 pixels.
PFENET_MIN_PIXELS = 2 * 32 * 32

LAYOUT = ("PASCAL-5i expects DATA/VOC2012/{JPEGImages/*.jpg, SegmentationClassAug/*.png, "
          "ImageSets/Segmentation/val.txt}")


class PascalSource(LabelMapSource):
    """PASCAL-5i, split ``train`` or ``val`` (see the module docstring)."""

    kind = "pascal"
    layout = LAYOUT
    fold_rule = "block"
    class_names = VOC_CLASSES
    default_min_pixels = PFENET_MIN_PIXELS

    def __init__(self, root: str | os.PathLike, *, split: str | None = "val", **options):
        root = Path(root)
        voc = root / "VOC2012" if (root / "VOC2012").is_dir() else root
        super().__init__(voc, split=split, **options)
        self.image_dir = voc / "JPEGImages"
        self.mask_dir = voc / "SegmentationClassAug"
        self.val_list = voc / "ImageSets" / "Segmentation" / "val.txt"
        for path in (self.image_dir, self.mask_dir):
            if not path.is_dir():
                raise DataError(f"{path}: missing; {LAYOUT}")
        if not self.val_list.is_file():
            raise DataError(f"{self.val_list}: missing; {LAYOUT}")

    @cached_property
    def _ids(self) -> list[str]:
        val = [line.strip() for line in self.val_list.read_text().splitlines() if line.strip()]
        if self.split == "val":
            for item in val:
                if not self.mask_file(item).is_file():
                    raise DataError(f"{self.mask_file(item)}: missing mask of val image {item}; {LAYOUT}")
            return sorted(set(val))
        held_out = set(val)
        return sorted(p.stem for p in self.mask_dir.glob("*.png") if p.stem not in held_out)

    def _scan(self) -> list[str]:
        return list(self._ids)
