"""Training augmentation: fixed views per photo, crop bounds, zoom crops, copy-paste labels, same-image episodes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from vrpsam.data.augment import AugmentConfig, Augmenter, SameImageEpisodes, colour_jitter, paste_instance, random_crop, \
    zoom_crop
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


def test_zoom_crop_keeps_the_whole_object_and_makes_it_fill_15_to_80_percent():
    image, mask = _photo(3, (480, 640)), np.zeros((480, 640), np.uint8)
    mask[100:140, 300:330] = 1  # a 40x30 object: 0.4% of the photo
    fills = []
    for seed in range(40):
        out, out_mask = zoom_crop(image, mask, np.random.default_rng(seed))
        assert out.shape[:2] == out_mask.shape
        assert out_mask.sum() == mask.sum()  # never cut
        fills.append(mask.sum() / out_mask.size)
        assert 0.15 * 0.9 <= fills[-1] <= 0.8 * 1.1  # rounding of the window's sides aside
    assert max(fills) - min(fills) > 0.3  # the zoom varies
    whole = np.ones((480, 640), np.uint8)  # as large as it gets: the photo is kept
    assert zoom_crop(image, whole, np.random.default_rng(0))[0].shape == image.shape
    empty = np.zeros((480, 640), np.uint8)
    assert zoom_crop(image, empty, np.random.default_rng(0))[0].shape == image.shape


def test_zoomed_views_follow_the_class_and_zoom_zero_keeps_the_random_stream():
    image = _photo(4, (120, 160))
    mask_a, mask_b = np.zeros((120, 160), np.uint8), np.zeros((120, 160), np.uint8)
    mask_a[10:20, 10:20], mask_b[90:110, 120:150] = 1, 1
    zoomed = Augmenter(AugmentConfig(zoom=1.0, views=2, seed=1))
    out_a, crop_a = zoomed(image, mask_a, np.random.default_rng(0))
    out_b, crop_b = zoomed(image, mask_b, np.random.default_rng(0))
    assert crop_a.sum() == 100 and crop_b.sum() == 600 and out_a.shape != out_b.shape
    off = Augmenter(AugmentConfig(zoom=0.0, views=2, seed=1))
    for draw in range(5):  # zoom 0 draws nothing more: runs recorded before zoom existed see the same views
        rng = np.random.default_rng(draw)
        view_rng = np.random.default_rng([1, zlib.crc32(image.data), int(rng.integers(2))])
        expected, _ = random_crop(image, mask_a, 0.6, view_rng)
        if view_rng.random() < 0.5:
            expected = expected[:, ::-1]
        expected = colour_jitter(expected, 0.3, view_rng)
        assert np.array_equal(off(image, mask_a, np.random.default_rng(draw))[0], expected)


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
    with pytest.raises(InputError, match="zoom"):
        AugmentConfig(zoom=1.5)


def test_same_image_episodes_replace_the_query_by_the_support_photo():
    episodes = [Episode(i, 1, f"q{i}", (f"s{i}",), epoch=0) for i in range(200)]
    every = SameImageEpisodes(episodes, 1.0, seed=0)
    assert all(e.query == e.supports[0] for e in every)
    half = SameImageEpisodes(episodes, 0.5, seed=0)
    same = [e.query == e.supports[0] for e in half]
    assert 60 < sum(same) < 140
    assert same == [e.query == e.supports[0] for e in SameImageEpisodes(episodes, 0.5, seed=0)]
    assert all(e.index == i and e.class_id == 1 for i, e in enumerate(half))
