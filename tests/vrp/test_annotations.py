"""User annotations: validation messages and rasterisation at the image size and at other sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vrpsam.errors import InputError
from vrpsam.vrp.annotations import Annotation, parse_box, parse_points

SIZE = (48, 64)  # (H, W)


def test_points_set_their_pixels():
    ann = Annotation.points([(3, 5), (63.9, 47.2), (64, 48)])
    out = ann.to_map(SIZE)
    assert out.dtype == np.float32 and out.shape == SIZE
    assert set(zip(*np.nonzero(out))) == {(5, 3), (47, 63)}  # the far corner (W, H) maps to the last pixel


def test_every_click_survives_a_downscale():
    rng = np.random.default_rng(0)
    clicks = rng.uniform(0, 512, size=(40, 2))
    out = Annotation.points(clicks).to_map((512, 512), out_size=(64, 64))
    expected = {(int(y // 8), int(x // 8)) for x, y in clicks}
    assert set(zip(*np.nonzero(out))) == expected


def test_box_is_filled_with_exclusive_max():
    out = Annotation.box(10, 4, 20, 9).to_map(SIZE)
    expected = np.zeros(SIZE, np.float32)
    expected[4:9, 10:20] = 1
    np.testing.assert_array_equal(out, expected)


def test_boxes_at_half_size_cover_every_overlapped_cell():
    out = Annotation.boxes([(0, 0, 3, 3), (61, 45, 64, 48)]).to_map(SIZE, out_size=(24, 32))
    expected = np.zeros((24, 32), np.float32)
    expected[0:2, 0:2] = 1  # [0, 3) -> [0, 1.5) touches cells 0 and 1
    expected[22:24, 30:32] = 1
    np.testing.assert_array_equal(out, expected)


def test_polyline_scribble_passes_through_its_vertices_and_scales():
    ann = Annotation.scribble([[(5, 5), (50, 5)], [(30, 40)]], width=3)
    out = ann.to_map(SIZE)
    assert out[5, 5:50].all() and out[40, 30] == 1
    assert out[20, :].sum() == 0
    small = ann.to_map(SIZE, out_size=(6, 8))
    assert small[0, 0] == 1 and small[5, 3] == 1  # every vertex keeps its cell


def test_default_stroke_width_scales_with_the_image():
    thick = Annotation.scribble([[(100, 256), (400, 256)]]).to_map((512, 512))
    assert thick[:, 250].sum() == 6  # 6/512 of the shorter side


def test_mask_accepts_binary_encodings():
    base = np.zeros(SIZE, np.uint8)
    base[10:20, 5:9] = 1
    variants = [base, base * 255, base.astype(bool), torch.from_numpy(base * 7),
                Image.fromarray(base * 255), Image.fromarray(base * 255).convert("1"),
                np.repeat(base[..., None] * 255, 3, axis=2)]
    for variant in variants:
        np.testing.assert_array_equal(Annotation.mask(variant).to_map(SIZE), base.astype(np.float32))


def test_mask_is_resized_with_the_nearest_rule():
    base = np.zeros(SIZE, np.uint8)
    base[10:30, 5:40] = 1
    out = Annotation.mask(base).to_map(SIZE, out_size=(24, 32))
    np.testing.assert_array_equal(out, base[::2, ::2].astype(np.float32))


def test_raster_is_read_only_and_decoupled_from_the_input():
    base = np.ones(SIZE, np.uint8)
    ann = Annotation.mask(base)
    base[:] = 0
    assert ann.raster.all() and not ann.raster.flags.writeable


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Annotation.points([(70, 3)]).validate(SIZE), "point #0 (70, 3) lies outside the image (width 64"),
        (lambda: Annotation.points([(1, 1), (2, -0.5)]).validate(SIZE), "point #1 (2, -0.5)"),
        (lambda: Annotation.box(0, 0, 10, 49).validate(SIZE), "box #0 (0, 0, 10, 49) lies outside"),
        (lambda: Annotation.scribble([[(1, 1), (99, 1)]]).validate(SIZE), "polyline #0 vertex #1 (99, 1)"),
        (lambda: Annotation.box(10, 4, 10, 9), "box #0 (10, 4, 10, 9) is degenerate"),
        (lambda: Annotation.boxes([(0, 0, 5, 5), (4, 8, 9, 2)]), "box #1 (4, 8, 9, 2) is degenerate"),
        (lambda: Annotation.points([]), "points: the list is empty"),
        (lambda: Annotation.points([(1, float("nan"))]), "#0 (1.0, nan) has a non-finite"),
        (lambda: Annotation.points([(1, 2, 3)]), "shape (1, 3)"),
        (lambda: Annotation.scribble([]), "list of polylines is empty"),
        (lambda: Annotation.scribble([[(1, 1)]], width=0), "width must be a positive"),
        (lambda: Annotation.mask(np.zeros(SIZE)), "mask: has no foreground pixel"),
        (lambda: Annotation.scribble(np.zeros(SIZE, bool)), "scribble: has no foreground pixel"),
        (lambda: Annotation.mask(np.ones((40, 64))).validate(SIZE),
         "size (H=40, W=64) differs from the image size (H=48, W=64)"),
        (lambda: Annotation.mask(np.array([[0, 0.5], [1, 1]])), "found 3 values: 0, 0.5, 1"),
        (lambda: Annotation.mask(np.array([[0, 1], [2, 2]])), "found 3 values: 0, 1, 2"),
        (lambda: Annotation.mask(np.array([[0, -1], [0, -1]])), "found 2 values: -1, 0"),
        (lambda: Annotation.mask(np.array([[0, np.nan], [1, 1]])), "nan"),
        (lambda: Annotation.mask(np.ones((4, 4, 4))), "got shape (4, 4, 4)"),
        (lambda: Annotation.mask(np.stack([np.ones((4, 4)), np.zeros((4, 4)), np.ones((4, 4))], 2)), "equal channels"),
        (lambda: Annotation("polygon"), "'polygon' is not one of"),
    ],
)
def test_errors_name_the_offending_value(build, fragment):
    with pytest.raises(InputError) as info:
        build()
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_scribble_that_vanishes_on_resize_is_an_error():
    thin = np.zeros((64, 64), bool)
    thin[:, 3] = True  # the nearest rule to 8x8 reads columns 0, 8, 16, ...
    with pytest.raises(InputError, match="no foreground pixel is left after resizing"):
        Annotation.scribble(thin).to_map((64, 64), out_size=(8, 8))


def test_parsers():
    assert parse_points("10,20; 30.5,4 ;") == [(10.0, 20.0), (30.5, 4.0)]
    assert parse_box(" 1,2,3,4 ") == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(InputError, match="got '30'"):
        parse_points("10,20;30")
    with pytest.raises(InputError, match="got 'a,b'"):
        parse_points("a,b")
    with pytest.raises(InputError, match="got ';'"):
        parse_points(";")
    with pytest.raises(InputError, match="got '1,2,3'"):
        parse_box("1,2,3")
    with pytest.raises(InputError, match="got '1,2,inf,4'"):
        parse_box("1,2,inf,4")
