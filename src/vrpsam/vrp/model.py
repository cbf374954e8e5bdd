"""VRP-SAM: a VRP encoder whose prompt tokens drive a frozen, unmodified SAM mask decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sam.sam import Sam
from .encoder import VRPEncoder
from .preprocess import check_mode


class VRPSAM(nn.Module):
    """The VRP encoder plus any ``sam_model_registry`` model, kept frozen.

    The prompt tokens are SAM's *sparse* embeddings, the dense embedding is ``no_mask_embed``, and
    the decoder runs with ``multimask_output=False`` (§2.6 of the official-code notes). SAM's own
    modules are never changed: loading any official SAM checkpoint keeps working.
    """

    def __init__(self, sam: Sam, encoder: VRPEncoder, *, preprocessing: str = "official", input_size: int = 512) -> None:
        super().__init__()
        check_mode(preprocessing)
        self.sam = sam
        self.encoder = encoder
        self.preprocessing = preprocessing
        self.input_size = input_size
        self.sam.requires_grad_(False)
        self.sam.eval()

    def train(self, mode: bool = True) -> "VRPSAM":
        # SAM stays in eval whatever the caller does; only the VRP encoder trains.
        super().train(mode)
        self.sam.eval()
        return self

    @property
    def sam_size(self) -> int:
        return self.sam.image_encoder.img_size

    def sam_input(self, target: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised target -> (B, 3, 1024, 1024) for SAM, the official way (bilinear, corners aligned)."""
        return F.interpolate(target, size=(self.sam_size, self.sam_size), mode="bilinear", align_corners=True)

    @torch.no_grad()
    def embed(self, sam_image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1024, 1024) normalised -> SAM image embeddings (B, 256, 64, 64)."""
        return self.sam.image_encoder(sam_image)

    def decode(self, embeddings: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (B, 256, h, w) and prompts (B, Q, 256) -> low-res logits (B, 1, 4h, 4w), IoU (B, 1)."""
        prompt_encoder = self.sam.prompt_encoder
        b, _, h, w = embeddings.shape
        dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        return self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=prompts,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )

    def forward(
        self,
        target: torch.Tensor,
        reference: torch.Tensor,
        annotation: torch.Tensor,
        sam_image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, 1, S, S) over the target's square input.

        ``target``/``reference``: (B, 3, S, S) ImageNet-normalised; ``annotation``: (B, S, S) map of the
        reference. ``sam_image`` (B, 3, 1024, 1024), SAM-normalised, defaults to the official rule (the
        target upsampled); the ``standard`` predictor passes the padded full-resolution image instead.
        """
        prompts = self.encoder(target, reference, annotation)
        embeddings = self.embed(self.sam_input(target) if sam_image is None else sam_image)
        low_res, _ = self.decode(embeddings, prompts)
        return self.upsample(low_res, target.shape[-1])

    def upsample(self, low_res: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 1, 4h, 4w) low-res logits -> (B, 1, size, size); corners aligned in ``official`` mode, as there."""
        official = self.preprocessing == "official"
        return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=official)
