"""``TrainingFreePredictor``: reference-prompted segmentation with SAM alone, no VRP encoder weights.

A drop-in alternative to :class:`~vrpsam.vrp.predictor.VRPPredictor` (same methods, same
:class:`~vrpsam.vrp.predictor.Prediction`) for when no trained VRP checkpoint is at hand. It follows
PerSAM's training-free recipe (Zhang et al., ICLR 2024), which GF-SAM and Matcher refine further:

1. Reference mask. A mask annotation is used as given. Clicks, boxes and scribbles are first turned
   into a mask by prompting SAM on the reference itself: all clicks together as foreground points;
   each box on its own (the masks are united); a scribble as up to ``scribble_points`` clicks spread
   along its strokes. Each prompt takes the best of SAM's three masks by predicted IoU. If SAM returns
   nothing, the annotation's own pixels are the mask.
2. Reference feature. SAM's image embedding of the reference (C, h, w), averaged over the mask. The
   mask is brought onto the embedding grid the way the image is (resize the longer side to SAM's
   input size, pad bottom/right), then each cell is weighted by the fraction of it the mask covers,
   so even a tiny object keeps its cells. The average is L2-normalised. With several references
   (k-shot) the normalised features are averaged and normalised again.
3. Location prior. The target's embedding is L2-normalised per cell; the cosine similarity with the
   reference feature gives an (h, w) map, upsampled to the target's size exactly as SAM upsamples
   mask logits. The most similar pixel is a foreground click, the least similar a background click.
4. Decoding. SAM decodes the two clicks with three candidate masks; the best by predicted IoU wins.
5. Cascaded refinement (PerSAM's post-refinement), ``refinement_steps`` times: decode again with the
   same clicks plus the previous low-res logits as ``mask_input``, and from the second step on also
   the bounding box of the current mask; take the best of three each time. Stops early if the mask
   is empty.

Not included: PerSAM's target-guided attention and target-semantic prompting (they change SAM's
decoder), PerSAM-F's fine-tuned mask weights, GF-SAM's DINOv2 features and point-mask clustering.
The cost per target is one SAM image-encoder pass plus ``1 + refinement_steps`` decoder passes; each
reference costs one encoder pass (plus one decoder pass per prompt for non-mask annotations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..sam.predictor import SamPredictor
from ..sam.sam import Sam
from .annotations import Annotation
from .predictor import ImageLike, Prediction, ReferencePredictor, as_image


@dataclass(frozen=True)
class TrainingFreeConfig:
    """Knobs of the training-free pipeline; the defaults follow PerSAM."""

    negative_point: bool = True  # add the least similar pixel as a background click
    refinement_steps: int = 2  # cascaded post-refinement passes (0 = none)
    scribble_points: int = 8  # clicks sampled along a scribble to get the reference mask

    def __post_init__(self) -> None:
        if self.refinement_steps < 0:
            raise InputError(f"refinement_steps: expected 0 or more, got {self.refinement_steps}")
        if self.scribble_points < 1:
            raise InputError(f"scribble_points: expected 1 or more, got {self.scribble_points}")


@dataclass(frozen=True)
class Location:
    """Where the reference's object likely is in a target: the prior SAM is prompted with.

    ``similarity`` (H, W) float32 cosine similarity at the target's size; ``points`` (N, 2) pixel
    (x, y) clicks with ``labels`` (N,) 1 = foreground, 0 = background.
    """

    similarity: np.ndarray
    points: np.ndarray
    labels: np.ndarray


class TrainingFreePredictor(ReferencePredictor):
    """Segment what annotated references show, in any number of targets, with a frozen SAM only.

    Same interface as :class:`~vrpsam.vrp.predictor.VRPPredictor`; see the module docstring for the
    algorithm. ``sam``: any :class:`~vrpsam.sam.sam.Sam` (e.g. ``sam_model_registry["vit_b"](checkpoint=...)``),
    on the device to compute on.
    """

    def __init__(self, sam: Sam, config: TrainingFreeConfig | None = None) -> None:
        super().__init__()  # references: one normalised (C,) feature each
        self.sam = sam.eval()
        self.config = config or TrainingFreeConfig()
        self._sam = SamPredictor(self.sam)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def _encode_reference(self, image: np.ndarray, annotation: Annotation) -> torch.Tensor:
        """The reference's region feature (k-shot: the features of all references are averaged)."""
        self._sam.set_image(image)
        return self._region_feature(self.reference_mask(annotation, image.shape[:2]))

    def reference_mask(self, annotation: Annotation, size: tuple[int, int]) -> np.ndarray:
        """The (H, W) bool object mask for ``annotation`` on the image currently set in SAM (step 1)."""
        drawn = annotation.to_map(size) > 0
        if annotation.kind == "mask":
            return drawn
        if annotation.kind == "points":
            clicks = np.asarray(annotation.point_coords, dtype=np.float64)
            prompts = [dict(point_coords=clicks, point_labels=np.ones(len(clicks)))]
        elif annotation.kind == "box":
            prompts = [dict(box=np.asarray(b, dtype=np.float64)) for b in annotation.box_coords]
        else:
            clicks = _spread_points(drawn, self.config.scribble_points)
            prompts = [dict(point_coords=clicks, point_labels=np.ones(len(clicks)))]
        region = np.zeros(size, dtype=bool)
        for prompt in prompts:
            masks, scores, _ = self._sam.predict(**prompt, multimask_output=True)
            region |= masks[int(np.argmax(scores))]
        return region if region.any() else drawn

    @torch.no_grad()
    def _region_feature(self, region: np.ndarray) -> torch.Tensor:
        """The normalised (C,) average of the current embedding over ``region`` (H, W), weighted by coverage."""
        embedding = self._sam.get_image_embedding()[0]  # (C, h, w)
        weights = _cell_coverage(region, self._sam.input_size, self.sam.img_size, embedding.shape[-2:])
        weights = weights.to(embedding)
        total = weights.sum()
        if total <= 0:
            raise InputError("reference annotation: covers no part of the image")
        feature = (embedding * weights).sum((1, 2)) / total
        return F.normalize(feature, dim=0)

    def _reference_feature(self) -> torch.Tensor:
        if not self._references:
            raise InputError("no reference set: call set_reference(image, mask=/points=/box=/scribble=) first")
        return F.normalize(torch.stack(self._references).mean(0), dim=0)

    def locate(self, image: ImageLike) -> Location:
        """Embed ``image`` in SAM and return the similarity map and the clicks derived from it (steps 3)."""
        image = as_image(image, "target image")
        reference = self._reference_feature()
        self._sam.set_image(image)
        return self._locate(reference)

    @torch.no_grad()
    def _locate(self, reference: torch.Tensor) -> Location:
        embedding = F.normalize(self._sam.get_image_embedding()[0], dim=0)  # (C, h, w)
        grid = torch.einsum("c,chw->hw", reference, embedding)
        similarity = self.sam.postprocess_masks(grid[None, None], self._sam.input_size, self._sam.original_size)
        similarity = similarity[0, 0].float().cpu().numpy()
        width = similarity.shape[1]
        best, worst = int(similarity.argmax()), int(similarity.argmin())
        points = [(best % width, best // width)]
        if self.config.negative_point:
            points.append((worst % width, worst // width))
        labels = np.array([1, 0][: len(points)])
        return Location(similarity=similarity, points=np.asarray(points, dtype=np.float64), labels=labels)

    def _predict_chunk(self, images) -> list[Prediction]:
        # SAM's predictor holds one image at a time, so a chunk is segmented image by image.
        return [self._decode(self.locate(image)) for image in images]

    def _decode(self, location: Location) -> Prediction:
        """Steps 4 and 5 on the image currently set in SAM."""
        prompt = dict(point_coords=location.points, point_labels=location.labels, multimask_output=True, return_logits=True)
        logits, scores, low_res = self._sam.predict(**prompt)
        best = int(np.argmax(scores))
        for step in range(self.config.refinement_steps):
            mask = logits[best] > self.sam.mask_threshold
            if not mask.any():
                break
            box = _bounding_box(mask) if step >= 1 else None
            logits, scores, low_res = self._sam.predict(**prompt, box=box, mask_input=low_res[best : best + 1])
            best = int(np.argmax(scores))
        chosen = logits[best].astype(np.float32)
        return Prediction(mask=chosen > self.sam.mask_threshold, logits=chosen, score=float(scores[best]))


def _cell_coverage(region: np.ndarray, input_size: tuple[int, int], side: int, grid: tuple[int, int]) -> torch.Tensor:
    """(h, w) fraction of each embedding cell that ``region`` covers, in SAM's resized-and-padded frame."""
    mask = torch.from_numpy(region.astype(np.float32))[None, None]
    resized = F.interpolate(mask, size=tuple(input_size), mode="area")
    padded = F.pad(resized, (0, side - input_size[1], 0, side - input_size[0]))
    return F.adaptive_avg_pool2d(padded, tuple(grid))[0, 0]


def _spread_points(drawn: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` (x, y) pixels of ``drawn``, evenly spaced in raster order over the strokes."""
    ys, xs = np.nonzero(drawn)
    picks = np.unique(np.linspace(0, len(xs) - 1, num=min(count, len(xs))).round().astype(int))
    return np.stack([xs[picks], ys[picks]], axis=1).astype(np.float64)


def _bounding_box(mask: np.ndarray) -> np.ndarray:
    """(4,) x1, y1, x2, y2 pixel box of the mask's foreground (inclusive corners, as SAM's box prompts)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
