"""Turning user images and annotations into the model's square inputs, and logits back into masks.

Two preprocessing modes:

``official``
    The VRP-SAM protocol: the image is squashed to ``input_size``² (PIL bilinear, aspect ratio lost),
    ImageNet-normalised, and SAM sees that tensor bilinearly upsampled (``align_corners=True``) to
    its own input size. Logits come back at ``input_size``² and are resized to the original size.
    Needed to reproduce the paper and to use checkpoints trained by the official code.
``standard``
    What ``SamPredictor`` does: the longest side is resized to the model size and the rest padded,
    so the aspect ratio is kept. SAM reads the image resized from the original to its own size;
    the VRP backbone reads the same layout at ``input_size``. Masks come back at the original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io.images import normalised

Preprocessing = Literal["official", "standard"]
PREPROCESSING_MODES: tuple[str, ...] = ("official", "standard")



def check_mode(mode: str) -> None:
    if mode not in PREPROCESSING_MODES:
        raise InputError(f"preprocessing: expected one of {', '.join(PREPROCESSING_MODES)}, got {mode!r}")


def longest_side_shape(height: int, width: int, length: int) -> tuple[int, int]:
    """(H, W) scaled so the longest side is ``length``, rounded as SAM's ResizeLongestSide does."""
    scale = length / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclass(frozen=True)
class Frame:
    """Where an original image sits inside a square model input of side ``size``.

    ``resized`` is the (h, w) the image occupies at the top-left of the square; the rest is padding
    (``standard``) or nothing (``official``, where ``resized == (size, size)``).
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    size: int

    @classmethod
    def for_image(cls, original: tuple[int, int], size: int, mode: str) -> "Frame":
        check_mode(mode)
        resized = (size, size) if mode == "official" else longest_side_shape(*original, size)
        return cls(original=tuple(original), resized=resized, size=size)


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an (H, W, 3) uint8 RGB array."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name}: expected an HxWx3 uint8 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"{name}: expected an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name}: image is empty ({image.shape[0]}x{image.shape[1]})")
    return image


def normalised_tensor(image: np.ndarray, frame: Frame, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, S, S) ImageNet-normalised, resized into ``frame`` and zero-padded."""
    h, w = frame.resized
    x = normalised(image, frame.resized).to(device)[None]
    return F.pad(x, (0, frame.size - w, 0, frame.size - h))


def pad_map(annotation_map: np.ndarray, frame: Frame, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h, w) map already rasterised at ``frame.resized`` -> (1, S, S) float tensor, zero-padded."""
    h, w = frame.resized
    if annotation_map.shape != (h, w):
        raise InputError(f"annotation map: expected shape {(h, w)}, got {annotation_map.shape}")
    m = torch.from_numpy(np.ascontiguousarray(annotation_map, dtype=np.float32)).to(device)[None]
    return F.pad(m, (0, frame.size - w, 0, frame.size - h))


def logits_to_original(logits: torch.Tensor, frame: Frame, mode: str) -> torch.Tensor:
    """(B, 1, s, s) logits over the square input -> (B, 1, H, W) at the original image size.

    ``official`` resizes bilinearly with ``align_corners=True`` as the official n-shot helper does;
    ``standard`` upsamples to the square, crops the padding, then resizes (SAM's postprocess).
    """
    if mode == "official":
        return F.interpolate(logits, size=frame.original, mode="bilinear", align_corners=True)
    logits = F.interpolate(logits, size=(frame.size, frame.size), mode="bilinear", align_corners=False)
    h, w = frame.resized
    logits = logits[..., :h, :w]
    return F.interpolate(logits, size=frame.original, mode="bilinear", align_corners=False)
