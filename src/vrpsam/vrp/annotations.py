"""Reference annotations given by a user, validated and rasterised into a binary map.

VRP-SAM never sees coordinates: every annotation (clicks, boxes, scribbles, masks) reaches the encoder
as a binary map over the reference image. This module turns user input into that map.

Coordinates are continuous pixel coordinates of the reference image in its own size: ``x`` grows to
the right, ``y`` downwards, and pixel ``(col, row)`` covers ``[col, col+1) x [row, row+1)``. So an
integer click ``(x, y)`` lands in pixel ``(x, y)``, and a box ``(x1, y1, x2, y2)`` with integer corners
covers columns ``x1 .. x2-1`` and rows ``y1 .. y2-1`` (exclusive max, as the official boxes built
from masks). Valid coordinates lie in ``[0, W] x [0, H]``. Sizes are ``(H, W)`` throughout.

See docs/annotations.md for the rules and the reasons behind them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from vrpsam.errors import InputError

KINDS = ("points", "box", "scribble", "mask")

# Official training scribbles ('rand_curve') use brush widths 3..9 px at 512 px, 6 px on average; a
# polyline without an explicit width gets the same width relative to the image's shorter side.
DEFAULT_STROKE_WIDTH_FRACTION = 6 / 512

Size = tuple[int, int]


def _fmt(value: float) -> str:
    return f"{value:g}"


def _fmt_size(size: Size) -> str:
    return f"(H={size[0]}, W={size[1]})"


def _finite_rows(values: Any, width: int, what: str, example: str) -> tuple[tuple[float, ...], ...]:
    """``values`` as a tuple of rows of ``width`` finite floats; ``what`` names them in errors."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: expected a list of {example}, got {values!r}") from exc
    if array.ndim == 1 and array.size == width:
        array = array[None]
    if array.size == 0:
        raise InputError(f"{what}: the list is empty; give at least one {example}")
    if array.ndim != 2 or array.shape[1] != width:
        raise InputError(f"{what}: expected a list of {example}, got an array of shape {array.shape}")
    for index, row in enumerate(array):
        if not np.all(np.isfinite(row)):
            raise InputError(f"{what}: #{index} {tuple(row.tolist())} has a non-finite coordinate")
    return tuple(tuple(float(v) for v in row) for row in array)


