"""Pseudo-classes: clusters of frozen features over the pixels that no training class labels.

With few photos, a model trained on a fold's classes learns that everything else is background, the
held-out classes included: they sit unlabelled in the same photos (in coco128, persons are in 61 of
128). :class:`PseudoClassSource` adds ``count`` classes found without any label, so that some
training episodes ask for "whatever the reference marks", unnamed things among them:

1. every photo of the training view goes through ``features`` (frozen backbone maps, (C, h, w),
   L2-normalised per cell);
2. the cells that no training class covers (less than half of their pixels labelled) of all photos
   are clustered by spherical k-means (cosine similarity, ``iterations`` rounds from ``count`` cells
   drawn with ``seed``);
3. pseudo-class ``k`` in a photo is where centroid ``k`` is the most similar one (similarities
   bilinearly resized to the photo), minus the pixels of training classes. The photo is one of the
   class's ``items`` when that region is ``min_area``..``max_area`` of the photo.

Only the training view's own labels are read: the pixels of held-out classes are, to it, unlabelled
like any other. Pseudo-class ids start at :data:`FIRST_PSEUDO_ID` (past the largest real id when that
is larger), so they never name a class of the dataset; real classes read as from the view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..cluster import spherical_kmeans
from ..errors import InputError
from .base import SegmentationSource, SourceView

#: ``features(image (H, W, 3) uint8) -> (C, h, w) float32``, L2-normalised over C at every cell.
Features = Callable[[np.ndarray], np.ndarray]

FIRST_PSEUDO_ID = 1000


@dataclass(frozen=True)
class PseudoClassConfig:
    """See the module docstring."""

    count: int
    min_area: float = 0.02
    max_area: float = 0.5
    iterations: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise InputError(f"pseudo_classes: expected 1 or more, got {self.count!r}")
        if not 0 <= self.min_area < self.max_area <= 1:
            raise InputError(f"pseudo-class areas: expected 0 <= min_area < max_area <= 1, got {self.min_area}, {self.max_area}")


class PseudoClassSource(SourceView):
    """``base`` (a training view) plus ``config.count`` pseudo-classes; see the module docstring.
    Photos and the real classes' masks are read from ``base``, as any view does."""

    def __init__(self, base: SegmentationSource, features: Features, config: PseudoClassConfig) -> None:
        super().__init__(base)
        self.config = config
        self._labelled_classes = {c: set(base.items(c)) for c in base.classes}
        photos = sorted(set().union(*self._labelled_classes.values()))
        maps, free = [], []
        for photo in photos:
            cells = torch.from_numpy(np.asarray(features(base.image(photo)), dtype=np.float32))
            labelled = torch.from_numpy(self._labelled(photo).astype(np.float32))[None, None]
            covered = F.adaptive_avg_pool2d(labelled, cells.shape[-2:])[0, 0] >= 0.5
            maps.append(cells)
            free.append(cells.flatten(1).T[~covered.flatten()])
        free_cells = torch.cat(free)
        if len(free_cells) < config.count:
            raise InputError(f"pseudo_classes: {config.count} clusters need at least {config.count} unlabelled cells, found {len(free_cells)}")
        centroids = spherical_kmeans(free_cells, config.count, config.iterations, config.seed)
        first = max(FIRST_PSEUDO_ID, max(base.classes, default=0) + 1)
        self.pseudo_ids = tuple(range(first, first + config.count))
        # similarities (K, h, w) per photo: all that mask() needs besides the photo's labels
        self._similarity = {p: torch.einsum("kc,chw->khw", centroids, m) for p, m in zip(photos, maps)}
        self._items: dict[int, list[str]] = {k: [] for k in self.pseudo_ids}
        for photo in photos:
            for k, area in zip(self.pseudo_ids, self._areas(photo)):
                if config.min_area <= area <= config.max_area:
                    self._items[k].append(photo)

    @property
    def name(self) -> str:
        return f"{self.base.name} + {self.config.count} pseudo-classes"

    @property
    def classes(self) -> dict[int, str]:
        return {**self.base.classes, **{k: f"pseudo-{i}" for i, k in enumerate(self.pseudo_ids)}}

    def items(self, class_id: int) -> list[str]:
        if class_id in self._items:
            return list(self._items[class_id])
        return self.base.items(class_id)

    def mask(self, item: str, class_id: int) -> np.ndarray:
        if class_id not in self._items:
            return self.base.mask(item, class_id)
        return (self._winners(item) == self.pseudo_ids.index(class_id)).astype(np.uint8)

    def _labelled(self, photo: str) -> np.ndarray:
        """(H, W) bool: pixels of any training class (ignore pixels count as labelled)."""
        labelled = None
        for class_id, photos in self._labelled_classes.items():
            if photo in photos:
                mask = self.base.mask(photo, class_id) != 0
                labelled = mask if labelled is None else labelled | mask
        return labelled

    def _winners(self, photo: str) -> np.ndarray:
        """(H, W) int: the index of the most similar centroid at every pixel, -1 on training-class pixels."""
        labelled = self._labelled(photo)
        similarity = F.interpolate(self._similarity[photo][None], size=labelled.shape, mode="bilinear", align_corners=False)[0]
        winners = similarity.argmax(0).numpy()
        winners[labelled] = -1
        return winners

    def _areas(self, photo: str) -> np.ndarray:
        """(K,) fraction of the photo each pseudo-class covers."""
        winners = self._winners(photo)
        return np.bincount(winners[winners >= 0].ravel(), minlength=self.config.count) / winners.size
