"""YOLO-seg (Ultralytics) polygon labels, rasterised into semantic masks.

Layout::

    DATA/images/<split>/<stem>.jpg          (any of .jpg .jpeg .png .bmp .webp .tif .tiff)
    DATA/labels/<split>/<stem>.txt          one instance per line: "class x1 y1 x2 y2 x3 y3 ..."
    DATA/data.yaml                          optional: class names (``names:``)

Coordinates are normalised to [0, 1] of the (EXIF-oriented) image. An image without a label file is a
background image; label files without an image are ignored (Ultralytics does the same). Class ``k``
of the files is class id ``k + 1`` here (0 stays background), so COCO's 80 classes get the same ids as
COCO-20i and its interleaved folds.

Rasterisation: vertices ``(x * W, y * H)`` truncated to integers, as Ultralytics does before
``cv2.fillPoly``, and filled with PIL including the boundary. All instances of a class in an image are
unioned into that class's mask; there is no ignore value.

Class names come from ``DATA/data.yaml`` (or the only ``*.yaml`` in ``DATA``), whose ``names`` may
be a flow list (``names: [a, b]``), a block list (``- a``) or a block mapping (``0: a``). Without a
YAML file, the number of classes is the largest class index + 1: 80 classes take the COCO names, any
other count is named by number.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from ..errors import DataError
from .base import IndexedSource
from .coco import COCO_CLASSES
from .folder import image_files

YOLO_LAYOUT = "yolo expects DATA/images/<split>/*.jpg and DATA/labels/<split>/*.txt (class x1 y1 x2 y2 ...)"
# EXIF orientations that swap width and height.
_TRANSPOSED = (5, 6, 7, 8)

Polygon = tuple[int, np.ndarray]  # (class index in the file, (N, 2) normalised x, y)


def parse_label_file(path: Path) -> list[Polygon]:
    """The polygons of a YOLO-seg label file, validated line by line."""
    polygons = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 7 or len(fields) % 2 == 0:
            raise DataError(f"{path}:{number}: expected 'class x1 y1 x2 y2 x3 y3 ...' (a YOLO-seg polygon of "
                            f">= 3 points), got {len(fields)} values")
        try:
            class_index = int(fields[0])
            xy = np.array([float(v) for v in fields[1:]], dtype=np.float64).reshape(-1, 2)
        except ValueError:
            raise DataError(f"{path}:{number}: not numbers: {line.strip()[:60]!r}") from None
        if class_index < 0:
            raise DataError(f"{path}:{number}: negative class index {class_index}")
        if not np.all(np.isfinite(xy)) or xy.min() < 0 or xy.max() > 1:
            raise DataError(f"{path}:{number}: coordinates must be normalised to [0, 1]")
        polygons.append((class_index, xy))
    return polygons


def _yaml_scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _strip_comment(line: str) -> str:
    """``line`` without a ``#`` comment that is outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def parse_yaml_names(path: Path) -> list[str]:
    """The ``names`` of an Ultralytics data YAML (flow list, block list or block mapping)."""
    lines = [_strip_comment(line).rstrip() for line in path.read_text().splitlines()]
    start = next((i for i, line in enumerate(lines) if re.match(r"names\s*:", line)), None)
    if start is None:
        raise DataError(f"{path}: no top-level 'names:' key")
    rest = lines[start].split(":", 1)[1].strip()
    if rest:
        text, end = rest, start + 1
        while not text.endswith("]") and end < len(lines):  # a flow list may span lines
            text, end = text + " " + lines[end].strip(), end + 1
        if not (text.startswith("[") and text.endswith("]")):
            raise DataError(f"{path}: 'names:' must be a list [..], a block list or a mapping")
        tokens = re.findall(r"""'[^']*'|"[^"]*"|[^,\s][^,]*""", text[1:-1])
        return [_yaml_scalar(t) for t in tokens]
    entries = []
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        if not line[0].isspace():
            break
        entries.append(line.strip())
    if entries and all(e.startswith("-") for e in entries):
        return [_yaml_scalar(e[1:]) for e in entries]
    mapping = {}
    for entry in entries:
        key, sep, value = entry.partition(":")
        if not sep or not key.strip().isdigit():
            raise DataError(f"{path}: cannot read names entry {entry!r}; expected '<index>: <name>'")
        mapping[int(key)] = _yaml_scalar(value)
    if sorted(mapping) != list(range(len(mapping))):
        raise DataError(f"{path}: names indices must be 0..{len(mapping) - 1}")
    return [mapping[i] for i in range(len(mapping))]


