"""The image encoder of ``lite``: frozen MobileNetV2 features and a small trainable neck, SAM-shaped.

No SAM weights can be had on these machines; the only real pretrained image network is the ImageNet
MobileNetV2. :class:`LiteImageEncoder` turns its three maps (layer2, layer3, layer4 of the
VRP backbone view at output stride 16; 32 channels at stride 8, 96 + 320 at stride 16) into SAM's image
embedding, (B, 256, S/8, S/8): 64×64 at a 512² input, the grid SAM's prompt encoder and mask decoder
expect at 1024² (so any SAM mask decoder works on it unchanged). The neck mirrors SAM's (projection,
LayerNorm2d, spatial mixing, LayerNorm2d) with a depthwise 3×3 conv; the semantic maps stay at stride
16, which keeps the model cheap enough to train on a CPU.

:class:`MemoisedBackbone` wraps a frozen backbone so that each stage's output is remembered by the
*content* of its input. The lite model reads the same MobileNetV2 maps three times per image (image
encoder, VRP encoder, prototype prior); with the memo each is computed once, and during training
every recurring augmented view of an image is computed once for the whole run. The memo is exact:
outputs are stored (and always returned) rounded to ``dtype``, so a hit and a miss give the same values.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..vrp.backbones.base import FrozenBackbone
from .common import LayerNorm2d
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .transformer import TwoWayTransformer

LITE_STRIDE = 8  # input pixels per embedding cell (MobileNetV2 at output stride 8)
EMBED_DIM = 256  # SAM's prompt / embedding width


class FeatureMemo:
    """An LRU map from (stage, input content) to a stage output, bounded in bytes."""

    def __init__(self, max_bytes: int, dtype: torch.dtype = torch.float16) -> None:
        self.max_bytes, self.dtype = int(max_bytes), dtype
        self._entries: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    @staticmethod
    def key(stage: int, x: torch.Tensor) -> tuple[int, str]:
        data = x.detach().to("cpu").contiguous()
        digest = hashlib.blake2b(f"{data.dtype}|{tuple(data.shape)}|".encode(), digest_size=16)
        digest.update(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
        return stage, digest.hexdigest()

    def __call__(self, stage: int, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``module(x)`` rounded to ``dtype`` and returned in ``x``'s dtype, from memory when seen before."""
        if self.max_bytes <= 0:
            return module(x).to(self.dtype).to(x.dtype)
        key = self.key(stage, x)
        stored = self._entries.get(key)
        if stored is None:
            self.misses += 1
            stored = module(x).to(self.dtype)
            self._entries[key] = stored
            self.bytes += stored.numel() * stored.element_size()
            while self.bytes > self.max_bytes and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        return stored.to(device=x.device, dtype=x.dtype)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


class _MemoStage(nn.Module):
    def __init__(self, index: int, stage: nn.Module, memo: FeatureMemo) -> None:
        super().__init__()
        self.index, self.stage, self.memo = index, stage, memo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.memo(self.index, self.stage, x)


