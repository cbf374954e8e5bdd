"""Annotation maps to the feature grid: the official nearest rule versus max pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vrpsam.errors import InputError
from vrpsam.vrp.downsample import downsample_annotation
from vrpsam.data.simulate import simulate_points


def random_clicks(generator: torch.Generator, batch: int, size: int, clicks: int) -> torch.Tensor:
    maps = torch.zeros(batch, size * size)
    for b in range(batch):
        maps[b, torch.randperm(size * size, generator=generator)[:clicks]] = 1
    return maps.reshape(batch, size, size)


@pytest.mark.parametrize("size", [(64, 64), (37, 50), (100, 90)])
def test_nearest_is_exactly_interpolate(size):
    ann = (torch.rand(3, 1, 96, 128, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    expected = F.interpolate(ann, size=size, mode="nearest")
    assert torch.equal(downsample_annotation(ann, size, "nearest"), expected)
    assert torch.equal(downsample_annotation(ann[:, 0], size), expected)  # (B, H, W) input, default mode


def test_nearest_reads_pixel_floor_of_dst_times_ratio():
    ann = torch.zeros(1, 512, 512)
    ann[0, 8 * 5, 8 * 7] = 1  # read by cell (5, 7)
    ann[0, 8 * 5 + 1, 8 * 9] = 1  # between sampled rows: lost
    out = downsample_annotation(ann, (64, 64), "nearest")[0, 0]
    assert out[5, 7] == 1 and out.sum() == 1


@pytest.mark.parametrize("size", [(64, 64), (37, 50)])
def test_max_keeps_every_click_in_its_cell(size):
    clicks = random_clicks(torch.Generator().manual_seed(1), 4, 512, 20)
    out = downsample_annotation(clicks, size, "max")
    assert out.shape == (4, 1, *size)
    for b, y, x in torch.nonzero(clicks).tolist():
        assert out[b, 0, y * size[0] // 512, x * size[1] // 512] == 1
    if size == (64, 64):  # integer ratio: exactly the cells holding a click, nothing else
        expected = F.max_pool2d(clicks[:, None], 8)
        assert torch.equal(out, expected)


def test_nearest_loses_almost_all_simulated_clicks():
    mask = np.zeros((512, 512), np.uint8)
    mask[100:350, 150:350] = 1
    points = torch.from_numpy(np.stack([simulate_points(mask, s, training=False) for s in range(100)]))
    kept = downsample_annotation(points, (64, 64), "nearest").sum() / points.sum()
    # One pixel in 64 is read: ~1.6% of clicks survive (official measurement 1.7%).
    assert 0 < kept < 0.05
    assert downsample_annotation(points, (64, 64), "max").sum() >= 0.9 * points.sum()


def test_bad_inputs():
    with pytest.raises(InputError, match="'area' is not one of nearest, max"):
        downsample_annotation(torch.zeros(1, 8, 8), (4, 4), "area")
    with pytest.raises(InputError, match=r"got \(1, 2, 8, 8\)"):
        downsample_annotation(torch.zeros(1, 2, 8, 8), (4, 4))
