"""DAVIS J / F / J&F on shapes whose scores are worked out by hand."""

import math

import numpy as np
import pytest

from vrpsam.engine.davis_metrics import (
    boundary_map, dilate_disk, f_measure, j_and_f, jaccard, statistics, tolerance_pixels,
)
from vrpsam.errors import InputError


def square(shape=(100, 100), top=20, left=20, side=40):
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def stripe(first, last, shape=(100, 100)):
    """Columns first..last (inclusive) over the full height."""
    mask = np.zeros(shape, bool)
    mask[:, first : last + 1] = True
    return mask


def test_identical_masks_score_one():
    mask = square()
    assert jaccard(mask, mask) == 1.0
    assert f_measure(mask, mask).f == 1.0


def test_shifted_square_jaccard():
    # 40x40 squares, one 10 px to the right: overlap 40*30 = 1200, union 1600 + 1600 - 1200 = 2000
    assert jaccard(square(left=30), square()) == pytest.approx(1200 / 2000)


def test_empty_prediction_and_empty_pair():
    truth = square()
    empty = np.zeros_like(truth)
    assert jaccard(empty, truth) == 0.0
    score = f_measure(empty, truth)
    assert (score.f, score.precision, score.recall) == (0.0, 1.0, 0.0)  # DAVIS: P = 1, R = 0 -> F = 0
    reverse = f_measure(truth, empty)
    assert (reverse.f, reverse.precision, reverse.recall) == (0.0, 0.0, 1.0)
    assert jaccard(empty, empty) == 1.0 and f_measure(empty, empty).f == 1.0


def test_boundary_is_one_pixel_thin_and_ignores_the_image_border():
    mask = square(shape=(8, 8), top=2, left=2, side=3)  # rows/cols 2..4
    expected = np.zeros((8, 8), bool)
    # a pixel differing from its right, lower or lower-right neighbour:
    expected[1, 1:5] = True  # background row above (lower or lower-right neighbour inside)
    expected[2:5, 1] = True  # background column to the left (right neighbour inside)
    expected[2:5, 4] = True  # last object column (right neighbour outside)
    expected[4, 2:5] = True  # last object row (lower neighbour outside)
    np.testing.assert_array_equal(boundary_map(mask), expected)
    assert not boundary_map(np.ones((6, 7), bool)).any()  # the frame edge is not a contour


def test_tolerance_is_ceil_of_0_008_diagonal():
    assert tolerance_pixels((100, 100)) == 2  # 0.008 * 141.4 = 1.13 -> 2 (DAVIS rounds up)
    assert tolerance_pixels((480, 854)) == 8  # DAVIS 480p: 7.84 -> 8
    assert tolerance_pixels((1080, 1920)) == math.ceil(0.008 * math.hypot(1080, 1920)) == 18
    assert tolerance_pixels((100, 100), bound_th=3) == 3  # >= 1: pixels
    with pytest.raises(InputError):
        tolerance_pixels((10, 10), bound_th=0)


@pytest.mark.parametrize("shift, expected_f", [(0, 1.0), (1, 1.0), (2, 1.0), (3, 0.0), (5, 0.0)])
def test_f_tolerance_on_a_moved_edge(shift, expected_f):
    # left-half masks: each boundary is one full-height vertical line; moved by `shift` columns it
    # matches all or nothing, depending on the 2 px tolerance of a 100x100 frame
    truth = stripe(0, 49)
    prediction = stripe(0, 49 + shift)
    assert f_measure(prediction, truth).f == expected_f
    assert jaccard(prediction, truth) == pytest.approx(50 / (50 + shift))


def test_f_half_matched_boundary():
    # a stripe whose right edge moved 6 px (> 2 px tolerance): its left edge (100 px) still matches,
    # the right edge (100 px) does not -> P = R = 1/2 -> F = 1/2
    truth = stripe(30, 49)
    prediction = stripe(30, 55)
    score = f_measure(prediction, truth)
    assert (score.precision, score.recall, score.f) == (0.5, 0.5, 0.5)
    assert jaccard(prediction, truth) == pytest.approx(20 / 26)


def test_void_pixels_are_not_scored():
    truth = square()
    prediction = truth.copy()
    prediction[:, 50:] = False
    void = np.zeros_like(truth)
    void[:, 50:] = True  # everything the prediction missed lies in void
    assert jaccard(prediction, truth, void) == 1.0
    assert f_measure(prediction, truth, void).f == 1.0
    assert jaccard(prediction, truth) == pytest.approx(30 / 40)


def test_dilate_disk_shape():
    point = np.zeros((9, 9), bool)
    point[4, 4] = True
    disk = dilate_disk(point, 2)
    rows, cols = np.nonzero(disk)
    offsets = {(r - 4, c - 4) for r, c in zip(rows, cols)}
    assert offsets == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dx * dx + dy * dy <= 4}
    assert dilate_disk(point, 20).all()  # a radius beyond the frame still stays inside it


def test_statistics_recall_and_decay():
    values = [1, 1, 1, 1, 0, 0, 0, 0, 0]
    # quarters of 9 frames: round(linspace(1, 9, 5)) = 1, 3, 5, 7, 9 -> runs 1-3, 3-5, 5-7, 7-9 (1-based)
    stats = statistics(values)
    assert stats.mean == pytest.approx(4 / 9)
    assert stats.recall == pytest.approx(4 / 9)
    assert stats.decay == pytest.approx(1.0 - 0.0)
    rising = statistics([0.2, 0.4, 0.6, 0.8, 1.0])  # runs 1-2, 2-3, 3-4, 4-5: first 0.3, last 0.9
    assert rising.decay == pytest.approx(0.3 - 0.9) and rising.recall == pytest.approx(3 / 5)
    scores = j_and_f([1.0, 0.5], [0.0, 0.5])
    assert scores["J&F"] == pytest.approx((0.75 + 0.25) / 2)


def test_size_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="differ in size"):
        jaccard(np.zeros((4, 4)), np.zeros((4, 5)))
