"""Annotations simulated from masks: official semantics, per-sample seeding, empty masks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vrpsam.errors import InputError
from vrpsam.data.simulate import (
    CONDITIONS,
    STROKE_PRESETS,
    eval_stroke_count,
    random_strokes,
    simulate,
    simulate_batch,
    simulate_box,
    simulate_points,
    simulate_scribble,
)


def box_mask(size=(128, 128), rows=(20, 90), cols=(30, 80)) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return mask


def blob_mask() -> np.ndarray:
    """Two separate parts, so the box spans background too."""
    mask = np.zeros((60, 70), np.float32)
    mask[5:12, 40:47] = 1
    mask[30:52, 8:20] = 1
    return mask


def test_eval_points_are_twenty_distinct_foreground_pixels():
    mask = blob_mask()
    out = simulate_points(mask, 0, training=False)
    assert out.dtype == np.float32 and set(np.unique(out)) == {0, 1}
    assert out.sum() == 20
    assert (out <= mask).all()


def test_eval_points_on_a_small_mask_take_every_pixel():
    mask = np.zeros((10, 10))
    mask[2, 3] = mask[7, 1] = mask[9, 9] = 1
    np.testing.assert_array_equal(simulate_points(mask, 1, training=False), mask.astype(np.float32))


def test_training_point_counts_are_per_sample_and_span_the_range():
    mask = blob_mask()
    counts = [int(simulate_points(mask, seed, training=True).sum()) for seed in range(300)]
    assert min(counts) == 1 and max(counts) == 20
    assert 8 < np.mean(counts) < 13  # uniform on 1..20 has mean 10.5


def test_box_is_the_tight_box_over_all_foreground():
    expected = np.zeros((60, 70), np.float32)
    expected[5:52, 8:47] = 1  # rows 5..51, columns 8..46, exclusive max + 1
    np.testing.assert_array_equal(simulate_box(blob_mask()), expected)
    np.testing.assert_array_equal(simulate_box(torch.from_numpy(blob_mask())), expected)


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("training", [False, True])
def test_empty_masks_give_zero_maps(condition, training):
    out = simulate(np.zeros((16, 24)), condition, 0, training=training)
    assert out.shape == (16, 24) and out.dtype == np.float32 and not out.any()


def test_eval_stroke_count_follows_the_official_seeded_draw():
    for fg in (1, 2, 5, 19, 20, 21, 10_000):
        assert eval_stroke_count(fg) == random.Random(321).randint(1, min(20, fg))
    assert eval_stroke_count(50_000) == 9
    assert random.Random(321).choices(["rand_curve", "rand_curve_small"], weights=[0.5, 0.5])[0] == "rand_curve"


def test_scribble_lies_inside_the_mask_and_covers_a_realistic_share():
    mask = box_mask((512, 512), (100, 350), (150, 350))  # the 250x200 box of the official measurement
    shares = []
    for seed in range(20):
        out = simulate_scribble(mask, seed, training=False)
        assert out.dtype == np.float32 and out.any()
        assert (out <= mask).all()
        shares.append(out.sum() / mask.sum())
    # The official generator covers ~10% of this box on average (5th-95th percentile ~6-14%).
    assert 0.06 < np.mean(shares) < 0.14


def test_eval_scribble_uses_the_expected_number_of_strokes(monkeypatch):
    import vrpsam.data.simulate as sim

    stroke_counts = []
    original = sim.random_strokes

    def counting(starts, *args):
        stroke_counts.append(len(starts))
        return original(starts, *args)

    monkeypatch.setattr(sim, "random_strokes", counting)
    tiny = np.zeros((64, 64))
    tiny[30, 30:33] = 1
    simulate_scribble(tiny, 0, training=False)
    simulate_scribble(box_mask(), 0, training=False)
    assert stroke_counts == [eval_stroke_count(3), 9]


def test_training_scribbles_vary_in_preset_and_count():
    mask = box_mask()
    sizes = [simulate_scribble(mask, seed, training=True).sum() for seed in range(40)]
    assert len(set(sizes)) > 30
    for seed in range(5):
        assert (simulate_scribble(mask, seed, training=True, preset="rand_curve_small") <= mask).all()


def test_random_strokes_start_at_their_start_points():
    starts = np.array([[20.0, 30.0], [100.0, 90.0]], np.float32)
    canvas = random_strokes(starts, (128, 128), STROKE_PRESETS["rand_curve"], np.random.default_rng(3))
    assert canvas.dtype == bool and canvas.shape == (128, 128)
    # the whole-line shift is |N(0, 3)| truncated, so the start moves by a few pixels at most
    assert canvas[22:39, 12:29].any() and canvas[82:99, 92:109].any()


@pytest.mark.parametrize("condition", ["point", "scribble"])
def test_same_seed_same_map_and_other_seeds_differ(condition):
    mask = box_mask()
    first = simulate(mask, condition, 7, training=False)
    np.testing.assert_array_equal(first, simulate(mask, condition, 7, training=False))
    np.testing.assert_array_equal(first, simulate(mask, condition, np.random.default_rng(7), training=False))
    assert not np.array_equal(first, simulate(mask, condition, 8, training=False))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    np.testing.assert_array_equal(simulate(mask, condition, g1, training=True),
                                  simulate(mask, condition, g2, training=True))


def test_batch_wrapper_seeds_each_sample():
    masks = torch.from_numpy(np.stack([box_mask(), box_mask(), np.zeros((128, 128), np.uint8)]))
    out = simulate_batch(masks, "scribble", [1, 2, 3], training=False)
    assert out.shape == (3, 128, 128) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[0].numpy(), simulate_scribble(masks[0], 1, training=False))
    assert not torch.equal(out[0], out[1]) and not out[2].any()
    out4 = simulate_batch(masks[:, None], "box", [0, 0, 0], training=True)
    assert out4.shape == (3, 1, 128, 128)
    assert torch.equal(out4[0, 0], torch.from_numpy(simulate_box(box_mask())))


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError, match="'points' is not one of point, box, scribble, mask"):
        simulate(box_mask(), "points", 0, training=False)
    with pytest.raises(InputError, match="'rand_line' is not one of"):
        simulate_scribble(box_mask(), 0, training=False, preset="rand_line")
    with pytest.raises(InputError, match="one per sample"):
        simulate_batch(torch.zeros(2, 8, 8), "point", [0], training=False)
    with pytest.raises(InputError, match=r"got shape \(2, 8, 8\)"):
        simulate_points(np.zeros((2, 8, 8)), 0, training=False)
    with pytest.raises(InputError, match="got str"):
        simulate_points(box_mask(), "0", training=False)
