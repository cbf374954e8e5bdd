"""Turning what a browser uploads into arrays and an annotation, refusing anything unsafe or malformed.

Every check raises :class:`~vrpsam.errors.InputError` with one line the page can show as it is.
Images are size-checked from their header, before any pixel is decoded, so a small file that claims
to be huge (a decompression bomb) is refused without allocating its pixels.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..vrp.annotations import KINDS, Annotation

# Formats a browser can show and Pillow decodes safely; TIFF, PSD and friends are deliberately left out.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
# The JSON fields each annotation kind takes besides "kind"; anything else is refused, not ignored.
FIELDS = {"points": {"points"}, "box": {"box"}, "scribble": {"polylines", "width"}, "mask": set()}


def _open(data: bytes, what: str, max_pixels: int) -> Image.Image:
    """A decoded Pillow image of ``data``, EXIF orientation applied, at most ``max_pixels`` pixels."""
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own, far higher, limit: the header claims billions
        raise InputError(f"{what}: far too many pixels, over the limit of {max_pixels:,}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(f"{what}: not a readable image (use JPEG, PNG, WebP or BMP)") from None
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(f"{what}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}")
    try:
        image.load()
        # Browsers draw images EXIF-rotated, so clicks on the canvas are in the rotated frame.
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise InputError(f"{what}: the image data is damaged or truncated") from None


def read_image(data: bytes, what: str, max_pixels: int) -> np.ndarray:
    """An uploaded image file -> (H, W, 3) uint8 RGB."""
    return np.asarray(_open(data, what, max_pixels).convert("RGB"), dtype=np.uint8).copy()


def read_mask(data: bytes, what: str, max_pixels: int) -> np.ndarray:
    """An uploaded mask image -> its raw values, (H, W) or (H, W, 3); :class:`Annotation` checks they are binary."""
    image = _open(data, what, max_pixels)
    if image.mode in ("RGBA", "LA"):
        # What transparency would mean (object? background?) is a guess we do not make.
        if image.getchannel("A").getextrema()[0] < 255:
            raise InputError(f"{what}: has transparent pixels; send an opaque image, black background and white object")
        image = image.convert(image.mode[:-1])
    return np.asarray(image).copy()  # palette PNGs give their indices, like vrpsam.io.images.load_mask


def read_annotation(text: str | None, mask_png: bytes | None, size: tuple[int, int], max_pixels: int) -> tuple[str, Annotation]:
    """The ``annotation`` form field (JSON) and the optional ``mask`` file -> ``(kind, Annotation)``.

    JSON: ``{"kind": "points", "points": [[x, y], ...]}``, ``{"kind": "box", "box": [x1, y1, x2, y2]}``,
    ``{"kind": "scribble", "polylines": [[[x, y], ...], ...], "width": px (optional)}`` or
    ``{"kind": "mask"}`` with the mask PNG (the reference's size) as the ``mask`` file. Coordinates are
    reference-image pixels. The annotation is checked against the reference ``size`` (H, W).
    """
    if not text:
        raise InputError("annotation: missing; draw on the reference first (points, a box, a scribble or a mask)")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError:
        raise InputError("annotation: not valid JSON") from None
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise InputError(f"annotation: expected a JSON object with \"kind\" one of {', '.join(KINDS)}")
    kind = spec["kind"]
    unknown = set(spec) - FIELDS[kind] - {"kind"}
    if unknown:
        raise InputError(f"annotation: unexpected field(s) for kind {kind}: {', '.join(sorted(unknown))}")
    missing = FIELDS[kind] - {"width"} - set(spec)
    if missing:
        raise InputError(f"annotation: kind {kind} needs the field(s) {', '.join(sorted(missing))}")
    if kind != "mask" and mask_png is not None:
        raise InputError(f"annotation: a mask file was uploaded but the annotation kind is {kind}")
    annotation = _build(kind, spec, mask_png, max_pixels)
    annotation.validate(size)
    return kind, annotation


def _build(kind: str, spec: dict[str, Any], mask_png: bytes | None, max_pixels: int) -> Annotation:
    if kind == "points":
        return Annotation.points(spec["points"])
    if kind == "box":
        box = spec["box"]
        if not (isinstance(box, list) and len(box) == 4):
            raise InputError("annotation: box must be [x1, y1, x2, y2]")
        return Annotation.boxes([box])
    if kind == "scribble":
        width = spec.get("width")
        if width is not None and not isinstance(width, (int, float)):
            raise InputError(f"annotation: scribble width must be a number of pixels, got {width!r}")
        return Annotation.scribble(spec["polylines"], width=width)
    if mask_png is None:
        raise InputError("annotation: kind mask needs the mask image as the 'mask' file")
    return Annotation.mask(read_mask(mask_png, "mask", max_pixels))
