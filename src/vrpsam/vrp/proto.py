"""Training-free prototype matching on frozen backbone features: the ``proto`` baseline and lite's prior.

The rule (foreground/background prototypes, as PANet's non-parametric matching):

1. Features: the backbone's layer3 and layer4 maps, each L2-normalised per cell, concatenated
   (layer3 keeps appearance, layer4 semantics; with MobileNetV2 the pair beat either alone on the
   persam and FSS examples).
2. Prototypes: the reference features averaged over the annotated cells (foreground) and over the
   other cells (background), each L2-normalised. The annotation is used as given on the feature grid:
   a box is its filled rectangle, points and scribbles are their pixels (so the background prototype
   of a point annotation is the rest of the image, object included).
3. Score of a target cell: cosine similarity with the foreground prototype minus that with the
   background prototype, in [-2, 2]; the cell is foreground when the score is positive.

With several references the scores are averaged. :class:`PrototypePrior` turns the score into mask
logits with a learned scale and bias, which VRP-SAM can use as a dense prompt and a shortcut to its
output (see :meth:`vrpsam.vrp.model.VRPSAM.decode`).

Self-support (as SSP, Fan et al., ECCV 2022, training-free here): objects differ more between two photos
than within one, so the target's own confident cells (score above :data:`SELF_SUPPORT_FOREGROUND`)
and its negative cells give a second pair of prototypes, taken from the target itself, and
:func:`self_support_scores` mixes their score with the reference's. On the lite model's held-out
coco128 episodes it lifted the rule's mIoU by 1.5-2.5 points for every annotation type.

Background prototypes (:func:`background_prototypes`, ``PrototypePrior(background_count=K)``): the
reference's background as K k-means clusters, each target cell scored against the closest. A better
training-free rule on coco128's validation classes (mean mIoU 11.5 -> 13.6 with K = 4), yet lite
trained with it validated worse (``checkpoints/lite/README.md``), so lite's default stays K = 1.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..cluster import spherical_kmeans
from ..errors import InputError
from .encoder import ReferenceEncoding, TargetFeatures

EPS = 1e-6
# Score 0.05 -> logit 1: the training-free decision, sharpened. A first lite trained with 10 segmented
# coco128's held-out classes better when its prior was weighted 20-30 at test time (mask mIoU 15.4 -> 19.1
# at 20), and AdamW moves this scalar by ~lr per step, so its initial value is what training keeps.
INITIAL_SCALE = 20.0
# A target cell scoring above this (cos difference) is trusted as foreground for its own prototype.
SELF_SUPPORT_FOREGROUND = 0.1
BACKGROUND_KMEANS_ITERATIONS = 10


def proto_features(mid: torch.Tensor, deep: torch.Tensor, c2: int) -> torch.Tensor:
    """Layer2+3 maps (B, c2 + c3, h, w) and layer4 (B, c4, h, w) -> normalised layer3 ⊕ layer4 (B, c3 + c4, h, w)."""
    return torch.cat([F.normalize(mid[:, c2:], dim=1), F.normalize(deep, dim=1)], dim=1)


def prototype_scores(target: torch.Tensor, reference: torch.Tensor, weights: torch.Tensor,
                     background_weights: torch.Tensor | None = None, background_count: int = 1) -> torch.Tensor:
    """Target (B, C, h, w), reference (B or 1, C, h', w') features, annotation weights (B or 1, 1, h', w')
    in [0, 1] -> scores (B, 1, h, w): cos(foreground prototype) - cos(background prototype). The
    background is where ``background_weights`` are (default: ``1 - weights``). With ``background_count``
    K > 1 it is K prototypes (:func:`background_prototypes`) and the score subtracts the closest one's cosine."""
    if background_weights is None:
        background_weights = 1 - weights
    foreground = F.normalize((reference * weights).sum(dim=(2, 3)) / (weights.sum(dim=(2, 3)) + EPS), dim=1)
    target = F.normalize(target, dim=1)
    if background_count == 1:
        background = (reference * background_weights).sum(dim=(2, 3)) / (background_weights.sum(dim=(2, 3)) + EPS)
        difference = foreground - F.normalize(background, dim=1)  # (B, C)
        return torch.einsum("bchw,bc->bhw", target, difference.expand(target.shape[0], -1)).unsqueeze(1)
    backgrounds = background_prototypes(reference, background_weights, background_count)  # (B or 1, K, C)
    closest = torch.einsum("bchw,bkc->bkhw", target, backgrounds.expand(target.shape[0], -1, -1)).amax(dim=1)
    return (torch.einsum("bchw,bc->bhw", target, foreground.expand(target.shape[0], -1)) - closest).unsqueeze(1)


