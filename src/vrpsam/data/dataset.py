"""Episodes as tensors: the torch ``Dataset`` that training and evaluation iterate over.

Each sample is built only from its episode, the source and ``seed``, so it is the same in any
DataLoader worker or DDP rank. The support annotation (point, box, scribble or mask) is simulated on
the S×S support mask, as officially, with a generator seeded by ``(seed, [epoch,] index, 1, shot)``;
the optional augmentation gets ``(seed, [epoch,] index, 2, role)`` with role 0 for the query and
``1 + shot`` for the supports.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError, InputError
from .base import SegmentationSource
from . import simulate
from .episodes import DEFAULT_SEED, Episode
from .transforms import image_tensor, mask_tensor

#: ``augment(image (H, W, 3) uint8, mask (H, W) uint8, rng) -> (image, mask)``, on original-size arrays.
Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]

#: Keys whose tensors differ in size between samples; :func:`collate_episodes` keeps them as lists.
VARIABLE_SIZE_KEYS = ("query_mask_original",)

_ANNOTATION_STREAM, _AUGMENT_STREAM = 1, 2


class EpisodeDataset(Dataset):
    """Sample ``i`` is ``episodes[i]`` as tensors (S = ``size``, K = shots):

    - ``query_img`` (3, S, S) float, ImageNet-normalised; ``query_mask`` (S, S) long in {0, 1, 255};
    - ``support_imgs`` (K, 3, S, S); ``support_masks`` (K, S, S) float in {0, 1} (ignore -> 0, as official);
    - ``support_annotations`` (K, S, S) float: the ``annotation`` simulated from each support mask;
    - ``class_id``, ``index`` (long scalars), ``query_size`` (2,) long: the original (H, W);
      ``query_name`` (str);
    - with ``original_masks=True``: ``query_mask_original`` (H, W) long, for evaluation at the original
      size (batch it with :func:`collate_episodes`).

    ``training`` selects the training or the evaluation annotation rules of the simulator.
    """

    def __init__(self, source: SegmentationSource, episodes: Sequence[Episode], *, size: int = 512,
                 annotation: str = "mask", training: bool = False, seed: int = DEFAULT_SEED,
                 augment: Augment | None = None, original_masks: bool = False):
        if annotation not in simulate.CONDITIONS:
            raise InputError(f"annotation {annotation!r}: expected one of {', '.join(simulate.CONDITIONS)}")
        if size < 1:
            raise InputError(f"size: expected a positive integer, got {size}")
        self.source, self.episodes = source, episodes
        self.size, self.annotation, self.training, self.seed = int(size), annotation, training, seed
        self.augment, self.original_masks = augment, original_masks
        self._simulate = simulate.simulate

    def __len__(self) -> int:
        return len(self.episodes)

    def _rng(self, episode: Episode, stream: int, position: int) -> np.random.Generator:
        key = [self.seed] + ([] if episode.epoch is None else [episode.epoch]) + [episode.index, stream, position]
        return np.random.default_rng(key)

    def _load(self, episode: Episode, item: str, role: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self.source.load(item, episode.class_id)
        if self.augment is not None:
            image, mask = self.augment(image, mask, self._rng(episode, _AUGMENT_STREAM, role))
            if mask.shape != image.shape[:2]:
                raise DataError(f"augment returned a {mask.shape} mask for a {image.shape[:2]} image ({item})")
        return image, mask

    def __getitem__(self, i: int) -> dict[str, Any]:
        episode = self.episodes[i]
        query_image, query_mask = self._load(episode, episode.query, 0)
        support_images, support_masks, annotations = [], [], []
        for shot, item in enumerate(episode.supports):
            image, mask = self._load(episode, item, 1 + shot)
            binary = (mask_tensor(mask, self.size) == 1).to(torch.float32)
            rng = self._rng(episode, _ANNOTATION_STREAM, shot)
            annotation = self._simulate(binary.numpy(), self.annotation, rng, training=self.training)
            support_images.append(image_tensor(image, self.size))
            support_masks.append(binary)
            annotations.append(torch.from_numpy(np.asarray(annotation, dtype=np.float32)))
        sample = {
            "query_img": image_tensor(query_image, self.size),
            "query_mask": mask_tensor(query_mask, self.size).long(),
            "support_imgs": torch.stack(support_images),
            "support_masks": torch.stack(support_masks),
            "support_annotations": torch.stack(annotations),
            "class_id": torch.tensor(episode.class_id),
            "index": torch.tensor(episode.index),
            "query_size": torch.tensor(query_mask.shape[:2]),
            "query_name": episode.query,
        }
        if self.original_masks:
            sample["query_mask_original"] = torch.from_numpy(query_mask.astype(np.int64))
        return sample


def collate_episodes(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: tensors stacked along a new dim 0, strings and :data:`VARIABLE_SIZE_KEYS` kept as lists."""
    batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        stackable = key not in VARIABLE_SIZE_KEYS and isinstance(values[0], torch.Tensor)
        batch[key] = torch.stack(values) if stackable else values
    return batch

