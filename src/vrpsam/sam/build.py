"""Builders for the official SAM variants and MobileSAM, and the one table that names them.

Every builder is ``builder(checkpoint=None, *, image_size=1024) -> Sam``. ``checkpoint`` is a path or a
weights-registry name (``"sam_vit_b"``, ``"mobile_sam"``, ...; see :func:`vrpsam.weights.resolve`); the
file must be an official-layout state dict (``sam_vit_b_01ec64.pth``, ``mobile_sam.pt``, ...) and is
loaded strictly. The model comes back in eval mode with the loaded weights in effect (MobileSAM's
TinyViT derives cached tensors on ``eval()``, so eval comes after loading). Parameters keep
``requires_grad=True``; code that trains around SAM freezes it explicitly.

``image_size`` other than 1024 builds a smaller model for tests and experiments; the official
checkpoints only fit 1024 (their position tables have the 1024² shapes).
"""

from __future__ import annotations

import os
from typing import Callable

from torch import nn

from ..errors import InputError
from ..weights import load_into, read_state_dict, resolve
from .image_encoder import build_vit
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import build_tiny_vit
from .transformer import TwoWayTransformer

PROMPT_EMBED_DIM = 256
ENCODER_STRIDE = 16  # input pixels per image-embedding cell, for every encoder

Checkpoint = str | os.PathLike | None


def _assemble(image_encoder: nn.Module, image_size: int) -> Sam:
    """SAM around ``image_encoder`` with the prompt encoder and mask decoder every variant shares."""
    grid = image_size // ENCODER_STRIDE
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_EMBED_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=PROMPT_EMBED_DIM,
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )


def _build(make_encoder: Callable[[int], nn.Module], checkpoint: Checkpoint, image_size: int) -> Sam:
    if image_size <= 0 or image_size % ENCODER_STRIDE:
        raise InputError(f"image_size: must be a positive multiple of {ENCODER_STRIDE}, got {image_size}")
    sam = _assemble(make_encoder(image_size), image_size)
    if checkpoint is not None:
        path = resolve(checkpoint)
        load_into(sam, read_state_dict(path), source=str(path))
    return sam.eval()


def build_sam_vit_h(checkpoint: Checkpoint = None, *, image_size: int = 1024) -> Sam:
    """SAM ViT-H (official ``sam_vit_h_4b8939.pth``)."""
    return _build(lambda size: build_vit("vit_h", size), checkpoint, image_size)


def build_sam_vit_l(checkpoint: Checkpoint = None, *, image_size: int = 1024) -> Sam:
    """SAM ViT-L (official ``sam_vit_l_0b3195.pth``)."""
    return _build(lambda size: build_vit("vit_l", size), checkpoint, image_size)


def build_sam_vit_b(checkpoint: Checkpoint = None, *, image_size: int = 1024) -> Sam:
    """SAM ViT-B (official ``sam_vit_b_01ec64.pth``)."""
    return _build(lambda size: build_vit("vit_b", size), checkpoint, image_size)


def build_sam_vit_t(checkpoint: Checkpoint = None, *, image_size: int = 1024) -> Sam:
    """MobileSAM: TinyViT encoder with SAM's prompt encoder and decoder (official ``mobile_sam.pt``)."""
    return _build(build_tiny_vit, checkpoint, image_size)


sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_t": build_sam_vit_t,
}

# model name -> the weights-registry entry of its official checkpoint
OFFICIAL_WEIGHTS: dict[str, str] = {
    "default": "sam_vit_h",
    "vit_h": "sam_vit_h",
    "vit_l": "sam_vit_l",
    "vit_b": "sam_vit_b",
    "vit_t": "mobile_sam",
}