def oriented_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image as :func:`vrpsam.io.images.load_image` returns it (EXIF orientation applied)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    return (width, height) if orientation in _TRANSPOSED else (height, width)


def rasterise(polygons: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 union of normalised polygons, vertices truncated to integer pixels, boundary included."""
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for xy in polygons:
        pixels = (xy * np.array([width, height])).astype(np.int64)
        draw.polygon([tuple(p) for p in pixels.tolist()], fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8).copy()


class YoloSource(IndexedSource):
    """A YOLO-seg dataset split (see the module docstring)."""

    kind = "yolo"
    layout = YOLO_LAYOUT

    def __init__(self, root: str | os.PathLike, *, split: str | None = None, **options):
        root = Path(root)
        images = root / "images"
        if not images.is_dir():
            raise DataError(f"{images}: missing; {YOLO_LAYOUT}")
        splits = sorted(p.name for p in images.iterdir() if p.is_dir())
        if split is None:
            if len(splits) != 1:
                raise DataError(f"{images}: choose a split among {splits or 'none'}; {YOLO_LAYOUT}")
            split = splits[0]
        super().__init__(root, split=split, **options)
        self.image_dir, self.label_dir = images / split, root / "labels" / split
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise DataError(f"{folder}: missing; {YOLO_LAYOUT}")
        yamls = sorted(root.glob("*.yaml"))
        data_yaml = root / "data.yaml"
        if len(yamls) > 1 and not data_yaml.is_file():
            raise DataError(f"{root}: several *.yaml files and no data.yaml; cannot tell which names the classes")
        self.yaml = data_yaml if data_yaml.is_file() else (yamls[0] if yamls else None)

    @cached_property
    def _images(self) -> dict[str, Path]:
        files = image_files(self.image_dir)
        if not files:
            raise DataError(f"{self.image_dir}: no images; {YOLO_LAYOUT}")
        return {p.stem: p for p in files}

    def image_file(self, item: str) -> Path:
        return self._images[item]

    def mask_file(self, item: str) -> Path:
        return self.label_dir / f"{item}.txt"

    def _scan(self) -> list[str]:
        return sorted(self._images)

    def _index_files(self) -> list[Path]:
        labels = [self.mask_file(item) for item in self._images]
        return list(self._images.values()) + [p for p in labels if p.is_file()]

    def polygons(self, item: str) -> list[Polygon]:
        path = self.mask_file(item)
        return parse_label_file(path) if path.is_file() else []

    def _count(self, item: str) -> dict[int, int]:
        polygons = self.polygons(item)
        size = oriented_size(self.image_file(item))
        counts = {}
        for class_index in sorted({c for c, _ in polygons}):
            pixels = int(rasterise([xy for c, xy in polygons if c == class_index], size).sum())
            if pixels:
                counts[class_index + 1] = pixels
        return counts

    @cached_property
    def class_names(self) -> list[str]:
        if self.yaml is not None:
            names = parse_yaml_names(self.yaml)
        else:
            count = max((c for counts in self.index().values() for c in counts), default=0)
            names = list(COCO_CLASSES) if count == len(COCO_CLASSES) else [str(i) for i in range(count)]
        return names

    @cached_property
    def _classes(self) -> dict[int, str]:
        classes = {i + 1: name for i, name in enumerate(self.class_names)}
        for item, counts in self.index().items():
            unknown = [c - 1 for c in counts if c not in classes]
            if unknown:
                raise DataError(f"{self.mask_file(item)}: class index {unknown[0]} has no name in {self.yaml}")
        return classes

    @property
    def classes(self) -> dict[int, str]:
        return dict(self._classes)

    @property
    def fold_rule(self) -> str:
        return "interleave" if tuple(self.class_names) == COCO_CLASSES else "block"

    def mask(self, item: str, class_id: int) -> np.ndarray:
        self.check_class(class_id)
        polygons = [xy for c, xy in self.polygons(item) if c + 1 == class_id]
        return rasterise(polygons, oriented_size(self.image_file(item)))