def background_prototypes(reference: torch.Tensor, background_weights: torch.Tensor, count: int) -> torch.Tensor:
    """Reference features (B, C, h, w) and background weights (B, 1, h, w) -> (B, count, C) unit prototypes:
    the spherical k-means centroids (:data:`BACKGROUND_KMEANS_ITERATIONS`, seed 0) of the cells weighted
    above 0.5. One background mean blurs a varied scene (sky, road, crowd) into a direction close to
    none of it; the closest of several matches the target's background better. Fewer cells than
    ``count`` repeat centroids; none gives zero vectors (cosine 0, as an empty mean does)."""
    cells = F.normalize(reference, dim=1).flatten(2).transpose(1, 2)  # (B, hw, C)
    chosen = background_weights.flatten(1) > 0.5
    prototypes = reference.new_zeros(reference.shape[0], count, reference.shape[1])
    for b in range(reference.shape[0]):
        points = cells[b][chosen[b]]
        if len(points):
            centroids = spherical_kmeans(points, min(count, len(points)), BACKGROUND_KMEANS_ITERATIONS, seed=0)
            prototypes[b] = centroids[torch.arange(count) % len(centroids)]
    return prototypes


def self_support_scores(target: torch.Tensor, scores: torch.Tensor, weight: float) -> torch.Tensor:
    """Target features (B, C, h, w) and their scores (B, 1, h, w) -> ``(1 - weight) · scores + weight ·``
    the score against the target's own prototypes: foreground from cells above
    :data:`SELF_SUPPORT_FOREGROUND`, background from cells below 0. A target without both keeps its scores."""
    foreground, background = (scores > SELF_SUPPORT_FOREGROUND).to(target.dtype), (scores < 0).to(target.dtype)
    usable = (foreground.sum(dim=(1, 2, 3)) > 0) & (background.sum(dim=(1, 2, 3)) > 0)
    own = prototype_scores(target, target, foreground, background)
    mixed = (1 - weight) * scores + weight * own
    return torch.where(usable[:, None, None, None], mixed, scores)


class PrototypePrior(nn.Module):
    """Prototype scores of encoded targets and references -> prior mask logits ``scale · score + bias``.

    Needs references encoded with ``reference_prior="masked_features"`` (which keep their unmasked maps).
    ``c2``: channels of the backbone's layer2 map (the first ``c2`` channels of ``mid``).
    ``self_support`` (a buffer, saved with the weights, not trained): the weight of the target's own
    prototypes in the score (:func:`self_support_scores`); 0, the initial value, is the plain rule.
    ``background_count``: background prototypes per reference in :meth:`scores` (1: the plain rule's
    one; K > 1: :func:`background_prototypes`). An architecture setting, recorded in a checkpoint's build
    settings rather than its weights; :meth:`rule_scores` is always the plain rule.
    """

    def __init__(self, c2: int, background_count: int = 1) -> None:
        super().__init__()
        if not (isinstance(background_count, int) and background_count >= 1):
            raise InputError(f"background_count: expected a positive integer, got {background_count!r}")
        self.c2 = c2
        self.background_count = background_count
        self.scale = nn.Parameter(torch.tensor(INITIAL_SCALE))
        self.bias = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("self_support", torch.tensor(0.0))

    @torch.no_grad()
    def set_weights(self, scale: float, bias: float, self_support: float) -> None:
        """Set the scale, bias and self-support weight in place (a calibration's choice)."""
        self.scale.fill_(scale)
        self.bias.fill_(bias)
        self.self_support.fill_(self_support)

    def rule_scores(self, target: TargetFeatures, references: Sequence[ReferenceEncoding]) -> torch.Tensor:
        """The training-free rule's scores (B, 1, h, w), averaged over ``references`` (each of batch B or 1)."""
        return self._rule_scores(self._target_features(target), references)

    def scores(self, target: TargetFeatures, references: Sequence[ReferenceEncoding]) -> torch.Tensor:
        """The rule with this prior's background prototypes and self-support weight (B, 1, h, w)."""
        features = self._target_features(target)
        scores, weight = self._rule_scores(features, references, self.background_count), float(self.self_support)
        return self_support_scores(features, scores, weight) if weight else scores

    def _target_features(self, target: TargetFeatures) -> torch.Tensor:
        return proto_features(target.mid, target.deep, self.c2)

    def _rule_scores(self, target_features: torch.Tensor, references: Sequence[ReferenceEncoding],
                     background_count: int = 1) -> torch.Tensor:
        scores = []
        for reference in references:
            if reference.mid is None or reference.deep is None:
                raise InputError("prototype prior: the reference was encoded without its unmasked maps (use reference_prior='masked_features')")
            features = proto_features(reference.mid, reference.deep, self.c2)
            scores.append(prototype_scores(target_features, features, reference.mask, background_count=background_count))
        return torch.stack(scores).mean(0)

    def forward(self, target: TargetFeatures, references: Sequence[ReferenceEncoding]) -> torch.Tensor:
        """Prior logits (B, 1, h, w) on the feature grid."""
        return self.scale * self.scores(target, references) + self.bias
