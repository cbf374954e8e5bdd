"""The official VRP-SAM training objective: binary cross-entropy plus Dice, weighted 1:1.

``compute_objective`` in the official ``VRP_encoder.py``:

* BCE with logits, **mean over every pixel of the batch** (B × S × S);
* Dice on ``sigmoid(logits)``, flattened per sample, ``1 − (2Σpt + 1) / (Σp + Σt + 1)``, **summed over
  the batch and divided by B**;
* total = BCE + Dice.

Both terms are means over the samples of one process, so under DDP (which averages gradients over
ranks) the gradient equals that of the same loss over the global batch when every rank holds the same
number of samples.

Ground-truth pixels equal to :data:`IGNORE_INDEX` (PASCAL object boundaries) count as **background**
here: the official loader sets them to 0 in the training mask and the loss has no ignore term. They are
excluded only when scoring (see :mod:`vrpsam.engine.metrics`). ``segmentation_loss(..., ignore=True)``
leaves them out of both terms instead (BCE averages the other pixels; Dice sums over them only): for
training views that mark held-out classes as ignore (``TrainConfig.ignore_held_out``). Its BCE is then a
mean over each process's valid pixels, so under DDP it equals the global one only when ranks hold as
many valid pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

IGNORE_INDEX = 255
DICE_SMOOTH = 1.0


def binary_target(mask: torch.Tensor) -> torch.Tensor:
    """(B, S, S) mask with values 0, 1 or 255 (ignore) -> float target (B, S, S); ignore becomes 0."""
    return (mask == 1).to(torch.float32)


def bce_term(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over all B × S × S pixels, or over the ``valid`` ones (0/1 weights);
    logits, target and valid (B, S, S)."""
    if valid is None:
        return F.binary_cross_entropy_with_logits(logits, target, reduction="mean")
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


def dice_term(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Smoothed Dice loss per sample on ``sigmoid(logits)`` (over the ``valid`` pixels only when given),
    summed and divided by B; inputs (B, S, S)."""
    probabilities = logits.sigmoid()
    if valid is not None:
        probabilities, target = probabilities * valid, target * valid
    probabilities, target = probabilities.flatten(1), target.flatten(1)
    overlap = 2 * (probabilities * target).sum(-1)
    total = probabilities.sum(-1) + target.sum(-1)
    per_sample = 1 - (overlap + DICE_SMOOTH) / (total + DICE_SMOOTH)
    return per_sample.sum() / logits.shape[0]


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, *, ignore: bool = False) -> torch.Tensor:
    """Official VRP-SAM loss: BCE(mean) + Dice, 1:1.

    ``logits``: (B, 1, S, S) or (B, S, S) raw scores; ``mask``: (B, S, S) ground truth, 0/1 with 255 =
    ignore, counted as background (official), or left out of the loss with ``ignore=True``. Computed in
    float32 whatever the logits' dtype (AMP).
    """
    if logits.dim() == 4:
        if logits.shape[1] != 1:
            raise InputError(f"logits: expected (B, 1, S, S), got shape {tuple(logits.shape)}")
        logits = logits[:, 0]
    if logits.shape != mask.shape:
        raise InputError(f"logits {tuple(logits.shape)} and mask {tuple(mask.shape)} differ in size")
    logits = logits.float()
    target = binary_target(mask)
    valid = (mask != IGNORE_INDEX).to(torch.float32) if ignore else None
    return bce_term(logits, target, valid) + dice_term(logits, target, valid)