def _binary_raster(image: Any, what: str) -> np.ndarray:
    """A user mask/scribble image as a read-only bool (H, W) array.

    Accepted: a 2-D array, tensor or PIL image whose values are ``{0, v}`` for one ``v > 0``
    (``{0, 1}``, ``{0, 255}``, bool, PIL modes '1'/'L'); an (H, W, 1) array; an (H, W, 3) array (an
    RGB-saved mask) only if its three channels are equal. Soft or multi-valued masks are refused, since
    any threshold would be a guess.
    """
    if isinstance(image, Image.Image):
        array = np.asarray(image)
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
    else:
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3):
        if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, array.shape[2])):
            raise InputError(f"{what}: an (H, W, 3) mask must have equal channels; got differing channels")
        array = array[..., 0]
    if array.ndim != 2:
        raise InputError(f"{what}: expected an (H, W) binary image (or (H, W, 3) with equal channels), "
                         f"got shape {array.shape}")
    if array.dtype != np.bool_:
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"{what}: expected numeric or bool values, got dtype {array.dtype}")
        values = np.unique(array)
        positive = values[values != 0]
        if np.isnan(values.astype(np.float64)).any() or len(positive) > 1 or (positive < 0).any():
            shown = ", ".join(_fmt(float(v)) for v in values[:6]) + (", ..." if len(values) > 6 else "")
            raise InputError(f"{what}: must be binary, values {{0, v}} for one v > 0; "
                             f"found {len(values)} values: {shown}")
        array = array != 0
    if not array.any():
        raise InputError(f"{what}: has no foreground pixel (all values are 0)")
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class Annotation:
    """One user annotation of the reference image; build it with the class-method constructors.

    Exactly one payload is set, by ``kind``: ``point_coords`` ((x, y), ...); ``box_coords``
    ((x1, y1, x2, y2), ...); ``polylines`` (((x, y), ...), ...) with ``width`` (pixels, ``None`` = auto);
    or ``raster``, a read-only bool (H, W) array for a mask or a scribble given as an image.
    """

    kind: str
    point_coords: tuple[tuple[float, float], ...] = ()
    box_coords: tuple[tuple[float, float, float, float], ...] = ()
    polylines: tuple[tuple[tuple[float, float], ...], ...] = ()
    width: float | None = None
    raster: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"annotation kind {self.kind!r} is not one of {', '.join(KINDS)}")

    # --- constructors -------------------------------------------------------------------------------

    @classmethod
    def points(cls, points: Sequence[Sequence[float]]) -> Annotation:
        """Clicks ``[(x, y), ...]`` on the object (at least one)."""
        return cls("points", point_coords=_finite_rows(points, 2, "points", "(x, y)"))

    @classmethod
    def boxes(cls, boxes: Sequence[Sequence[float]]) -> Annotation:
        """One or more boxes ``[(x1, y1, x2, y2), ...]`` (x2, y2 exclusive); all are filled."""
        rows = _finite_rows(boxes, 4, "boxes", "(x1, y1, x2, y2)")
        for index, (x1, y1, x2, y2) in enumerate(rows):
            if not (x1 < x2 and y1 < y2):
                raise InputError(f"box #{index} ({_fmt(x1)}, {_fmt(y1)}, {_fmt(x2)}, {_fmt(y2)}) is degenerate: "
                                 "needs x1 < x2 and y1 < y2")
        return cls("box", box_coords=rows)

    @classmethod
    def box(cls, x1: float, y1: float, x2: float, y2: float) -> Annotation:
        """A single box (x2, y2 exclusive)."""
        return cls.boxes([(x1, y1, x2, y2)])

    @classmethod
    def scribble(cls, strokes: Any, *, width: float | None = None) -> Annotation:
        """A scribble: either a binary (H, W) image of the strokes, or polylines ``[[(x, y), ...], ...]``.

        ``width`` (polylines only) is the brush width in image pixels; ``None`` uses
        ``DEFAULT_STROKE_WIDTH_FRACTION`` of the image's shorter side (at least 1 px).
        """
        if isinstance(strokes, (Image.Image, np.ndarray, torch.Tensor)):
            if width is not None:
                raise InputError("scribble: width applies to polylines only, not to a scribble image")
            return cls("scribble", raster=_binary_raster(strokes, "scribble"))
        if width is not None and not (math.isfinite(width) and width > 0):
            raise InputError(f"scribble: width must be a positive number of pixels, got {width!r}")
        try:
            lines = list(strokes)
        except TypeError as exc:
            raise InputError(f"scribble: expected an image or a list of polylines, got {strokes!r}") from exc
        if not lines:
            raise InputError("scribble: the list of polylines is empty; give at least one [(x, y), ...]")
        polylines = tuple(_finite_rows(line, 2, f"scribble polyline #{i}", "(x, y)") for i, line in enumerate(lines))
        return cls("scribble", polylines=polylines, width=None if width is None else float(width))

    @classmethod
    def mask(cls, image: Any) -> Annotation:
        """A binary (H, W) mask of the object, the size of the reference image."""
        return cls("mask", raster=_binary_raster(image, "mask"))

    # --- checks and rasterisation -------------------------------------------------------------------

    def validate(self, image_size: Size) -> None:
        """Raise :class:`InputError` unless this annotation fits an image of ``image_size`` (H, W)."""
        height, width = image_size
        if self.raster is not None:
            if self.raster.shape != (height, width):
                raise InputError(f"{self.kind}: size {_fmt_size(self.raster.shape)} differs from the image size "
                                 f"{_fmt_size((height, width))}")
            return
        named = [(f"point #{i}", p) for i, p in enumerate(self.point_coords)]
        named += [(f"box #{i}", b) for i, b in enumerate(self.box_coords)]
        named += [(f"scribble polyline #{i} vertex #{j}", v)
                  for i, line in enumerate(self.polylines) for j, v in enumerate(line)]
        for name, coords in named:
            xs, ys = coords[0::2], coords[1::2]
            if not all(0 <= x <= width for x in xs) or not all(0 <= y <= height for y in ys):
                shown = ", ".join(_fmt(c) for c in coords)
                raise InputError(f"{name} ({shown}) lies outside the image (width {width}, height {height})")

    def to_map(self, image_size: Size, out_size: Size | None = None) -> np.ndarray:
        """The annotation as a float32 (h, w) map in {0, 1}, at ``out_size`` (default ``image_size``).

        Points, boxes and polylines are drawn at ``out_size`` from scaled coordinates, so no click is lost
        to resizing: each point sets at least its own pixel. Rasters are resized with PyTorch's nearest
        rule (as the official pipeline resizes masks); a raster whose strokes all vanish raises.
        """
        self.validate(image_size)
        out_size = tuple(image_size) if out_size is None else tuple(out_size)
        if self.raster is not None:
            return self._resized_raster(out_size)
        canvas = np.zeros(out_size, dtype=np.float32)
        if self.kind == "points":
            for x, y in self.point_coords:
                canvas[_cell(y, image_size[0], out_size[0]), _cell(x, image_size[1], out_size[1])] = 1
        elif self.kind == "box":
            for x1, y1, x2, y2 in self.box_coords:
                c0, c1 = _span(x1, x2, image_size[1], out_size[1])
                r0, r1 = _span(y1, y2, image_size[0], out_size[0])
                canvas[r0:r1, c0:c1] = 1
        else:
            canvas = self._drawn_polylines(image_size, out_size)
        return canvas

    def _resized_raster(self, out_size: Size) -> np.ndarray:
        source = torch.from_numpy(self.raster.astype(np.float32))
        if tuple(source.shape) != out_size:
            source = F.interpolate(source[None, None], size=out_size, mode="nearest")[0, 0]
        resized = source.numpy().copy()
        if not resized.any():
            raise InputError(f"{self.kind}: no foreground pixel is left after resizing from "
                             f"{_fmt_size(self.raster.shape)} to {_fmt_size(out_size)}; draw thicker strokes")
        return resized

    def _drawn_polylines(self, image_size: Size, out_size: Size) -> np.ndarray:
        width = self.width if self.width is not None else DEFAULT_STROKE_WIDTH_FRACTION * min(image_size)
        scale = math.sqrt(out_size[0] * out_size[1] / (image_size[0] * image_size[1]))
        brush = max(1, round(width * scale))
        radius = brush / 2
        canvas = Image.new("L", (out_size[1], out_size[0]), 0)
        draw = ImageDraw.Draw(canvas)
        for line in self.polylines:
            # PIL puts pixel centres on integer coordinates; ours are at +0.5.
            xy = [(x * out_size[1] / image_size[1] - 0.5, y * out_size[0] / image_size[0] - 0.5) for x, y in line]
            if len(xy) > 1:
                draw.line(xy, fill=1, width=brush)
            if brush > 2:  # round caps and joins
                for x, y in xy:
                    draw.ellipse((x - radius + 0.5, y - radius + 0.5, x + radius - 0.5, y + radius - 0.5), fill=1)
        result = np.asarray(canvas, dtype=np.float32).copy()
        for line in self.polylines:  # every vertex keeps at least its own pixel, as points do
            for x, y in line:
                result[_cell(y, image_size[0], out_size[0]), _cell(x, image_size[1], out_size[1])] = 1
        return result


