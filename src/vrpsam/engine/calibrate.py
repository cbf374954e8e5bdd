"""Choosing the weight of a trained model's prototype prior on held-out validation classes.

``lite`` adds the training-free prototype rule's logits (:class:`vrpsam.vrp.proto.PrototypePrior`,
``scale · score + bias``) to its decoder's output and feeds them to it as SAM's dense prompt. Training
on a few base classes teaches the decoder what those classes look like, and so to overrule the prior
on everything else: on classes it never saw, a stronger prior helps (measured on coco128-seg, see
``checkpoints/lite/README.md``). How much stronger is not a thing the training classes can tell, so
it is chosen like an epoch is: by mIoU on the validation classes, which training never saw either.

:func:`calibrate_prior` tries the trained scale times each of :data:`PRIOR_SCALE_MULTIPLIERS` with
the trained bias plus each of :data:`PRIOR_BIAS_OFFSETS` and each self-support weight of
:data:`SELF_SUPPORT_WEIGHTS` (the target's own prototypes, :func:`vrpsam.vrp.proto.self_support_scores`),
to which a run adds the weight it trained with (:func:`self_support_weights`).
Both signs of bias offset are there because both were needed on coco128: a first run's decoder
under-predicted foreground on unseen classes, one trained with ``--ignore-held-out`` over-predicts
small objects. It keeps the setting with the best mean validation mIoU over the given annotation
types (ties go to the smaller change), and leaves the model with it. The choice among 18 (or 27) settings needs
more episodes than following one run's progress: ``TrainConfig.calibration_episodes``. The prior acts
after the encoders, so each episode is encoded once and decoded under every setting
(:func:`vrpsam.engine.evaluate.evaluate_variants`). Deterministic, and identical on every rank under
``torchrun`` (the evaluation all-reduces its counts). :func:`apply_prior_setting` sets one setting
chosen before, with no validation: the final run of a recipe that trains on every class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..vrp.model import VRPSAM
from .config import parse_setting_name, setting_name
from .evaluate import evaluate_variants

PRIOR_SCALE_MULTIPLIERS = (1.0, 2.0, 4.0)
PRIOR_BIAS_OFFSETS = (-2.0, 0.0, 2.0)
SELF_SUPPORT_WEIGHTS = (0.0, 0.5)


def self_support_weights(trained: float) -> tuple[float, ...]:
    """The self-support weights a calibration tries: :data:`SELF_SUPPORT_WEIGHTS` and, when it is not one
    of them, ``trained``, the weight the decoder learned with (``TrainConfig.prior_self_support``)."""
    return tuple(sorted({*SELF_SUPPORT_WEIGHTS, float(trained)}))


def prior_settings(
    multipliers: Sequence[float] = PRIOR_SCALE_MULTIPLIERS,
    offsets: Sequence[float] = PRIOR_BIAS_OFFSETS,
    self_supports: Sequence[float] = SELF_SUPPORT_WEIGHTS,
) -> list[tuple[float, float, float]]:
    """Every (scale multiplier, bias offset, self-support weight) the calibration tries, in its order."""
    return [(m, o, ss) for ss in self_supports for m in multipliers for o in offsets]


@dataclass
class PriorCalibration:
    """What :func:`calibrate_prior` tried and chose."""

    trained_scale: float
    trained_bias: float
    scale: float  # the chosen values, now in the model
    bias: float
    multiplier: float
    bias_offset: float
    self_support: float
    annotations: tuple[str, ...]
    episodes: int  # per annotation type and setting (0: evaluate's default)
    val_miou: dict[str, float]  # setting_name -> mean validation mIoU over ``annotations``
    val_miou_by_annotation: dict[str, dict[str, float]]  # annotation -> setting_name -> validation mIoU

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "annotations": list(self.annotations)}


def calibrate_prior(
    model: VRPSAM,
    source: Any,
    *,
    annotations: Sequence[str],
    multipliers: Sequence[float] = PRIOR_SCALE_MULTIPLIERS,
    offsets: Sequence[float] = PRIOR_BIAS_OFFSETS,
    self_supports: Sequence[float] = SELF_SUPPORT_WEIGHTS,
    **options: Any,
) -> PriorCalibration:
    """Set ``model.prior``'s scale and bias to the trained values changed by the (multiplier, offset),
    and its self-support weight, with the best mean mIoU over ``annotations``; ``options`` go to
    :func:`vrpsam.engine.evaluate.evaluate_variants`, once per annotation type (``classes``, ``episodes``,
    ``seed``...: the validation episodes), which scores every setting on each episode from one encoding.
    Returns what was measured."""
    prior = _prior_of(model, "calibrate_prior")
    trained_scale, trained_bias = float(prior.scale.detach()), float(prior.bias.detach())

    def use(multiplier: float, offset: float, self_support: float) -> None:
        prior.set_weights(trained_scale * multiplier, trained_bias + offset, self_support)

    settings = prior_settings(multipliers, offsets, self_supports)

    def predict(model: VRPSAM, query: torch.Tensor, supports: torch.Tensor,
                annotations: torch.Tensor) -> dict[tuple[float, float, float], torch.Tensor]:
        # The prior acts after the encoders: one encoding per episode serves every setting.
        encoded = model.encode_shots(query, supports, annotations)
        logits = {}
        for setting in settings:
            use(*setting)
            logits[setting] = model.decode_shots(encoded)
        return logits

    measured = {
        annotation: {setting: result.miou for setting, result in
                     evaluate_variants(model, source, predict, settings, annotation=annotation, **options).items()}
        for annotation in annotations
    }
    results = {setting: sum(measured[a][setting] for a in annotations) / len(annotations) for setting in settings}
    best = max(results, key=lambda setting: (results[setting], -setting[2], -setting[0], -abs(setting[1])))
    use(*best)
    return PriorCalibration(
        trained_scale=trained_scale,
        trained_bias=trained_bias,
        scale=float(prior.scale.detach()),
        bias=float(prior.bias.detach()),
        multiplier=best[0],
        bias_offset=best[1],
        self_support=best[2],
        annotations=tuple(annotations),
        episodes=int(options.get("episodes", 0)),
        val_miou=_named(results),
        val_miou_by_annotation={annotation: _named(mious) for annotation, mious in measured.items()},
    )


def apply_prior_setting(model: VRPSAM, name: str) -> PriorCalibration:
    """Set ``model.prior`` to the :func:`setting_name` ``name`` of its trained weights, without
    measuring anything: a setting chosen elsewhere, e.g. by a run that held validation classes out
    (``TrainConfig.prior_setting``). Returns it as a calibration that tried nothing else."""
    multiplier, offset, self_support = parse_setting_name(name, source="prior_setting")
    prior = _prior_of(model, "prior_setting")
    trained_scale, trained_bias = float(prior.scale.detach()), float(prior.bias.detach())
    prior.set_weights(trained_scale * multiplier, trained_bias + offset, self_support)
    return PriorCalibration(
        trained_scale=trained_scale,
        trained_bias=trained_bias,
        scale=float(prior.scale.detach()),
        bias=float(prior.bias.detach()),
        multiplier=multiplier,
        bias_offset=offset,
        self_support=self_support,
        annotations=(),
        episodes=0,
        val_miou={},
        val_miou_by_annotation={},
    )


def _prior_of(model: VRPSAM, caller: str):
    if model.prior is None:
        raise InputError(f"{caller}: the model has no prototype prior (only lite has one)")
    return model.prior


def _named(mious: dict[tuple[float, float, float], float]) -> dict[str, float]:
    return {setting_name(*setting): round(miou, 4) for setting, miou in mious.items()}
