"""The official VRP-SAM data transform: images squashed to S×S and ImageNet-normalised, masks resized by nearest.

As ``data/dataset.py`` of the official code: ``Resize((S, S))`` with PIL bilinear (the aspect ratio is
not kept), ``ToTensor``, ``Normalize(ImageNet)``; masks through ``F.interpolate(mode="nearest")``,
which picks source pixel ``floor(i * in / out)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ImageNet statistics on [0, 1]; times 255 they are SAM's pixel_mean / pixel_std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, S, S) float32, PIL-bilinear resized and ImageNet-normalised."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype=np.float32)
    x = torch.from_numpy(resized).permute(2, 0, 1) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) uint8 -> (S, S) uint8, resized with PyTorch's nearest rule (values are kept, 255 included)."""
    m = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
    return F.interpolate(m, size=(size, size), mode="nearest")[0, 0].to(torch.uint8)
