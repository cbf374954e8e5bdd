"""SAM's mask decoder: image embedding + prompt tokens -> low-resolution mask logits and IoU scores.

Key names and shapes follow the official checkpoints (``mask_decoder.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .common import LayerNorm2d


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: (..., in) -> (..., out)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class MaskDecoder(nn.Module):
    """Predicts masks from an image embedding and prompt embeddings with a two-way transformer.

    Output token 0 predicts the single mask used for unambiguous prompts; tokens 1..num_multimask_outputs
    predict the alternative masks returned when ``multimask_output`` is set.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompt sets.

        image_embeddings: (B, D, h, w) with B == 1 (one image shared by all N prompt sets, as in the
        official decoder, which repeats it) or B == N (prompt set i belongs to image i, the batched
        VRP-SAM case; used as is, without a copy). image_pe: (1, D, h, w). sparse_prompt_embeddings:
        (N, T, D). dense_prompt_embeddings: (N or 1, D, h, w).

        Returns masks (N, C, 4h, 4w) logits and iou_pred (N, C), with C = num_multimask_outputs if
        ``multimask_output`` else 1.
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou_pred[:, chosen]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, but returns all num_mask_tokens masks (N, K, 4h, 4w) and scores (N, K)."""
        n = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, n):
            raise InputError(
                f"image_embeddings: batch {image_embeddings.shape[0]} must be 1 or equal the {n} prompt sets"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.expand(n, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        src = src.expand(n, -1, -1, -1)  # a shared image broadcasts; B == N is left untouched
        _, c, h, w = src.shape

        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(n, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        _, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(n, c, h * w)).reshape(n, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
