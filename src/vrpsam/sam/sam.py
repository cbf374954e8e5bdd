"""The Segment Anything model: image encoder, prompt encoder and mask decoder, with pre/post-processing."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)  # ImageNet RGB mean and std on the 0..255 scale
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """SAM. ``image_encoder`` maps (B, 3, S, S) to (B, 256, S/16, S/16) and exposes ``img_size`` (S).

    ``pixel_mean``/``pixel_std`` are non-persistent buffers, as in the official model: checkpoints do
    not carry them.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the square input of the image encoder (1024 for the official models)."""
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (..., 3, H, W) pixels on the 0..255 scale and zero-pad bottom/right to img_size²."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: Sequence[int], original_size: Sequence[int]
    ) -> torch.Tensor:
        """(B, C, h, w) low-res logits -> (B, C, H, W) logits at ``original_size`` (H, W).

        ``input_size`` is the (h, w) of the resized image before padding; the padding is cropped away.
        """
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, batched_input: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, torch.Tensor]]:
        """The official batched interface; prefer :class:`~vrpsam.sam.predictor.SamPredictor`.

        Each record holds 'image' (3, H, W) already resized with ResizeLongestSide, 'original_size'
        (H, W) and optionally 'point_coords' (N, P, 2) with 'point_labels' (N, P), 'boxes' (N, 4) and
        'mask_inputs' (N, 1, 4h, 4w), all in the resized frame. Each output holds 'masks' (N, C, H, W)
        booleans, 'iou_predictions' (N, C) and 'low_res_logits' (N, C, 4h, 4w).
        """
        embeddings = self.image_encoder(torch.stack([self.preprocess(r["image"]) for r in batched_input]))
        outputs = []
        for record, embedding in zip(batched_input, embeddings):
            points = (record["point_coords"], record["point_labels"]) if "point_coords" in record else None
            sparse, dense = self.prompt_encoder(points, record.get("boxes"), record.get("mask_inputs"))
            low_res, iou = self.mask_decoder(
                embedding[None], self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
            )
            masks = self.postprocess_masks(low_res, record["image"].shape[-2:], record["original_size"])
            outputs.append({"masks": masks > self.mask_threshold, "iou_predictions": iou, "low_res_logits": low_res})
        return outputs
