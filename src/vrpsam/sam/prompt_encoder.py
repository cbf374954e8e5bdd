"""SAM's prompt encoder: points, boxes and low-resolution masks to decoder tokens and a dense map.

Key names and shapes follow the official checkpoints (``prompt_encoder.*``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of 2-D positions with a fixed random Gaussian frequency matrix.

    The matrix is a persistent buffer (``positional_encoding_gaussian_matrix``, shape (2, F)), so
    checkpoints carry it; the encoding of a point in [0, 1]² has 2F channels: F sines, then F cosines.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _encode(self, unit_xy: torch.Tensor) -> torch.Tensor:
        """(..., 2) positions in [0, 1]² as (x, y) -> (..., 2F)."""
        phase = (2 * unit_xy - 1) @ self.positional_encoding_gaussian_matrix
        phase = 2 * math.pi * phase
        return torch.cat([phase.sin(), phase.cos()], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (H, W) grid of cells: -> (2F, H, W)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) pixel coordinates (x, y) in an image of ``image_size`` (H, W) -> (B, N, 2F)."""
        scale = coords.new_tensor([image_size[1], image_size[0]])
        return self._encode((coords / scale).to(torch.float32))


class PromptEncoder(nn.Module):
    """Embeds point, box and mask prompts for :class:`~vrpsam.sam.mask_decoder.MaskDecoder`.

    Point labels: 1 foreground, 0 background, -1 padding ("not a point"). Any other label (SAM's ONNX
    export uses 2 and 3 for box corners) gets its position encoding only, with no label embedding, as
    in the official PyTorch ``PromptEncoder``; box corners are embedded through ``boxes``.
    """

    num_point_embeddings = 4  # background, foreground, box top-left, box bottom-right

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of every image-embedding cell: (1, embed_dim, h, w)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2) pixel coordinates and (B, N) labels -> (B, N (+1 if pad), D)."""
        points = points + 0.5  # the centre of the pixel
        if pad:  # without a box the decoder still expects a padding token after the points
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        labels = labels.long()
        encoding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        # Rows 0 and 1 embed background and foreground; other labels add nothing (official behaviour).
        label_table = torch.cat([self.point_embeddings[0].weight, self.point_embeddings[1].weight], dim=0)
        labelled = encoding + label_table[labels.clamp(0, 1)] * ((labels == 0) | (labels == 1))[..., None]
        padding = self.not_a_point_embed.weight.expand_as(encoding)
        return torch.where((labels == -1)[..., None], padding, labelled)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) boxes as x1, y1, x2, y2 pixels -> (B, 2, D): one token per corner."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        encoding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_table = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return encoding + corner_table

    @staticmethod
    def _batch_size(points, boxes, masks) -> int:
        for given in (points[0] if points is not None else None, boxes, masks):
            if given is not None:
                return given.shape[0]
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed any combination of prompts for a batch of B prompt sets.

        points: ((B, N, 2) pixel coordinates (x, y) in the padded input frame, (B, N) labels) or None;
        boxes: (B, 4) x1, y1, x2, y2 in the same frame, or None; masks: (B, 1, 4h, 4w) logits or None.
        Returns sparse (B, T, D) tokens (points, then box corners) and dense (B, D, h, w) embeddings.
        """
        bs = self._batch_size(points, boxes, masks)
        device = self.point_embeddings[0].weight.device
        sparse = [torch.empty((bs, 0, self.embed_dim), device=device)]
        if points is not None:
            sparse.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return torch.cat(sparse, dim=1), dense
