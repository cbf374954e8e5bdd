"""Resize images so their longest side is SAM's input size, and map prompts into the resized frame."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


class ResizeLongestSide:
    """Scale so that the longer side becomes ``target_length``, keeping the aspect ratio.

    ``apply_image`` is the resize the official predictor feeds the model (PIL bilinear, which
    antialiases when shrinking); ``apply_image_torch`` is close to it but not identical.
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """(H, W) after scaling the longer side of (oldh, oldw) to ``long_side_length``, rounded half up."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        return int(oldh * scale + 0.5), int(oldw * scale + 0.5)

    def _new_size(self, original_size: Sequence[int]) -> tuple[int, int]:
        return self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == target_length."""
        h, w = self._new_size(image.shape[:2])
        return np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """(..., 2) pixel (x, y) in an image of ``original_size`` (H, W) -> float64 in the resized frame."""
        h, w = self._new_size(original_size)
        coords = np.array(coords, dtype=float)  # a copy, never the caller's array
        coords[..., 0] *= w / original_size[1]
        coords[..., 1] *= h / original_size[0]
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """(B, 4) x1, y1, x2, y2 boxes -> (B, 4) float64 in the resized frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> (B, C, h, w), bilinear with antialiasing."""
        size = self.get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: Sequence[int]) -> torch.Tensor:
        """Like :meth:`apply_coords` for a tensor; returns a new float32 tensor."""
        h, w = self._new_size(original_size)
        scale = torch.tensor([w / original_size[1], h / original_size[0]], dtype=torch.float32, device=coords.device)
        return coords.to(torch.float32) * scale

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: Sequence[int]) -> torch.Tensor:
        """Like :meth:`apply_boxes` for a tensor: (B, 4) -> (B, 4) float32."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
