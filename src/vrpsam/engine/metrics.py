"""Few-shot segmentation metrics with the HSNet / VRP-SAM protocol: class-wise accumulated IoU and FB-IoU.

Per episode, the binary prediction and ground truth give an intersection and a union for the
background and the foreground; these are *summed* per class over all episodes of the class (not
averaged per episode), as the official ``common/evaluation.py`` and ``common/logger.py`` do:

* ``mIoU  = mean over the evaluated classes c of  inter_fg[c] / max(union_fg[c], 1) × 100``.
  A class with no foreground union at all (never drawn, or drawn only with empty ground truth and
  empty predictions) therefore counts as **0**, exactly as the official ``max(union, 1)`` makes it.
* ``FB-IoU = mean over {bg, fg} of  Σ_c inter[·, c] / Σ_c union[·, c] × 100``, sums over the same
  classes. (Official divides without a guard; the sums are zero only before any pixel was counted,
  where this returns 0 instead of NaN.)

Ground-truth pixels equal to :data:`IGNORE_INDEX` (PASCAL's object boundaries) are left out of both
the prediction and the ground truth, the PFENet rule official applies with ``--use_ignore``.

All counts are float64, so sums over ranks and episodes are exact (integers below 2**53) and the
result does not depend on how the episodes were split between processes.

:func:`class_bootstrap_interval` says how far a difference of two mIoUs on the same episodes could move
with another draw of classes: on a few held-out classes (coco128's 17 test classes) it is wide.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
import torch

from ..errors import InputError

IGNORE_INDEX = 255
BOOTSTRAP_RESAMPLES = 10_000
# Rows of the state tensor.
_INTER = slice(0, 2)  # background, foreground intersection
_UNION = slice(2, 4)  # background, foreground union
_EPISODES = 4
_ROWS = 5


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{name}: expected a tensor or numpy array, got {type(value).__name__}")
    if value.dim() != 2:
        raise InputError(f"{name}: expected an (H, W) map, got shape {tuple(value.shape)}")
    return value


def episode_areas(pred, gt) -> torch.Tensor:
    """Prediction (H, W) bool or 0/1 and ground truth (H, W) 0/1 with 255 = ignore -> (4,) float64.

    The entries are inter_bg, inter_fg, union_bg, union_fg over the non-ignored pixels, on the
    inputs' device.
    """
    pred, gt = _as_tensor(pred, "prediction"), _as_tensor(gt, "ground truth")
    if pred.shape != gt.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in size")
    if pred.dtype != torch.bool:
        if ((pred != 0) & (pred != 1)).any():
            raise InputError("prediction: expected a binary map (bool or 0/1)")
        pred = pred != 0
    gt = gt.to(pred.device)
    if ((gt != 0) & (gt != 1) & (gt != IGNORE_INDEX)).any():
        raise InputError(f"ground truth: expected values 0, 1 or {IGNORE_INDEX} (ignore)")
    valid = gt != IGNORE_INDEX
    pred_fg = pred & valid
    gt_fg = (gt == 1) & valid
    pred_bg = ~pred & valid
    gt_bg = (gt == 0) & valid
    inter = torch.stack([(pred_bg & gt_bg).sum(), (pred_fg & gt_fg).sum()])
    area_pred = torch.stack([pred_bg.sum(), pred_fg.sum()])
    area_gt = torch.stack([gt_bg.sum(), gt_fg.sum()])
    return torch.cat([inter, area_pred + area_gt - inter]).to(torch.float64)


class IoUAccumulator:
    """Intersections and unions per class, summed over episodes (and, via :meth:`state`, over processes).

    ``class_ids``: the classes to report on (e.g. the fold's test classes), any hashable ids; an
    episode of another class is an error. ``device``: where the sums live (the evaluation device).
    """

    def __init__(self, class_ids: Sequence[Hashable], device: torch.device | str = "cpu") -> None:
        self.class_ids = tuple(class_ids)
        if not self.class_ids:
            raise InputError("metrics: no classes to evaluate")
        if len(set(self.class_ids)) != len(self.class_ids):
            raise InputError("metrics: class ids are not unique")
        self._column = {class_id: i for i, class_id in enumerate(self.class_ids)}
        self._state = torch.zeros(_ROWS, len(self.class_ids), dtype=torch.float64, device=device)

    @property
    def intersection(self) -> torch.Tensor:
        """(2, C) float64: background and foreground intersections per class."""
        return self._state[_INTER]

    @property
    def union(self) -> torch.Tensor:
        """(2, C) float64: background and foreground unions per class."""
        return self._state[_UNION]

    @property
    def episodes(self) -> int:
        return int(self._state[_EPISODES].sum().item())

    def episodes_per_class(self) -> dict[Hashable, int]:
        counts = self._state[_EPISODES].tolist()
        return {class_id: int(count) for class_id, count in zip(self.class_ids, counts)}

    def update(self, pred, gt, class_id: Hashable) -> None:
        """Add one episode: prediction (H, W) bool/0-1, ground truth (H, W) 0/1 with 255 = ignore."""
        if class_id not in self._column:
            raise InputError(f"metrics: class {class_id!r} is not among the evaluated classes")
        column = self._column[class_id]
        areas = episode_areas(pred, gt).to(self._state.device)
        self._state[:4, column] += areas
        self._state[_EPISODES, column] += 1

    def per_class(self) -> dict[Hashable, float]:
        """{class id: foreground IoU × 100}, 0 for a class with no foreground union."""
        return dict(zip(self.class_ids, self._class_iou()[1].tolist()))

    def miou(self) -> float:
        """Mean over the classes of the accumulated foreground IoU, × 100 (official ``compute_iou``)."""
        return float(self._class_iou()[1].mean().item())

    def fbiou(self) -> float:
        """Mean of the background and foreground IoU pooled over all classes, × 100."""
        inter = self.intersection.sum(dim=1)
        union = self.union.sum(dim=1).clamp(min=1.0)
        return float((inter / union).mean().item() * 100.0)

    def _class_iou(self) -> torch.Tensor:
        return self.intersection / self.union.clamp(min=1.0) * 100.0

    def state(self) -> torch.Tensor:
        """A (5, C) float64 copy to sum across processes: rows inter bg/fg, union bg/fg, episode count."""
        return self._state.clone()

    def load_state(self, state: torch.Tensor) -> None:
        """Replace the sums, e.g. by the all-reduced :meth:`state`."""
        self._check_state(state)
        self._state.copy_(state)

    def merge(self, other: "IoUAccumulator | torch.Tensor") -> None:
        """Add another accumulator's sums (same classes, same order) or a :meth:`state` tensor."""
        if isinstance(other, IoUAccumulator):
            if other.class_ids != self.class_ids:
                raise InputError("metrics: cannot merge accumulators over different classes")
            other = other._state
        self._check_state(other)
        self._state += other.to(self._state)

    def _check_state(self, state: torch.Tensor) -> None:
        if tuple(state.shape) != tuple(self._state.shape):
            raise InputError(f"metrics: state of shape {tuple(state.shape)} does not fit {tuple(self._state.shape)}")


def class_bootstrap_interval(
    first: Sequence[float], second: Sequence[float], *, level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
) -> tuple[float, float]:
    """Per-class IoUs of two methods on the same classes (C,) and (C,) -> the percentile bootstrap
    interval of ``mean(first) - mean(second)`` (their mIoU difference) at ``level``.

    The classes are resampled with replacement, pairs kept together; the episodes stay as they were.
    So it answers "would another draw of this many classes rank the two the same way", the question
    held-out-class results raise, and not the spread from resampling episodes within a class."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.ndim != 1 or first.shape != second.shape or len(first) < 2:
        raise InputError(f"bootstrap: expected two equal-length lists of >= 2 per-class IoUs, got {first.shape} and {second.shape}")
    if not 0 < level < 1 or resamples < 1:
        raise InputError(f"bootstrap: expected 0 < level < 1 and resamples >= 1, got {level} and {resamples}")
    differences = first - second
    draws = np.random.default_rng(seed).integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
