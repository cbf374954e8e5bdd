"""Training augmentation: fixed views per photo, crop bounds, copy-paste labels, same-image episodes."""

from __future__ import annotations

import numpy as np
import pytest

from vrpsam.data.augment import AugmentConfig, Augmenter, SameImageEpisodes, colour_jitter, paste_instance, random_crop
from vrpsam.data.episodes import Episode
from vrpsam.errors import InputError


def _photo(seed: int = 0, size=(60, 80)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def test_a_view_is_the_same_for_every_class_of_a_photo_and_recurs_exactly():
    augment = Augmenter(AugmentConfig(views=3, seed=7))
    image = _photo()
    mask_a, mask_b = np.zeros((60, 80), np.uint8), np.ones((60, 80), np.uint8)
    outputs = {}
    for draw in range(30):
        rng = np.random.default_rng(draw)
        view = int(np.random.default_rng(draw).integers(3))
        out_a, _ = augment(image, mask_a, rng)
        out_b, _ = augment(image, mask_b, np.random.default_rng(draw))
        assert np.array_equal(out_a, out_b)  # the class mask does not change the view
        if view in outputs:
            assert np.array_equal(outputs[view], out_a)
        outputs[view] = out_a
    assert len(outputs) == 3
    assert not np.array_equal(outputs[0], outputs[1])


def test_geometry_applies_to_image_and_mask_alike():
    augment = Augmenter(AugmentConfig(flip=1.0, colour=0.0, min_area=0.6))
    image = np.zeros((60, 80, 3), np.uint8)
    image[..., 0] = np.arange(80)[None, :]  # red = column index
    mask = (np.arange(80)[None, :] < 20).repeat(60, axis=0).astype(np.uint8)
    out, out_mask = augment(image, mask, np.random.default_rng(0))
    assert out.shape[:2] == out_mask.shape
    assert out.shape[0] * out.shape[1] >= 0.6 * 60 * 80 * 0.99
    assert np.array_equal(out_mask == 1, out[..., 0] < 20)  # the mask followed the pixels (flipped, cropped)
    assert out[0, 0, 0] > out[0, -1, 0]  # flipped: columns now decrease


def test_random_crop_stays_inside_and_keeps_the_area_bound():
    image, mask = _photo(1), np.zeros((60, 80), np.uint8)
    for seed in range(20):
        out, out_mask = random_crop(image, mask, 0.5, np.random.default_rng(seed))
        assert out.shape[:2] == out_mask.shape and out.shape[0] <= 60 and out.shape[1] <= 80
        assert out.size >= 0.5 * image.size * 0.75  # area bound, rounding and clipping aside


def test_colour_jitter_keeps_uint8_and_identity_at_zero():
    image = _photo(2)
    assert np.array_equal(colour_jitter(image, 0.0, np.random.default_rng(0)), image)
    out = colour_jitter(image, 0.4, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == image.shape and not np.array_equal(out, image)


def test_pasted_pixels_are_background_in_the_mask():
    image, mask = np.zeros((50, 50, 3), np.uint8), np.ones((50, 50), np.uint8)
    donor = np.full((20, 20, 3), 200, np.uint8)
    donor_fg = np.zeros((20, 20), bool)
    donor_fg[5:15, 5:15] = True
    out, out_mask = paste_instance(image, mask, donor, donor_fg, np.random.default_rng(0))
    pasted = out[..., 0] == 200
    assert pasted.any() and np.array_equal(out_mask == 0, pasted)
    assert mask.all() and not image.any()  # inputs untouched


def test_copy_paste_needs_a_source_and_settings_are_checked():
    with pytest.raises(InputError, match="copy_paste"):
        Augmenter(AugmentConfig(copy_paste=0.5))
    with pytest.raises(InputError, match="min_area"):
        AugmentConfig(min_area=0.0)
    with pytest.raises(InputError, match="views"):
        AugmentConfig(views=-1)


def test_same_image_episodes_replace_the_query_by_the_support_photo():
    episodes = [Episode(i, 1, f"q{i}", (f"s{i}",), epoch=0) for i in range(200)]
    every = SameImageEpisodes(episodes, 1.0, seed=0)
    assert all(e.query == e.supports[0] for e in every)
    half = SameImageEpisodes(episodes, 0.5, seed=0)
    same = [e.query == e.supports[0] for e in half]
    assert 60 < sum(same) < 140
    assert same == [e.query == e.supports[0] for e in SameImageEpisodes(episodes, 0.5, seed=0)]
    assert all(e.index == i and e.class_id == 1 for i, e in enumerate(half))
