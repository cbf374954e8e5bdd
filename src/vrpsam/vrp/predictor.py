"""``VRPPredictor``: annotate one or a few references once, then segment any number of targets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..io.images import load_image, load_mask
from .annotations import Annotation
from .model import VRPSAM
from .preprocess import Frame, check_image, logits_to_original, normalised_tensor, pad_map

ImageLike = np.ndarray | str | os.PathLike
ShotFusion = Literal["concat", "mean"]


@dataclass(frozen=True)
class Prediction:
    """One target's result: ``mask`` (H, W) bool, ``logits`` (H, W) float32, ``score`` the decoder's IoU estimate."""

    mask: np.ndarray
    logits: np.ndarray
    score: float


def as_image(image: ImageLike, name: str = "image") -> np.ndarray:
    """A path or an (H, W, 3) uint8 array -> a validated (H, W, 3) uint8 array."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    return check_image(image, name)


def make_annotation(*, mask=None, points=None, box=None, scribble=None) -> Annotation:
    """Exactly one of the four annotation kinds -> an :class:`Annotation`; masks and scribbles may be file paths."""
    given = {k: v for k, v in dict(mask=mask, points=points, box=box, scribble=scribble).items() if v is not None}
    if len(given) != 1:
        named = ", ".join(given) or "none"
        raise InputError(f"reference annotation: give exactly one of mask, points, box, scribble (got {named})")
    (kind, value), = given.items()
    if isinstance(value, Annotation):
        return value
    if kind in ("mask", "scribble") and isinstance(value, (str, os.PathLike)):
        value = load_mask(value)
    if kind == "mask":
        return Annotation.mask(value)
    if kind == "points":
        return Annotation.points(value)
    if kind == "scribble":
        return Annotation.scribble(value)
    boxes = np.asarray(value, dtype=np.float64)
    return Annotation.boxes(boxes.reshape(1, -1) if boxes.ndim == 1 else boxes)


class ReferencePredictor:
    """What every reference-prompted predictor shares (:class:`VRPPredictor`, the training-free one).

    References are added one at a time, each an image plus exactly one annotation in its pixel
    coordinates, and encoded once; targets are then predicted one at a time or in chunks. Subclasses
    say how a reference is encoded (``_encode_reference``) and how a chunk of targets is segmented
    (``_predict_chunk``).
    """

    def __init__(self) -> None:
        self._references: list = []

    @property
    def num_references(self) -> int:
        return len(self._references)

    def reset_references(self) -> None:
        self._references = []

    def set_reference(self, image: ImageLike, *, mask=None, points=None, box=None, scribble=None) -> None:
        """Replace all references by this one: an image plus exactly one annotation in its pixel coordinates."""
        self.reset_references()
        self.add_reference(image, mask=mask, points=points, box=box, scribble=scribble)

    def add_reference(self, image: ImageLike, *, mask=None, points=None, box=None, scribble=None) -> None:
        """Add one more annotated reference (k-shot)."""
        image = as_image(image, "reference image")
        annotation = make_annotation(mask=mask, points=points, box=box, scribble=scribble)
        annotation.validate(image.shape[:2])
        self._references.append(self._encode_reference(image, annotation))

    def predict(self, image: ImageLike) -> Prediction:
        """Segment one target image (a path or an (H, W, 3) uint8 array)."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Iterable[ImageLike], batch_size: int = 1) -> list[Prediction]:
        """Segment several targets, ``batch_size`` at a time."""
        if not self._references:
            raise InputError("no reference set: call set_reference(image, mask=/points=/box=/scribble=) first")
        if batch_size < 1:
            raise InputError(f"batch_size: expected a positive integer, got {batch_size}")
        images = [as_image(image, "target image") for image in images]
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            results.extend(self._predict_chunk(images[start : start + batch_size]))
        return results

    def _encode_reference(self, image: np.ndarray, annotation: Annotation):
        raise NotImplementedError

    def _predict_chunk(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        raise NotImplementedError


class VRPPredictor(ReferencePredictor):
    """Segment the object or class shown in annotated reference images, in any number of targets.

    Each reference is encoded once (backbone features, prototype, merged reference tokens) and reused
    for every target; a target then costs one backbone pass, one SAM image-encoder pass and the small
    prompt generator. With several references (k-shot) the prompt tokens of each are concatenated, the
    official n-shot rule, or averaged (``fusion="mean"``).
    """

    def __init__(self, model: VRPSAM, *, fusion: ShotFusion = "concat") -> None:
        if fusion not in ("concat", "mean"):
            raise InputError(f"fusion: expected 'concat' or 'mean', got {fusion!r}")
        super().__init__()
        self.model = model.eval()
        self.fusion = fusion

    @property
    def device(self) -> torch.device:
        return next(self.model.encoder.parameters()).device

    @torch.no_grad()
    def _encode_reference(self, image: np.ndarray, annotation: Annotation):
        size = image.shape[:2]
        frame = Frame.for_image(size, self.model.input_size, self.model.preprocessing)
        reference = normalised_tensor(image, frame, self.device)
        annotation_map = pad_map(annotation.to_map(size, frame.resized), frame, self.device)
        return self.model.encoder.encode_reference(reference, annotation_map)

    @torch.no_grad()
    def _predict_chunk(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        model, device = self.model, self.device
        mode = model.preprocessing
        frames = [Frame.for_image(im.shape[:2], model.input_size, mode) for im in images]
        target = torch.cat([normalised_tensor(im, fr, device) for im, fr in zip(images, frames)])
        if mode == "official":
            sam_frames = frames
            sam_image = model.sam_input(target)
        else:
            sam_frames = [Frame.for_image(im.shape[:2], model.sam_size, mode) for im in images]
            sam_image = torch.cat([normalised_tensor(im, fr, device) for im, fr in zip(images, sam_frames)])
        features = model.encoder.encode_target(target)
        embeddings = model.embed(sam_image)
        prompts = self._fused_prompts(features)
        prior = model.prior_logits(features, self._references)  # None unless the model has a prior (lite)
        low_res, iou = model.decode(embeddings, prompts) if prior is None else model.decode(embeddings, prompts, prior)
        if mode == "official":
            low_res = model.upsample(low_res, model.input_size)
        results = []
        for i, frame in enumerate(sam_frames):
            logits = logits_to_original(low_res[i : i + 1], frame, mode)[0, 0].float().cpu().numpy()
            results.append(Prediction(mask=logits > 0.0, logits=logits, score=float(iou[i, 0])))
        return results

    def _fused_prompts(self, features) -> torch.Tensor:
        """Prompt tokens (B, Q·K, 256) for concat, (B, Q, 256) for mean, over the K references."""
        per_reference = [self.model.encoder.prompts(features, reference) for reference in self._references]
        if self.fusion == "mean":
            return torch.stack(per_reference).mean(0)
        return torch.cat(per_reference, dim=1)
