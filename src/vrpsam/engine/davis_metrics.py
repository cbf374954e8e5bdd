"""DAVIS video object segmentation scores: region similarity J, contour accuracy F, and J&F.

The conventions are those of the DAVIS benchmark's own evaluation code (Perazzi et al., CVPR 2016;
the MATLAB ``f_boundary.m`` / ``eval_sequence.m`` and the DAVIS 2017 Python port), written anew here:

* **J** (region similarity) of one frame is the IoU ``|P ∩ G| / |P ∪ G|`` of the predicted and the
  ground-truth masks; an empty union (both masks empty) scores 1.
* **F** (contour accuracy) of one frame is the F-measure ``2PR / (P + R)`` of the two masks' boundary
  pixels. Boundaries are one pixel thin: a pixel is a boundary pixel when its value differs from that
  of its right, lower or lower-right neighbour (the last row looks only right, the last column only
  down, the bottom-right pixel is never one), so the image border itself is not a boundary. This is
  the DAVIS/BSDS ``seg2bmap`` rule at the image's own size, where the MATLAB version never reaches its
  ``bwmorph('thin')`` branch. A boundary pixel is *matched* when a boundary pixel of the other mask lies
  within the tolerance disk ``x² + y² <= r²`` around it, with ``r = ceil(0.008 * image diagonal)``
  pixels (``bound_th`` >= 1 gives ``r`` in pixels directly). DAVIS rounds *up*: for 480p frames
  (480 × 854) ``r = ceil(7.84) = 8``. Precision = matched predicted / predicted boundary pixels,
  recall = matched ground-truth / ground-truth boundary pixels; an empty prediction against a non-empty
  ground truth has P = 1, R = 0 (so F = 0), the reverse P = 0, R = 1, both empty P = R = 1 (F = 1).
* **Void** pixels (value 255 in DAVIS 2017 annotations) are left out: they count in neither
  intersection nor union, and both masks are cleared there before their boundaries are taken.
* Over a sequence (:func:`statistics`): **mean** over the scored frames, **recall** = fraction of
  frames scoring above 0.5, **decay** = mean of the first quarter minus mean of the last quarter, the
  quarters being the four runs between ``round(linspace(1, n, 5))`` (1-based, each run including both
  of its ends, so neighbouring runs share a frame). **J&F** = ``(J mean + F mean) / 2``.

Which frames are scored is the caller's choice; the DAVIS semi-supervised protocol leaves out the
annotated first frame and the last frame (see :mod:`vrpsam.engine.video`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

BOUND_TH = 0.008  # the DAVIS tolerance: a fraction of the image diagonal


@dataclass(frozen=True)
class BoundaryScore:
    """Contour accuracy of one frame: ``f`` and the precision and recall it combines."""

    f: float
    precision: float
    recall: float


@dataclass(frozen=True)
class Statistics:
    """One measure over a sequence: mean, recall (fraction > 0.5) and decay (first minus last quarter)."""

    mean: float
    recall: float
    decay: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def _pair(prediction: Any, truth: Any, void: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Both masks (and the void map) as (H, W) bool arrays of one size, masks cleared on void pixels."""
    arrays = []
    for value, name in ((prediction, "prediction"), (truth, "ground truth"), (void, "void")):
        if value is None:
            arrays.append(None)
            continue
        array = np.asarray(value)
        if array.ndim != 2 or 0 in array.shape:
            raise InputError(f"{name}: expected an (H, W) mask, got shape {array.shape}")
        arrays.append(array != 0)
    prediction, truth, void = arrays
    for other, name in ((truth, "ground truth"), (void, "void")):
        if other is not None and other.shape != prediction.shape:
            raise InputError(f"prediction {prediction.shape} and {name} {other.shape} differ in size")
    if void is not None:
        prediction, truth = prediction & ~void, truth & ~void
    return prediction, truth, void


def jaccard(prediction: Any, truth: Any, void: Any | None = None) -> float:
    """Region similarity J of (H, W) masks (nonzero = object): IoU, 1 when both are empty."""
    prediction, truth, _ = _pair(prediction, truth, void)
    union = np.count_nonzero(prediction | truth)
    return 1.0 if union == 0 else np.count_nonzero(prediction & truth) / union


