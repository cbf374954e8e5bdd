"""Fixed 2-D sine/cosine position encoding for feature maps (the DETR / Mask2Former "sine" variant).

The VRP prompt generator adds it to the attention keys of both the reference and the target tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """(B, C, H, W) feature map -> (B, 2 * num_pos_feats, H, W) position encoding (depends on H, W only).

    Rows and columns are numbered 1..H and 1..W, divided by the last number (plus 1e-6) and scaled to
    ``(0, scale]`` when ``normalize``. Each axis then gets ``num_pos_feats`` channels where channel ``i``
    is ``sin`` (even ``i``) or ``cos`` (odd ``i``) of ``pos / temperature ** (2 * (i // 2) / num_pos_feats)``.
    The y channels come first, then the x channels.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def _axis(self, length: int, device: torch.device) -> torch.Tensor:
        """(length, num_pos_feats) encoding of positions 1..length along one axis."""
        position = torch.arange(1, length + 1, dtype=torch.float32, device=device)
        if self.normalize:
            # The same float32 operations as the reference implementation, so the values match bit for bit.
            position = position / (position[-1:] + 1e-6) * self.scale
        index = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        half_index = torch.div(index, 2, rounding_mode="floor")
        frequencies = self.temperature ** (2 * half_index / self.num_pos_feats)
        angles = position[:, None] / frequencies
        # Interleave: even channels take sin of the even angles, odd channels cos of the odd ones.
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        pos_y = self._axis(h, x.device)[:, None, :].expand(h, w, self.num_pos_feats)
        pos_x = self._axis(w, x.device)[None, :, :].expand(h, w, self.num_pos_feats)
        pos = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)
        return pos.unsqueeze(0).expand(b, -1, -1, -1).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale:.4f}"
        )