def _cell(coord: float, size: int, out: int) -> int:
    """Index of the output cell holding continuous coordinate ``coord`` of an axis of ``size`` pixels."""
    return min(int(math.floor(coord * out / size)), out - 1)


def _span(lo: float, hi: float, size: int, out: int) -> tuple[int, int]:
    """Output cells ``[start, stop)`` that the interval ``[lo, hi)`` overlaps (never empty)."""
    start = _cell(lo, size, out)
    stop = min(int(math.ceil(hi * out / size)), out)
    return start, max(stop, start + 1)


# --- CLI parsing --------------------------------------------------------------------------------------

def _parse_numbers(text: str, count: int, what: str, example: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",")]
    try:
        numbers = tuple(float(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise InputError(f"{what}: expected {example} (finite numbers), got {text.strip()!r}")
    return numbers


def parse_points(text: str) -> list[tuple[float, float]]:
    """``"x,y;x,y"`` -> ``[(x, y), (x, y)]``; raises :class:`InputError` quoting the bad part."""
    parts = [p for p in text.split(";") if p.strip()]
    if not parts:
        raise InputError(f"points: expected 'x,y;x,y', got {text!r}")
    return [_parse_numbers(p, 2, f"points {text!r}", "'x,y'") for p in parts]  # type: ignore[misc]


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` -> ``(x1, y1, x2, y2)``; raises :class:`InputError` quoting the text."""
    return _parse_numbers(text, 4, "box", "'x1,y1,x2,y2'")  # type: ignore[return-value]