class MemoisedBackbone(FrozenBackbone):
    """A frozen backbone whose layer2, layer3 and layer4 outputs are memoised by input content.

    ``layer0`` and ``layer1`` pass the image through; ``layer2`` runs the backbone's layer0..layer2.
    Same ``channels``, ``strides`` and ``name`` as ``backbone``; the stages share its parameters.
    ``max_bytes``: memory for remembered maps (0 turns the memo off; outputs are still rounded).
    """

    def __init__(self, backbone: FrozenBackbone, max_bytes: int = 1 << 30, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.channels, self.strides, self.name = backbone.channels, backbone.strides, backbone.name
        self.memo = FeatureMemo(max_bytes, dtype)
        self.layer0 = nn.Identity()
        self.layer1 = nn.Identity()
        self.layer2 = _MemoStage(2, nn.Sequential(backbone.layer0, backbone.layer1, backbone.layer2), self.memo)
        self.layer3 = _MemoStage(3, backbone.layer3, self.memo)
        self.layer4 = _MemoStage(4, backbone.layer4, self.memo)
        self.freeze()


class LiteNeck(nn.Module):
    """Layer2 (B, c2, h, w) and layer3 ⊕ layer4 (B, c3 + c4, h', w') -> (B, out_chans, h, w).

    The semantic maps are projected and upsampled to layer2's grid, layer2's projection (detail) is
    added, then space is mixed like SAM's neck: LayerNorm2d, depthwise 3×3, 1×1, LayerNorm2d.
    ``dropout``: in training, the probability of zeroing each input channel of a map (``nn.Dropout2d``):
    the frozen maps of a few fixed augmented views recur all run long, and this makes each step's
    maps new. No parameters, identity in eval mode.
    """

    def __init__(self, c2: int, c34: int, out_chans: int = EMBED_DIM, dropout: float = 0.0) -> None:
        super().__init__()
        # Identity at 0, so that runs without dropout draw no random numbers here (their logs stay the same).
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.deep_proj = nn.Conv2d(c34, out_chans, kernel_size=1, bias=False)
        self.detail_proj = nn.Conv2d(c2, out_chans, kernel_size=1, bias=False)
        self.mix = nn.Sequential(
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, groups=out_chans, bias=False),
            nn.Conv2d(out_chans, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, detail: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        detail, deep = self.drop(detail), self.drop(deep)
        deep = F.interpolate(self.deep_proj(deep), size=detail.shape[-2:], mode="bilinear", align_corners=False)
        return self.mix(deep + self.detail_proj(detail))


class LiteImageEncoder(nn.Module):
    """Frozen backbone maps + trainable neck: (B, 3, S, S) ImageNet-normalised -> (B, 256, S/8, S/8).

    ``backbone``: a frozen backbone with layer2 at stride 8 and layer3/layer4 at one common stride
    (MobileNetV2 at output stride 16: 64×64 and 32×32 maps at 512²; shared with the VRP encoder,
    ideally memoised). ``img_size``: S. Only ``neck`` (:class:`LiteNeck`, with ``feature_dropout``) trains.
    """

    def __init__(self, backbone: FrozenBackbone, img_size: int = 512, out_chans: int = EMBED_DIM,
                 feature_dropout: float = 0.0) -> None:
        super().__init__()
        s2, s3, s4 = backbone.strides
        if s2 != LITE_STRIDE or s3 != s4:
            raise ValueError(f"LiteImageEncoder needs layer2 at stride {LITE_STRIDE} and layer3/4 at one stride, got {backbone.strides}")
        c2, c3, c4 = backbone.channels
        self.img_size = img_size
        self.backbone = backbone
        self.neck = LiteNeck(c2, c3 + c4, out_chans, dropout=feature_dropout)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> frozen layer2 (B, c2, S/8, S/8) and layer3 ⊕ layer4 (B, c3 + c4, S/s, S/s)."""
        b = self.backbone
        f2 = b.layer2(b.layer1(b.layer0(x)))
        f3 = b.layer3(f2)
        return f2, torch.cat([f3, b.layer4(f3)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(*self.features(x))


def build_lite_sam(backbone: FrozenBackbone, *, image_size: int = 512, decoder_mlp_dim: int = 512,
                   feature_dropout: float = 0.0) -> Sam:
    """SAM's prompt encoder and mask decoder (two-way transformer of depth 2, ``decoder_mlp_dim`` wide)
    around :class:`LiteImageEncoder` (``feature_dropout``: its neck's), all randomly initialised; grid ``image_size / 8``."""
    grid = image_size // LITE_STRIDE
    return Sam(
        image_encoder=LiteImageEncoder(backbone, img_size=image_size, feature_dropout=feature_dropout),
        prompt_encoder=PromptEncoder(
            embed_dim=EMBED_DIM, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=EMBED_DIM,
            transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=decoder_mlp_dim, num_heads=8),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
