"""ResizeLongestSide: sizes, image resizing and prompt scaling, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vrpsam.sam.transforms import ResizeLongestSide


@pytest.mark.parametrize(
    "old, target, new",
    [
        ((300, 200), 1024, (1024, 683)),  # 200 * 1024 / 300 = 682.67
        ((200, 300), 1024, (683, 1024)),
        ((480, 640), 1024, (768, 1024)),
        ((1282, 1282), 1024, (1024, 1024)),
        ((4, 1), 2, (2, 1)),  # 0.5 rounds up, not to even
        ((100, 30), 64, (64, 19)),  # 19.2
    ],
)
def test_preprocess_shape(old, target, new):
    assert ResizeLongestSide.get_preprocess_shape(*old, target) == new


def test_apply_image_is_pil_bilinear_to_the_long_side():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    out = ResizeLongestSide(1024).apply_image(image)
    assert out.shape == (1024, 683, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(image).resize((683, 1024), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    flat = np.full((30, 50, 3), 77, dtype=np.uint8)
    assert (ResizeLongestSide(64).apply_image(flat) == 77).all()


def test_apply_coords_scales_x_by_width_and_y_by_height():
    coords = np.array([[100, 150], [0, 300]])  # ints, (x, y) in a 300 (H) x 200 (W) image
    out = ResizeLongestSide(1024).apply_coords(coords, (300, 200))
    np.testing.assert_allclose(out, [[100 * 683 / 200, 150 * 1024 / 300], [0, 1024]])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(coords, [[100, 150], [0, 300]])  # input untouched


def test_apply_boxes():
    out = ResizeLongestSide(1024).apply_boxes(np.array([10, 30, 200, 300]), (300, 200))
    np.testing.assert_allclose(out, [[10 * 683 / 200, 30 * 1024 / 300, 683, 1024]])


def test_torch_variants_match_numpy_ones():
    transform = ResizeLongestSide(1024)
    coords = torch.tensor([[[100.0, 150.0], [3.0, 7.0]]])
    out = transform.apply_coords_torch(coords, (300, 200))
    assert out.dtype == torch.float32 and out.shape == (1, 2, 2)
    np.testing.assert_allclose(out.numpy(), transform.apply_coords(coords.numpy(), (300, 200)), rtol=1e-6)
    assert coords[0, 0, 0] == 100.0  # input untouched
    boxes = transform.apply_boxes_torch(torch.tensor([[10, 30, 200, 300]]), (300, 200))
    np.testing.assert_allclose(boxes.numpy(), [[10 * 683 / 200, 30 * 1024 / 300, 683, 1024]], rtol=1e-6)


def test_apply_image_torch():
    image = torch.full((2, 3, 30, 20), 5.0)
    out = ResizeLongestSide(64).apply_image_torch(image)
    assert out.shape == (2, 3, 64, 43)
    torch.testing.assert_close(out, torch.full_like(out, 5.0))
    # antialiased when shrinking: a 2-pixel checkerboard averages out instead of aliasing
    board = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 255.0
    small = ResizeLongestSide(8).apply_image_torch(board[None, None])
    assert (small - 127.5).abs().max() < 10
