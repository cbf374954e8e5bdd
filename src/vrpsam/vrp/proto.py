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
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .encoder import ReferenceEncoding, TargetFeatures

EPS = 1e-6
# Score 0.05 -> logit 1: the training-free decision, sharpened. A first lite trained with 10 segmented
# coco128's held-out classes better when its prior was weighted 20-30 at test time (mask mIoU 15.4 -> 19.1
# at 20), and AdamW moves this scalar by ~lr per step, so its initial value is what training keeps.
INITIAL_SCALE = 20.0


def proto_features(mid: torch.Tensor, deep: torch.Tensor, c2: int) -> torch.Tensor:
    """Layer2+3 maps (B, c2 + c3, h, w) and layer4 (B, c4, h, w) -> normalised layer3 ⊕ layer4 (B, c3 + c4, h, w)."""
    return torch.cat([F.normalize(mid[:, c2:], dim=1), F.normalize(deep, dim=1)], dim=1)


def prototype_scores(target: torch.Tensor, reference: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Target (B, C, h, w), reference (B or 1, C, h', w') features, annotation weights (B or 1, 1, h', w')
    in [0, 1] -> scores (B, 1, h, w): cos(foreground prototype) - cos(background prototype)."""
    foreground = (reference * weights).sum(dim=(2, 3)) / (weights.sum(dim=(2, 3)) + EPS)
    background = (reference * (1 - weights)).sum(dim=(2, 3)) / ((1 - weights).sum(dim=(2, 3)) + EPS)
    difference = F.normalize(foreground, dim=1) - F.normalize(background, dim=1)  # (B, C)
    return torch.einsum("bchw,bc->bhw", F.normalize(target, dim=1), difference.expand(target.shape[0], -1)).unsqueeze(1)


class PrototypePrior(nn.Module):
    """Prototype scores of encoded targets and references -> prior mask logits ``scale · score + bias``.

    Needs references encoded with ``reference_prior="masked_features"`` (which keep their unmasked maps).
    ``c2``: channels of the backbone's layer2 map (the first ``c2`` channels of ``mid``).
    """

    def __init__(self, c2: int) -> None:
        super().__init__()
        self.c2 = c2
        self.scale = nn.Parameter(torch.tensor(INITIAL_SCALE))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def scores(self, target: TargetFeatures, references: Sequence[ReferenceEncoding]) -> torch.Tensor:
        """Raw scores (B, 1, h, w), averaged over ``references`` (each of batch B or 1)."""
        target_features = proto_features(target.mid, target.deep, self.c2)
        scores = []
        for reference in references:
            if reference.mid is None or reference.deep is None:
                raise InputError("prototype prior: the reference was encoded without its unmasked maps (use reference_prior='masked_features')")
            features = proto_features(reference.mid, reference.deep, self.c2)
            scores.append(prototype_scores(target_features, features, reference.mask))
        return torch.stack(scores).mean(0)

    def forward(self, target: TargetFeatures, references: Sequence[ReferenceEncoding]) -> torch.Tensor:
        """Prior logits (B, 1, h, w) on the feature grid."""
        return self.scale * self.scores(target, references) + self.bias
