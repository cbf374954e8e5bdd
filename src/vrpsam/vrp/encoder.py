"""The VRP encoder: frozen backbone features, the feature augmenter and the prompt generator.

It turns a target image and an annotated reference image into ``num_queries`` prompt tokens for SAM's
mask decoder (official ``VRP_encoder.forward``, §2.1-2.5 of the official-code notes):

* frozen backbone: layer2 and layer3 maps concatenated ("mid" features) and layer4 ("deep" features);
  the reference's layer3 map is multiplied by the downsampled annotation before layer4;
* feature augmenter: a shared 1x1 conv to ``hidden_dim`` (+ReLU, Dropout2d), the masked-average
  prototype of the reference, and a shared 1x1 "merge" conv over ``[features, prototype, 10 * map]``
  where the map is the annotation for the reference and the layer4 cosine prior for the target;
* prompt generator (:class:`PromptGenerator`).

The reference side is split off (:meth:`VRPEncoder.encode_reference`) so that one annotated reference
can be encoded once and reused for any number of targets. Attribute names of the trainable modules are
the official ones, so the trainable state-dict keys equal the official checkpoint keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .downsample import MODES as DOWNSAMPLE_MODES
from .downsample import downsample_annotation
from .prompt_generator import PromptGenerator

# Official constants; they are part of the learned function.
PROTOTYPE_EPS = 0.0005
COSINE_EPS = 1e-7
MAP_SCALE = 10.0
# Modules that train; everything else (the backbone) is frozen.
TRAINABLE_MODULES = ("downsample_query", "merge_1", "transformer_decoder")
# How the reference's layer4 map for the target prior is made: "official" runs layer4 on the masked
# layer3 map; "masked_features" masks the layer4 map of the whole image, which depends on the image
# only, so frozen features can be cached per image (and it keeps the unmasked map for other uses).
REFERENCE_PRIORS = ("official", "masked_features")


@dataclass
class TargetFeatures:
    """Frozen backbone features of a batch of target images."""

    mid: torch.Tensor  # (B, c2 + c3, h, w): layer2 (resized to the layer3 grid if needed) and layer3
    deep: torch.Tensor  # (B, c4, h, w): layer4


@dataclass
class ReferenceEncoding:
    """Everything the target side needs from one batch of annotated references (B may be 1 for any targets)."""

    tokens: torch.Tensor  # (B, hidden, h, w): merged reference features ("supp_feat_1")
    masked_deep: torch.Tensor  # (B, c4, h, w): layer4(layer3 * mask) * mask, for the target's prior
    mask: torch.Tensor  # (B, 1, h, w): the annotation on the layer3 grid
    prototype: torch.Tensor  # (B, hidden, 1, 1): masked average of the reference features
    queries: torch.Tensor  # (B, Q, hidden): prompt-generator queries after the reference stage
    # Unmasked frozen maps of the reference, kept with the "masked_features" prior only (else None):
    mid: torch.Tensor | None = None  # (B, c2 + c3, h, w)
    deep: torch.Tensor | None = None  # (B, c4, h, w)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]


def masked_average(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) features, (B, 1, h, w) mask -> (B, C, 1, 1) average over the mask; 0 for an empty mask."""
    area = mask.sum(dim=(2, 3), keepdim=True) + PROTOTYPE_EPS
    return (features * mask).sum(dim=(2, 3), keepdim=True) / area


