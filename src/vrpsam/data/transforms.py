"""The official VRP-SAM data transform: images squashed to S×S and ImageNet-normalised, masks resized by nearest.

As ``data/dataset.py`` of the official code: ``Resize((S, S))`` with PIL bilinear (the aspect ratio is
not kept), ``ToTensor``, ``Normalize(ImageNet)``; masks through ``F.interpolate(mode="nearest")``,
which picks source pixel ``floor(i * in / out)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..io.images import normalised


def image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, S, S) float32, PIL-bilinear resized and ImageNet-normalised."""
    return normalised(image, (size, size))


def mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) uint8 -> (S, S) uint8, resized with PyTorch's nearest rule (values are kept, 255 included)."""
    m = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
    return F.interpolate(m, size=(size, size), mode="nearest")[0, 0].to(torch.uint8)
