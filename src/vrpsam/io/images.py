"""Reading images and masks from disk, with one-line errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# ImageNet statistics on [0, 1]; times 255 they are SAM's pixel_mean / pixel_std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    return image


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    The EXIF orientation is applied, so pixel coordinates are those of the image as viewers show it.
    """
    image = ImageOps.exif_transpose(_open(path))
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask image as its raw (H, W) values: palette indices for 'P' PNGs, grey levels otherwise.

    No binarisation happens here; callers decide which values mean foreground.
    """
    image = _open(path)
    if image.mode in ("P", "L", "1", "I", "I;16"):
        values = np.asarray(image)
    elif image.mode in ("LA", "RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise InputError(f"{path}: a colour image is not a mask; save it as a single-channel or palette PNG")
        values = rgb[..., 0]
    else:
        raise InputError(f"{path}: unsupported mask image mode {image.mode!r}")
    if values.dtype == bool:
        values = values.astype(np.uint8)
    return values.copy()


def normalised(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) float32: PIL-bilinear resized to ``size`` = (h, w), ImageNet-normalised.

    The official VRP-SAM transform (``Resize``, ``ToTensor``, ``Normalize``) for a square ``size``.
    """
    h, w = size
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32)
    x = torch.from_numpy(resized).permute(2, 0, 1) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std
