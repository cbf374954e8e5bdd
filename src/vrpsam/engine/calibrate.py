"""Choosing the weight of a trained model's prototype prior on held-out validation classes.

``lite`` adds the training-free prototype rule's logits (:class:`vrpsam.vrp.proto.PrototypePrior`,
``scale · score + bias``) to its decoder's output and feeds them to it as SAM's dense prompt. Training
on a few base classes teaches the decoder what those classes look like, and so to overrule the prior
on everything else: on classes it never saw, a stronger prior helps (measured on coco128-seg, see
``checkpoints/lite/README.md``). How much stronger is not a thing the training classes can tell, so
it is chosen like an epoch is: by mIoU on the validation classes, which training never saw either.

:func:`calibrate_prior` tries the trained scale times each of :data:`PRIOR_SCALE_MULTIPLIERS`, keeps
the best mean validation mIoU over the given annotation types (ties go to the smaller multiplier),
and leaves the model with that scale. Deterministic, and identical on every rank under ``torchrun``
(:func:`vrpsam.engine.evaluate.evaluate` all-reduces its counts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..vrp.model import VRPSAM
from .evaluate import evaluate

PRIOR_SCALE_MULTIPLIERS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


@dataclass
class PriorCalibration:
    """What :func:`calibrate_prior` tried and chose."""

    trained_scale: float
    scale: float  # the chosen one, now in the model
    multiplier: float
    annotations: tuple[str, ...]
    episodes: int  # per annotation type and multiplier (0: evaluate's default)
    val_miou: dict[str, float]  # multiplier (as text) -> mean validation mIoU over ``annotations``

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "annotations": list(self.annotations)}


def calibrate_prior(
    model: VRPSAM,
    source: Any,
    *,
    annotations: Sequence[str],
    multipliers: Sequence[float] = PRIOR_SCALE_MULTIPLIERS,
    **options: Any,
) -> PriorCalibration:
    """Set ``model.prior.scale`` to the trained value times the multiplier with the best mean mIoU over
    ``annotations``; ``options`` go to :func:`vrpsam.engine.evaluate.evaluate` for each pass (``classes``,
    ``episodes``, ``seed``...: the validation episodes). Returns what was measured."""
    if model.prior is None:
        raise InputError("calibrate_prior: the model has no prototype prior (only lite has one)")
    scale = model.prior.scale
    trained = float(scale.detach())
    results: dict[float, float] = {}
    for multiplier in multipliers:
        with torch.no_grad():
            scale.fill_(trained * multiplier)
        mious = [evaluate(model, source, annotation=annotation, **options).miou for annotation in annotations]
        results[multiplier] = float(sum(mious) / len(mious))
    best = max(multipliers, key=lambda m: (results[m], -m))
    with torch.no_grad():
        scale.fill_(trained * best)
    return PriorCalibration(
        trained_scale=trained,
        scale=float(scale.detach()),
        multiplier=best,
        annotations=tuple(annotations),
        episodes=int(options.get("episodes", 0)),
        val_miou={f"{m:g}": round(results[m], 4) for m in multipliers},
    )