def boundary_map(mask: Any) -> np.ndarray:
    """(H, W) bool: the one-pixel-thin boundary of ``mask`` (see the module docstring for the rule)."""
    mask = np.asarray(mask) != 0
    boundary = np.zeros_like(mask)
    boundary[:-1, :-1] = (mask[:-1, :-1] != mask[:-1, 1:]) | (mask[:-1, :-1] != mask[1:, :-1]) \
        | (mask[:-1, :-1] != mask[1:, 1:])
    boundary[-1, :-1] = mask[-1, :-1] != mask[-1, 1:]  # last row: right neighbour only
    boundary[:-1, -1] = mask[:-1, -1] != mask[1:, -1]  # last column: lower neighbour only
    return boundary


def tolerance_pixels(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """The matching radius in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)``."""
    if not (math.isfinite(bound_th) and bound_th > 0):
        raise InputError(f"bound_th: expected a positive number, got {bound_th}")
    if bound_th >= 1:
        return int(round(bound_th))
    height, width = shape[:2]
    return int(math.ceil(bound_th * math.hypot(height, width)))


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool ``mask`` dilated by the disk ``dx² + dy² <= radius²`` (pixels beyond the border are empty).

    The disk is a stack of horizontal runs, one per row offset ``dy`` with half-width
    ``floor(sqrt(r² - dy²))``; each run is a box filter along x (prefix sums), shifted by ``dy``.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return mask.copy()
    height, width = mask.shape
    counts = np.zeros((height, width + 1), dtype=np.int32)
    np.cumsum(mask, axis=1, out=counts[:, 1:])
    columns = np.arange(width)
    out = np.zeros_like(mask)
    reach = min(radius, height - 1)  # rows further away than the image is tall add nothing
    for dy in range(-reach, reach + 1):
        half = math.isqrt(radius * radius - dy * dy)
        hi = np.minimum(columns + half + 1, width)
        lo = np.maximum(columns - half, 0)
        run = counts[:, hi] > counts[:, lo]  # some mask pixel within [x - half, x + half] on this row
        # an output row y receives the run of source row y + dy
        if dy >= 0:
            out[: height - dy] |= run[dy:]
        else:
            out[-dy:] |= run[: height + dy]
    return out


def f_measure(prediction: Any, truth: Any, void: Any | None = None, bound_th: float = BOUND_TH) -> BoundaryScore:
    """Contour accuracy F of (H, W) masks (nonzero = object), DAVIS convention (module docstring)."""
    prediction, truth, _ = _pair(prediction, truth, void)
    radius = tolerance_pixels(prediction.shape, bound_th)
    predicted, expected = boundary_map(prediction), boundary_map(truth)
    n_predicted, n_expected = int(predicted.sum()), int(expected.sum())
    if n_predicted == 0 or n_expected == 0:
        precision = 1.0 if n_predicted == 0 else 0.0
        recall = 1.0 if n_expected == 0 else 0.0
    else:
        precision = np.count_nonzero(predicted & dilate_disk(expected, radius)) / n_predicted
        recall = np.count_nonzero(expected & dilate_disk(predicted, radius)) / n_expected
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return BoundaryScore(f=float(f), precision=float(precision), recall=float(recall))


def statistics(values: Sequence[float]) -> Statistics:
    """Mean, recall (> 0.5) and decay of per-frame scores, in frame order (module docstring)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InputError("statistics: expected a non-empty list of per-frame scores")
    # DAVIS's 1-based round(linspace(1, n, 5)); MATLAB rounds halves up, as floor(x + 0.5) does
    ends = np.floor(np.linspace(1, values.size, 5) + 0.5).astype(int) - 1
    quarters = [values[ends[i] : ends[i + 1] + 1].mean() for i in range(4)]
    return Statistics(mean=float(values.mean()), recall=float((values > 0.5).mean()),
                      decay=float(quarters[0] - quarters[-1]))


def j_and_f(j_values: Sequence[float], f_values: Sequence[float]) -> dict[str, Any]:
    """``{"J": Statistics, "F": Statistics, "J&F": (J mean + F mean) / 2}`` of per-frame J and F."""
    if len(j_values) != len(f_values):
        raise InputError(f"j_and_f: {len(j_values)} J values but {len(f_values)} F values")
    j, f = statistics(j_values), statistics(f_values)
    return {"J": j, "F": f, "J&F": (j.mean + f.mean) / 2}
