"""COCO-20i, from HSNet-style class-index PNGs or from a COCO instances JSON.

``coco`` (the layout of the official code and HSNet; ``DATA`` may also hold it under ``MSCOCO14/``
or ``COCO2014/``)::

    DATA/{train2014,val2014}/<id>.jpg
    DATA/annotations/{train2014,val2014}/<id>.png       values 1..80 = class, 0 = bg (255 = ignore)

``coco-json``: a COCO instances file, e.g. ``DATA/annotations/instances_val2014.json``. Its images
are read from ``DATA/<split>/`` when the file is named ``instances_<split>.json``, else from an
``images/`` folder next to it, or from ``images_dir``. Categories sorted by their COCO id become
classes 1..N (for the 80 COCO categories: the same ids as the PNGs). The mask of a class is the union
of its non-crowd instances; its crowd regions (``iscrowd=1``) are ignore (255) where no instance
covers them, since they contain the class without delineating it. Polygons and RLEs are decoded
with pycocotools (the rasteriser the PNGs were made with). An image's foreground per class, used by
``min_pixels``, is the sum of its non-crowd instance areas (the JSON's ``area``), not a rasterised
union.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..errors import DataError
from .base import IGNORE, IndexedSource
from .labelmap import LabelMapSource
from .pascal import PFENET_MIN_PIXELS
from .storage import read_json

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)

PNG_LAYOUT = "COCO-20i expects DATA/{train2014,val2014}/*.jpg and DATA/annotations/{train2014,val2014}/*.png"
JSON_LAYOUT = ("coco-json expects DATA/annotations/instances_<split>.json with images in DATA/<split>/ "
               "(or images/ next to the JSON)")


class CocoSource(LabelMapSource):
    """COCO-20i from class-index PNGs, split ``train`` (train2014) or ``val`` (val2014)."""

    kind = "coco"
    layout = PNG_LAYOUT
    fold_rule = "interleave"
    class_names = COCO_CLASSES
    default_min_pixels = PFENET_MIN_PIXELS

    def __init__(self, root: str | os.PathLike, *, split: str | None = "val", **options):
        root = Path(root)
        base = next((d for d in (root, root / "MSCOCO14", root / "COCO2014") if (d / "annotations").is_dir()), root)
        super().__init__(base, split=split, **options)
        folder = f"{self.split}2014"
        self.image_dir = base / folder
        self.mask_dir = base / "annotations" / folder
        for path in (self.mask_dir, self.image_dir):
            if not path.is_dir():
                raise DataError(f"{path}: missing; {PNG_LAYOUT}")

    @cached_property
    def _ids(self) -> list[str]:
        return sorted(p.stem for p in self.mask_dir.glob("*.png"))

    def _scan(self) -> list[str]:
        return list(self._ids)


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError:
        raise DataError("coco-json needs pycocotools to decode polygons and RLEs: pip install pycocotools") from None
    return mask_api


class CocoJsonSource(IndexedSource):
    """COCO-style instance annotations from one JSON file (see the module docstring)."""

    kind = "coco-json"
    layout = JSON_LAYOUT
    fold_rule = "interleave"
    default_min_pixels = PFENET_MIN_PIXELS

    def __init__(self, path: str | os.PathLike, *, split: str | None = None,
                 images_dir: str | os.PathLike | None = None, **options):
        path = Path(path)
        if split is not None:
            raise DataError(f"coco-json split {split!r}: the split is chosen by the JSON file, not by a split name")
        super().__init__(path, **options)
        if not path.is_file():
            raise DataError(f"{path}: missing; {JSON_LAYOUT}")
        if images_dir is not None:
            self.image_dir = Path(images_dir)
        else:
            named = re.fullmatch(r"instances_(.+)\.json", path.name)
            self.image_dir = path.parent.parent / named.group(1) if named else path.parent / "images"
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: missing image folder for {path}; {JSON_LAYOUT}")

    @cached_property
    def _data(self) -> dict[str, Any]:
        """Categories, images and annotations of the JSON, checked and grouped by item."""
        path = self.root
        data = read_json(path, "COCO instances JSON")
        try:
            categories = sorted(data["categories"], key=lambda c: int(c["id"]))
            class_of = {int(c["id"]): i + 1 for i, c in enumerate(categories)}
            names = {i + 1: str(c["name"]) for i, c in enumerate(categories)}
            images, item_of = {}, {}
            for image in data["images"]:
                item = str(PurePosixPath(image["file_name"]).with_suffix(""))
                images[item] = (image["file_name"], int(image["height"]), int(image["width"]))
                item_of[int(image["id"])] = item
            annotations = defaultdict(list)
            for ann in data["annotations"]:
                annotations[item_of[int(ann["image_id"])]].append(
                    (class_of[int(ann["category_id"])], ann["segmentation"], bool(ann.get("iscrowd", 0)),
                     ann.get("area"), ann.get("id")))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: not a COCO instances JSON (bad or missing {exc})") from None
        return {"names": names, "images": images, "annotations": dict(annotations)}

    @property
    def classes(self) -> dict[int, str]:
        return dict(self._data["names"])

    def image_file(self, item: str) -> Path:
        return self.image_dir / self._data["images"][item][0]

    def mask_file(self, item: str) -> Path:
        return self.root

    def _scan(self) -> list[str]:
        return sorted(self._data["images"])

    def _index_files(self) -> list[Path]:
        return [self.root]

    def _count(self, item: str) -> dict[int, int]:
        if not self.image_file(item).is_file():
            raise DataError(f"{self.image_file(item)}: missing image listed in {self.root}; {JSON_LAYOUT}")
        counts: dict[int, int] = defaultdict(int)
        for class_id, segmentation, crowd, area, ann_id in self._data["annotations"].get(item, ()):
            if not crowd:
                if area is None:
                    area = int(self._decode(item, segmentation, ann_id).sum())
                counts[class_id] += int(round(float(area)))
        return {c: n for c, n in sorted(counts.items()) if n > 0}

    def _decode(self, item: str, segmentation: Any, ann_id: Any) -> np.ndarray:
        """(H, W) uint8 mask of one annotation's polygons or RLE."""
        mask_api = _mask_api()
        _, height, width = self._data["images"][item]
        try:
            if isinstance(segmentation, list):
                rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
            elif isinstance(segmentation.get("counts"), list):
                rle = mask_api.frPyObjects(segmentation, height, width)
            else:
                counts = segmentation["counts"]
                rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
            return mask_api.decode(rle)
        except Exception as exc:  # pycocotools raises bare Exceptions on malformed input
            raise DataError(f"{self.root}: annotation {ann_id} of {item} has a malformed segmentation "
                            f"({exc})") from None

    def mask(self, item: str, class_id: int) -> np.ndarray:
        self.check_class(class_id)
        _, height, width = self._data["images"][item]
        foreground = np.zeros((height, width), dtype=np.uint8)
        crowd = np.zeros((height, width), dtype=bool)
        for ann_class, segmentation, is_crowd, _, ann_id in self._data["annotations"].get(item, ()):
            if ann_class != class_id:
                continue
            decoded = self._decode(item, segmentation, ann_id).astype(bool)
            if is_crowd:
                crowd |= decoded
            else:
                foreground[decoded] = 1
        foreground[crowd & (foreground == 0)] = IGNORE
        return foreground
