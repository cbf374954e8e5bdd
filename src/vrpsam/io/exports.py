"""Writing predicted masks the way users and tools expect them: PNG, overlays, COCO RLE, palette PNG.

Formats (see docs and peers' conventions):

- binary PNG: single channel (mode ``L``), 0 = background, 255 = object, the image's own size;
- overlay: the image with the mask tinted and outlined, JPEG or PNG by the file's suffix;
- COCO RLE: ``pycocotools.mask.encode`` of the Fortran-ordered uint8 mask, ``counts`` as ``str`` so
  it goes straight into JSON; :func:`coco_result` builds one entry of a COCO results file;
- palette PNG (DAVIS / SAM 2 ``vos_inference`` style): mode ``P``, pixel value = object id, the
  standard PASCAL VOC / DAVIS colour map.

Every writer is atomic: it writes a hidden temporary file in the destination folder and renames it
onto the final name, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from .atomic import atomic_file

PathLike = str | os.PathLike

# suffix -> PIL format name, for files whose format follows their name
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
OVERLAY_COLOR = (30, 144, 255)  # SAM's demo blue


def _binary(mask: Any, what: str = "mask") -> np.ndarray:
    """An (H, W) bool array from a bool array or one holding only {0, 1} (or {0, 255})."""
    array = np.asarray(mask)
    if array.ndim != 2 or 0 in array.shape:
        raise InputError(f"{what}: expected an (H, W) array, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array
    values = np.unique(array)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        raise InputError(f"{what}: expected a binary mask (bool, {{0, 1}} or {{0, 255}}), found values {values[:6].tolist()}")
    return array != 0


def _save_image(image: Image.Image, path: PathLike, **options: Any) -> Path:
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_FORMATS)}")
    with atomic_file(path) as handle:
        image.save(handle, format=fmt, **options)
    return path


def save_mask_png(mask: Any, path: PathLike) -> Path:
    """Write an (H, W) binary mask as a single-channel PNG with values 0 and 255; return the path."""
    pixels = _binary(mask).astype(np.uint8) * 255
    return _save_image(Image.fromarray(pixels), path)


def overlay(image: np.ndarray, mask: Any, *, color: tuple[int, int, int] = OVERLAY_COLOR, alpha: float = 0.5) -> np.ndarray:
    """The (H, W, 3) uint8 ``image`` with ``mask`` tinted by ``color`` at ``alpha`` and outlined in full colour."""
    image, mask = np.asarray(image), _binary(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"overlay: expected an (H, W, 3) uint8 image, got shape {image.shape} dtype {image.dtype}")
    if image.shape[:2] != mask.shape:
        raise InputError(f"overlay: mask size {mask.shape} differs from the image size {image.shape[:2]}")
    tint = np.asarray(color, dtype=np.float32)
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * tint
    out[_outline(mask)] = tint
    return out.round().astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def save_overlay(image: np.ndarray, mask: Any, path: PathLike, *, color: tuple[int, int, int] = OVERLAY_COLOR,
                 alpha: float = 0.5, quality: int = 90) -> Path:
    """Write :func:`overlay` of ``image`` and ``mask`` to ``path`` (.jpg/.jpeg/.png); return the path."""
    blended = Image.fromarray(overlay(image, mask, color=color, alpha=alpha))
    options = {"quality": quality} if Path(path).suffix.lower() in (".jpg", ".jpeg") else {}
    return _save_image(blended, path, **options)


def mask_to_rle(mask: Any) -> dict:
    """COCO compressed RLE of an (H, W) binary mask: ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    from pycocotools import mask as mask_utils

    pixels = np.asfortranarray(_binary(mask).astype(np.uint8))
    rle = mask_utils.encode(pixels)
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """The (H, W) bool mask of a COCO compressed RLE (``counts`` as ``str`` or ``bytes``)."""
    from pycocotools import mask as mask_utils

    try:
        size, counts = rle["size"], rle["counts"]
    except (KeyError, TypeError):
        raise InputError("rle: expected a dict with 'size' [H, W] and 'counts'") from None
    if isinstance(counts, list):
        raise InputError("rle: uncompressed RLE (counts as a list) is not supported; use compressed counts")
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    with warnings.catch_warnings():
        # pycocotools' decoder trips NumPy 2's __array__(copy=...) deprecation internally; nothing to act on here
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword", category=DeprecationWarning)
        return mask_utils.decode({"size": list(size), "counts": counts}).astype(bool)


def coco_result(mask: Any, *, image_id: int, score: float, category_id: int = 1, file_name: str | None = None,
                **extra: Any) -> dict:
    """One entry of a COCO results file (``COCO.loadRes`` / ``COCOeval(..., "segm")``) for ``mask``.

    Keys: image_id, category_id, segmentation (compressed RLE, counts as str), score, height, width,
    area (pixels), bbox (x, y, w, h), file_name when given, then ``extra`` as given.
    """
    from pycocotools import mask as mask_utils

    mask = _binary(mask)
    rle = mask_to_rle(mask)
    encoded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    entry = {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": rle,
        "score": float(score),
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "area": int(mask_utils.area(encoded)),
        "bbox": [float(v) for v in mask_utils.toBbox(encoded)],
    }
    if file_name is not None:
        entry["file_name"] = str(file_name)
    entry.update(extra)
    return entry


def save_json(data: Any, path: PathLike) -> Path:
    """Write ``data`` as UTF-8 JSON (2-space indent) atomically; return the path."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    with atomic_file(path) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


def davis_palette(count: int = 256) -> np.ndarray:
    """The PASCAL VOC / DAVIS colour map as a (count, 3) uint8 array: 0 black, 1 dark red, 2 dark green, ...

    Each id's bits are spread over the colour channels from the most significant bit down: bit 0 of
    the id goes to red, bit 1 to green, bit 2 to blue, then the next three bits one position lower.
    """
    ids = np.arange(count)
    palette = np.zeros((count, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            palette[:, channel] |= bit << (7 - shift)
    return palette.astype(np.uint8)


def save_palette_png(labels: Any, path: PathLike, palette: np.ndarray | None = None) -> Path:
    """Write an (H, W) map of object ids (0 = background, 1..255) as a palette PNG; return the path.

    ``palette`` (N, 3) uint8 defaults to :func:`davis_palette`; ids beyond it are an error.
    """
    array = np.asarray(labels)
    if array.ndim != 2 or 0 in array.shape:
        raise InputError(f"labels: expected an (H, W) array of object ids, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"labels: expected integer object ids, got dtype {array.dtype}")
    colours = davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    if colours.ndim != 2 or colours.shape[1] != 3 or not 1 <= len(colours) <= 256:
        raise InputError(f"palette: expected an (N, 3) array with N <= 256, got shape {colours.shape}")
    if array.min() < 0 or array.max() >= len(colours):
        raise InputError(f"labels: object ids must lie in 0..{len(colours) - 1}, got {array.min()}..{array.max()}")
    image = Image.fromarray(array.astype(np.uint8))
    image.putpalette(colours.reshape(-1).tolist())  # turns the 'L' image into 'P' with these colours
    return _save_image(image, path)