def cosine_prior(masked_reference: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reference (Br, C, hr, wr) and target (B, C, h, w) layer4 maps -> prior (B, 1, h, w).

    For every target pixel, its best cosine similarity with any reference pixel (PFENet's prior without
    the min-max normalisation, as official). ``Br`` is ``B`` or 1 (one reference for all targets).

    Reference pixels outside the annotation are all-zero vectors, whose similarity is exactly 0
    (0 / (0 + eps)). So only the non-zero pixels are compared, and a 0 joins the maximum when any
    zero pixel exists: the same values as the full (hr*wr) x (h*w) comparison, at the cost of the
    annotated area only.
    """
    b, _, h, w = target.shape
    target = target.flatten(2)  # (B, C, h*w)
    target_norm = target.norm(dim=1, keepdim=True)  # (B, 1, h*w)
    shared = masked_reference.shape[0] == 1
    priors = []
    for i, reference in enumerate(masked_reference.flatten(2).transpose(1, 2)):  # (hr*wr, C) each
        queries, query_norm = (target, target_norm) if shared else (target[i : i + 1], target_norm[i : i + 1])
        active = reference.ne(0).any(dim=1)
        reference = reference[active]  # (K, C)
        if reference.shape[0] == 0:
            priors.append(queries.new_zeros(queries.shape[0], h * w))
            continue
        norms = reference.norm(dim=1, keepdim=True) * query_norm  # (B, K, h*w)
        prior = (torch.matmul(reference, queries) / (norms + COSINE_EPS)).amax(dim=1)
        priors.append(prior if bool(active.all()) else prior.clamp_min(0.0))
    return torch.cat(priors).view(b, 1, h, w)


class VRPEncoder(nn.Module):
    """Target and annotated reference images -> prompt tokens (B, num_queries, hidden_dim).

    ``backbone``: a frozen module with stages ``layer0`` .. ``layer4`` and ``channels = (c2, c3, c4)``
    (see :mod:`vrpsam.vrp.backbones`). ``annotation_downsample``: how the annotation reaches the
    layer3 grid, ``"nearest"`` (official; drops most single-pixel clicks) or ``"max"`` (keeps them,
    needs a model trained that way). ``reference_prior``: see :data:`REFERENCE_PRIORS` (``"official"``
    unless a model was trained otherwise).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_queries: int = 50,
        hidden_dim: int = 256,
        annotation_downsample: str = "nearest",
        reference_prior: str = "official",
    ) -> None:
        super().__init__()
        c2, c3, _ = backbone.channels
        self.backbone = backbone.requires_grad_(False).eval()
        self.backbone_name: str | None = getattr(backbone, "name", None)
        self.num_queries = num_queries
        self.hidden_dim = hidden_dim
        if annotation_downsample not in DOWNSAMPLE_MODES:
            modes = ", ".join(DOWNSAMPLE_MODES)
            raise InputError(f"annotation_downsample: expected one of {modes}, got {annotation_downsample!r}")
        self.annotation_downsample = annotation_downsample
        if reference_prior not in REFERENCE_PRIORS:
            raise InputError(f"reference_prior: expected one of {', '.join(REFERENCE_PRIORS)}, got {reference_prior!r}")
        self.reference_prior = reference_prior
        self.downsample_query = nn.Sequential(
            nn.Conv2d(c2 + c3, hidden_dim, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Dropout2d(p=0.5),
        )
        self.merge_1 = nn.Sequential(
            nn.Conv2d(2 * hidden_dim + 1, hidden_dim, kernel_size=1, bias=False),
            nn.ReLU(),
        )
        self.transformer_decoder = PromptGenerator(num_queries, hidden_dim)

    def train(self, mode: bool = True) -> "VRPEncoder":
        # The backbone is a fixed feature extractor whatever the caller does; only the VRP parts train.
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_modules(self) -> nn.ModuleDict:
        """The VRP parts as one module whose state-dict keys are the official ones (shares the parameters)."""
        return nn.ModuleDict({name: getattr(self, name) for name in TRAINABLE_MODULES})

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the VRP parts only (1,592,064 values with ResNet-50)."""
        return list(self.trainable_modules().parameters())

    @torch.no_grad()
    def _mid_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> layer2 and layer3 maps concatenated (B, c2 + c3, h, w), and layer3 (B, c3, h, w)."""
        backbone = self.backbone
        f2 = backbone.layer2(backbone.layer1(backbone.layer0(image)))
        f3 = backbone.layer3(f2)
        if f2.shape[-2:] != f3.shape[-2:]:
            # VGG's layer2 is one stride finer than its layer3 (official: bilinear, corners aligned).
            f2 = F.interpolate(f2, size=f3.shape[-2:], mode="bilinear", align_corners=True)
        return torch.cat([f2, f3], dim=1), f3

    @torch.no_grad()
    def encode_target(self, target: torch.Tensor) -> TargetFeatures:
        """(B, 3, H, W) ImageNet-normalised targets -> frozen backbone features."""
        _check_images(target, "target")
        mid, f3 = self._mid_features(target)
        return TargetFeatures(mid=mid, deep=self.backbone.layer4(f3))

    def encode_reference(self, reference: torch.Tensor, annotation: torch.Tensor) -> ReferenceEncoding:
        """(B, 3, H, W) ImageNet-normalised references and (B, H, W) annotation maps -> :class:`ReferenceEncoding`."""
        _check_images(reference, "reference")
        _check_annotation(annotation, reference)
        with torch.no_grad():
            mid, f3 = self._mid_features(reference)
            mask = downsample_annotation(annotation, f3.shape[-2:], self.annotation_downsample).to(f3.dtype)
            unmasked = self.backbone.layer4(f3) if self.reference_prior == "masked_features" else None
            deep = self.backbone.layer4(f3 * mask) if unmasked is None else unmasked
            deep = deep * F.interpolate(mask, size=deep.shape[-2:], mode="bilinear", align_corners=True)
        features = self.downsample_query(mid)
        prototype = masked_average(features, mask)
        tokens = self._merge(features, prototype, mask)
        queries = self.transformer_decoder.attend_reference(tokens)
        return ReferenceEncoding(
            tokens=tokens, masked_deep=deep, mask=mask, prototype=prototype, queries=queries,
            mid=None if unmasked is None else mid, deep=unmasked,
        )

    def prompts(self, target: TargetFeatures, reference: ReferenceEncoding) -> torch.Tensor:
        """Target features and an encoded reference (batch B or 1) -> prompts (B, num_queries, hidden_dim)."""
        b = target.mid.shape[0]
        if reference.batch_size not in (1, b):
            n = reference.batch_size
            raise InputError(f"reference: a batch of {n} encodings cannot serve {b} targets (use 1 or {b})")
        with torch.no_grad():
            prior = cosine_prior(reference.masked_deep, target.deep)
        tokens = self._merge(self.downsample_query(target.mid), reference.prototype, prior)
        return self.transformer_decoder.attend_target(reference.queries, tokens)

    def forward(self, target: torch.Tensor, reference: torch.Tensor, annotation: torch.Tensor) -> torch.Tensor:
        """Targets, references (B, 3, H, W) ImageNet-normalised, annotations (B, H, W) -> prompts (B, Q, hidden)."""
        return self.prompts(self.encode_target(target), self.encode_reference(reference, annotation))

    def _merge(self, features: torch.Tensor, prototype: torch.Tensor, spatial_map: torch.Tensor) -> torch.Tensor:
        """Features (B, C, h, w), prototype (B or 1, C, 1, 1), map (B, 1, h, w) -> merged tokens (B, C, h, w)."""
        b, _, h, w = features.shape
        prototype = prototype.expand(b, -1, h, w)
        return self.merge_1(torch.cat([features, prototype, MAP_SCALE * spatial_map], dim=1))


def _check_images(images: torch.Tensor, name: str) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"{name}: expected a (B, 3, H, W) image tensor, got shape {tuple(images.shape)}")


def _check_annotation(annotation: torch.Tensor, reference: torch.Tensor) -> None:
    expected = (reference.shape[0], *reference.shape[-2:])
    if tuple(annotation.shape) != expected:
        raise InputError(f"annotation: expected shape {expected} to match the reference, got {tuple(annotation.shape)}")
