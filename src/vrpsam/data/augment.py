"""Training augmentation for small datasets: flips, scale/crop jitter, colour jitter, copy-paste, same-image episodes.

:class:`Augmenter` is an :data:`vrpsam.data.dataset.Augment` hook (``augment(image, mask, rng)``),
applied to the original-size image and its class mask before the dataset resizes them:

1. copy-paste (probability ``copy_paste``): one instance mask of a random other training image (all
   pixels of one of its classes), scaled to 15-50% of the shorter side, is pasted at a random place.
   The hook does not know the episode's class, so the pasted pixels are labelled background. That is
   right unless the pasted instance happens to be of the episode's class (about one draw in the number
   of training classes), where it is label noise;
2. crop: with probability ``zoom`` a window around the mask's foreground (:func:`zoom_crop`, the
   foreground's box then fills 15-80% of it), else a random window of ``min_area``..100% of the image
   area, aspect ratio within 3:4..4:3. Zoom gives training large objects: coco128's are small (median
   1.6% of a photo), and the lite weights trained before ``--ignore-held-out`` predicted about 14% of the
   image for objects that cover half of it (zoom was measured and not kept: ``checkpoints/lite/README.md``);
3. horizontal flip (probability ``flip``);
4. colour: brightness, contrast and saturation each scaled by a factor in ``1 ± colour``.

``views``: with 0 every draw is a fresh augmentation. With N > 0 each photo has N fixed views: the
dataset's generator only picks which view, and the view's own generator is seeded by (``seed``, the
photo's pixels, view). The same view of a photo is then pixel-identical every time it recurs (for every
class of the photo, except a zoomed view, which follows its class's mask), so frozen features of it can
be computed once for a whole run (see
:class:`vrpsam.sam.lite_encoder.MemoisedBackbone`): many steps over a bounded set of augmented images.

:class:`SameImageEpisodes` turns a fraction of training episodes into two augmentations of one photo
(the query becomes the first support's photo), which teaches matching under appearance change even
for classes with a single image.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import InputError
from .base import SegmentationSource
from .episodes import Episode
from .simulate import foreground_box


@dataclass(frozen=True)
class AugmentConfig:
    """See the module docstring. The defaults are mild enough to keep most objects in view."""

    flip: float = 0.5
    min_area: float = 0.6
    colour: float = 0.3
    copy_paste: float = 0.0
    zoom: float = 0.0
    views: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("flip", "colour", "copy_paste", "zoom"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InputError(f"augment {name}: expected a number in [0, 1], got {value!r}")
        if not 0 < self.min_area <= 1:
            raise InputError(f"augment min_area: expected a number in (0, 1], got {self.min_area!r}")
        if self.views < 0:
            raise InputError(f"augment views: expected 0 or more, got {self.views!r}")


class Augmenter:
    """The augmentation of :class:`AugmentConfig`; ``source`` supplies the instances to paste."""

    def __init__(self, config: AugmentConfig, source: SegmentationSource | None = None) -> None:
        if config.copy_paste and source is None:
            raise InputError("augment copy_paste: needs the training source to take instances from")
        self.config = config
        self.pool: list[tuple[str, int]] = []
        if config.copy_paste:
            self.pool = [(item, c) for c in source.classes for item in source.items(c)]
            self.source = source

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 image, (H, W) uint8 mask -> augmented pair (sizes may change)."""
        config = self.config
        if config.views:
            view = int(rng.integers(config.views))
            rng = np.random.default_rng([config.seed, zlib.crc32(np.ascontiguousarray(image).data), view])
        if self.pool and rng.random() < config.copy_paste:
            image, mask = self._paste(image, mask, rng)
        if config.zoom and rng.random() < config.zoom:  # no draw at 0: runs without zoom keep their stream
            image, mask = zoom_crop(image, mask, rng)
        else:
            image, mask = random_crop(image, mask, config.min_area, rng)
        if rng.random() < config.flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        image = colour_jitter(image, config.colour, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def _paste(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        item, class_id = self.pool[int(rng.integers(len(self.pool)))]
        donor, donor_mask = self.source.load(item, class_id)
        return paste_instance(image, mask, donor, donor_mask == 1, rng)


def random_crop(image: np.ndarray, mask: np.ndarray, min_area: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A window of ``min_area``..1 of the area, aspect ratio 3:4..4:3 relative to the image's."""
    h, w = mask.shape
    area = rng.uniform(min_area, 1.0)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = min(h, max(1, int(round(h * np.sqrt(area / ratio)))))
    cw = min(w, max(1, int(round(w * np.sqrt(area * ratio)))))
    top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    return image[top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]


def zoom_crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A window holding the whole box of the foreground (``mask == 1``), which fills 15-80% of its area;
    the window's aspect ratio is the image's, as far as the box and the image allow, and its place is
    random. Without foreground, or when the box is already that large, the image is returned whole."""
    box = foreground_box(mask == 1)
    if box is None:
        return image, mask
    (rows, cols), (h, w) = box, mask.shape
    box_h, box_w = rows.stop - rows.start, cols.stop - cols.start
    scale = np.sqrt(box_h * box_w / rng.uniform(0.15, 0.8) / (h * w))  # window side / image side
    ch, cw = min(h, max(box_h, int(round(h * scale)))), min(w, max(box_w, int(round(w * scale))))
    top = int(rng.integers(max(0, rows.stop - ch), min(rows.start, h - ch) + 1))
    left = int(rng.integers(max(0, cols.stop - cw), min(cols.start, w - cw) + 1))
    return image[top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]


def colour_jitter(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in ``1 ± amount`` (uint8 in, uint8 out)."""
    if amount == 0:
        return image
    brightness, contrast, saturation = rng.uniform(1 - amount, 1 + amount, size=3)
    x = image.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey[..., None]) * saturation + grey[..., None]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def paste_instance(image: np.ndarray, mask: np.ndarray, donor: np.ndarray, donor_fg: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``donor``'s foreground (cut to its box, scaled to 15-50% of ``image``'s shorter side) at a
    random place; the pasted pixels become background (0) in ``mask``."""
    box = foreground_box(donor_fg)
    if box is None:
        return image, mask
    cut, cut_fg = donor[box], donor_fg[box]
    h, w = mask.shape
    scale = rng.uniform(0.15, 0.5) * min(h, w) / max(cut_fg.shape)
    ph, pw = max(1, min(h, int(cut_fg.shape[0] * scale))), max(1, min(w, int(cut_fg.shape[1] * scale)))
    cut = np.asarray(Image.fromarray(cut).resize((pw, ph), Image.BILINEAR))
    cut_fg = np.asarray(Image.fromarray(cut_fg.astype(np.uint8) * 255).resize((pw, ph), Image.NEAREST)) > 0
    top, left = int(rng.integers(h - ph + 1)), int(rng.integers(w - pw + 1))
    image, mask = image.copy(), mask.copy()
    image[top : top + ph, left : left + pw][cut_fg] = cut[cut_fg]
    mask[top : top + ph, left : left + pw][cut_fg] = 0
    return image, mask


class SameImageEpisodes(Sequence[Episode]):
    """``episodes`` with a ``fraction`` of them made same-image: the query becomes the first support.

    The choice for an episode is drawn from ``default_rng([seed, epoch, index, 5])``, so it is fixed by
    the episode like everything else about it.
    """

    def __init__(self, episodes: Sequence[Episode], fraction: float, seed: int) -> None:
        if not 0 <= fraction <= 1:
            raise InputError(f"same_image: expected a fraction in [0, 1], got {fraction!r}")
        self.episodes, self.fraction, self.seed = episodes, fraction, seed

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        episode = self.episodes[i]
        rng = np.random.default_rng([self.seed, episode.epoch or 0, episode.index, 5])
        if rng.random() < self.fraction:
            return dataclasses.replace(episode, query=episode.supports[0])
        return episode
