"""Pseudo-classes: clusters of unlabelled cells become classes, training-class pixels never join them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vrpsam.data.base import SegmentationSource
from vrpsam.data.pseudo import FIRST_PSEUDO_ID, PseudoClassConfig, PseudoClassSource
from vrpsam.errors import InputError

BLUE, RED, GREEN = (0, 0, 255), (255, 0, 0), (0, 255, 0)
CELL, SIDE = 8, 48


class MemorySource(SegmentationSource):
    """Photos (48, 48) painted blue, with an unlabelled red and a green square (16, 16) of class 1 or 2."""

    def __init__(self) -> None:
        self.photos = {"a": ((8, 8), (24, 24), 1), "b": ((0, 32), (16, 0), 2)}  # red corner, green corner, class

    @property
    def name(self) -> str:
        return "memory"

    @property
    def classes(self) -> dict[int, str]:
        return {1: "one", 2: "two"}

    def items(self, class_id: int) -> list[str]:
        return [p for p, (_, _, c) in self.photos.items() if c == class_id]

    def image_file(self, item: str) -> Path:
        return Path(f"{item}.png")

    def mask_file(self, item: str) -> Path:
        return Path(f"{item}.mask.png")

    def image(self, item: str) -> np.ndarray:
        (rt, rl), (gt, gl), _ = self.photos[item]
        image = np.empty((SIDE, SIDE, 3), np.uint8)
        image[:] = BLUE
        image[rt:rt + 16, rl:rl + 16] = RED
        image[gt:gt + 16, gl:gl + 16] = GREEN
        return image

    def mask(self, item: str, class_id: int) -> np.ndarray:
        _, (gt, gl), own = self.photos[item]
        mask = np.zeros((SIDE, SIDE), np.uint8)
        if class_id == own:
            mask[gt:gt + 16, gl:gl + 16] = 1
        return mask


def colour_features(image: np.ndarray) -> np.ndarray:
    """(C=3, 6, 6): the mean colour of each 8x8 cell, unit length."""
    n = SIDE // CELL
    cells = image.reshape(n, CELL, n, CELL, 3).mean(axis=(1, 3)).transpose(2, 0, 1) + 1e-3
    return (cells / np.linalg.norm(cells, axis=0, keepdims=True)).astype(np.float32)


def red(image: np.ndarray) -> np.ndarray:
    return np.all(image == RED, axis=-1)


def test_unlabelled_regions_become_classes_and_labelled_pixels_never_do():
    base = MemorySource()
    source = PseudoClassSource(base, colour_features, PseudoClassConfig(2, min_area=0.02, max_area=0.5, seed=0))
    assert source.pseudo_ids == (FIRST_PSEUDO_ID, FIRST_PSEUDO_ID + 1)
    assert source.classes == {1: "one", 2: "two", FIRST_PSEUDO_ID: "pseudo-0", FIRST_PSEUDO_ID + 1: "pseudo-1"}
    # real classes read through unchanged
    assert source.items(1) == ["a"] and np.array_equal(source.mask("a", 1), base.mask("a", 1))

    # one cluster is the red squares (11% of each photo); the blue one covers 67%, over max_area
    listed = {k: source.items(k) for k in source.pseudo_ids}
    assert sorted(len(v) for v in listed.values()) == [0, 2]
    red_class = next(k for k, v in listed.items() if v)
    for photo in ("a", "b"):
        image, mask = source.load(photo, red_class)
        truth = red(image)
        iou = (truth & (mask == 1)).sum() / (truth | (mask == 1)).sum()
        assert iou > 0.8, (photo, iou)  # bilinear similarity maps round the square's corners
        assert not mask[np.all(image == GREEN, axis=-1)].any()
    blue_class = next(k for k, v in listed.items() if not v)
    image, mask = source.load("a", blue_class)
    assert mask[np.all(image == BLUE, axis=-1)].mean() > 0.8 and not mask[np.all(image == GREEN, axis=-1)].any()


def test_the_same_seed_gives_the_same_classes():
    config = PseudoClassConfig(2, seed=3)
    one, two = (PseudoClassSource(MemorySource(), colour_features, config) for _ in range(2))
    for k in one.pseudo_ids:
        assert one.items(k) == two.items(k)
        assert all(np.array_equal(one.mask(p, k), two.mask(p, k)) for p in ("a", "b"))


def test_settings_and_impossible_requests_are_reported():
    with pytest.raises(InputError, match="pseudo_classes"):
        PseudoClassConfig(0)
    with pytest.raises(InputError, match="min_area"):
        PseudoClassConfig(2, min_area=0.6, max_area=0.5)
    with pytest.raises(InputError, match="unlabelled cells"):
        PseudoClassSource(MemorySource(), colour_features, PseudoClassConfig(100))
