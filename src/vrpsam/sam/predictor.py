"""Interactive prediction with SAM: embed an image once, then decode masks for many prompts.

Same contract as the official ``SamPredictor``; invalid inputs raise a one-line
:class:`~vrpsam.errors.InputError` instead of failing deep inside the model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from .sam import Sam
from .transforms import ResizeLongestSide

POINT_LABELS = (-1, 0, 1, 2, 3)  # padding, background, foreground, box top-left, box bottom-right


def _numbers(name: str, value, ndim_hint: str) -> np.ndarray:
    """``value`` as a finite float64 array, or an InputError naming the argument."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected {ndim_hint} of numbers, got {type(value).__name__}") from None
    if not np.isfinite(array).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return array


def _shape(x) -> str:
    return "x".join(str(s) for s in x.shape) or "a scalar"


class SamPredictor:
    """Holds one image's embedding and decodes masks for prompts given in original-image pixels."""

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an (H, W, 3) uint8 image whose channels are in ``image_format`` order ('RGB' or 'BGR')."""
        if not isinstance(image, np.ndarray):
            raise InputError(f"image: expected a numpy array (HxWx3 uint8), got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise InputError(f"image: expected an HxWx3 uint8 array, got shape {_shape(image)} dtype {image.dtype}")
        if image_format not in ("RGB", "BGR"):
            raise InputError(f"image_format: must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        resized = torch.as_tensor(self.transform.apply_image(image), device=self.device)
        self.set_torch_image(resized.permute(2, 0, 1).contiguous()[None], image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Sequence[int]) -> None:
        """Embed a (1, 3, h, w) image already resized with :class:`ResizeLongestSide` (pixels 0..255).

        ``original_image_size`` is the (H, W) of the image before resizing; masks come back at that size.
        """
        side = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[:2] != (1, 3) or max(shape[2:]) != side:
            raise InputError(
                f"transformed_image: expected 1x3xHxW with longer side {side} (use ResizeLongestSide), "
                f"got {'x'.join(map(str, shape))}"
            )
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (shape[2], shape[3])
        self.features = self.model.image_encoder(self.model.preprocess(transformed_image))
        self.is_image_set = True

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise InputError("no image set: call set_image(...) before predicting or asking for the embedding")

    def _check_in_image(self, name: str, xy: np.ndarray) -> None:
        """(N, 2) pixel (x, y) must lie in [0, W] x [0, H] of the original image."""
        h, w = self.original_size
        outside = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
        if outside.any():
            x, y = xy[np.argmax(outside)]
            raise InputError(f"{name}: ({x:g}, {y:g}) is outside the image (x in [0, {w}], y in [0, {h}])")

    def _points(self, point_coords, point_labels) -> tuple[np.ndarray, np.ndarray]:
        if point_labels is None:
            raise InputError("point_labels: required when point_coords is given (1 foreground, 0 background)")
        coords = _numbers("point_coords", point_coords, "an Nx2 array")
        if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
            raise InputError(f"point_coords: expected an Nx2 array of (x, y) pixels, got shape {_shape(coords)}")
        labels = _numbers("point_labels", point_labels, "a length-N array")
        if labels.shape != (len(coords),):
            raise InputError(f"point_labels: expected {len(coords)} labels, one per point, got shape {_shape(labels)}")
        unknown = sorted(set(labels.tolist()) - set(POINT_LABELS))
        if unknown:
            raise InputError(f"point_labels: values must be in {{-1, 0, 1, 2, 3}}, got {unknown[0]:g}")
        self._check_in_image("point_coords", coords)
        return coords, labels

    def _box(self, box) -> np.ndarray:
        values = _numbers("box", box, "4 numbers")
        if values.size != 4 or values.ndim > 2:
            raise InputError(f"box: expected 4 numbers x1, y1, x2, y2, got shape {_shape(values)}")
        x1, y1, x2, y2 = values.reshape(4)
        if x2 < x1 or y2 < y1:
            raise InputError(f"box: expected x1 <= x2 and y1 <= y2, got ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
        self._check_in_image("box", values.reshape(2, 2))
        return values.reshape(1, 4)

    def _mask_input(self, mask_input) -> np.ndarray:
        mask = _numbers("mask_input", mask_input, "a 1xHxW array")
        expected = (1, *self.model.prompt_encoder.mask_input_size)
        if mask.shape != expected:
            raise InputError(
                f"mask_input: expected low-res logits of shape {'x'.join(map(str, expected))} "
                f"(e.g. a previous low_res_logits[i:i+1]), got {_shape(mask)}"
            )
        return mask

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one prompt set, in original-image pixels.

        point_coords (N, 2) (x, y) with point_labels (N,) (1 foreground, 0 background); box (4,)
        x1, y1, x2, y2; mask_input (1, 256, 256) low-res logits from an earlier call. Returns masks
        (C, H, W) (bool, or float logits if ``return_logits``), iou_predictions (C,) and low-res
        logits (C, 256, 256); C is 3 with ``multimask_output``, else 1.
        """
        self._require_image()
        if point_labels is not None and point_coords is None:
            raise InputError("point_coords: required when point_labels is given")
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            coords, labels = self._points(point_coords, point_labels)
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            boxes = self.transform.apply_boxes(self._box(box), self.original_size)
            box_t = torch.as_tensor(boxes, dtype=torch.float, device=self.device)[None]
        if mask_input is not None:
            mask_t = torch.as_tensor(self._mask_input(mask_input), dtype=torch.float, device=self.device)[None]
        masks, iou, low_res = self.predict_torch(coords_t, labels_t, box_t, mask_t, multimask_output, return_logits)
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low_res[0].cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for B prompt sets given as tensors already in the resized frame (ResizeLongestSide).

        point_coords (B, N, 2), point_labels (B, N), boxes (B, 4), mask_input (B, 1, 256, 256).
        Returns masks (B, C, H, W), iou_predictions (B, C) and low-res logits (B, C, 256, 256).
        """
        self._require_image()
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.model.prompt_encoder(points, boxes, mask_input)
        low_res, iou = self.model.mask_decoder(
            self.features, self.model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, (1, 256, h, w) (h = w = 64 for the official models)."""
        self._require_image()
        return self.features
