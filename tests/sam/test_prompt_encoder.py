"""PromptEncoder: Fourier encodings and token layout checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vrpsam.sam.prompt_encoder import PositionEmbeddingRandom, PromptEncoder

D, GRID, SIZE = 8, 4, 64  # embed dim, embedding grid (h = w), input image side


@pytest.fixture
def encoder() -> PromptEncoder:
    torch.manual_seed(0)
    enc = PromptEncoder(embed_dim=D, image_embedding_size=(GRID, GRID), input_image_size=(SIZE, SIZE), mask_in_chans=16)
    with torch.no_grad():
        for emb in [*enc.point_embeddings, enc.not_a_point_embed, enc.no_mask_embed]:
            emb.weight.normal_()
    return enc.eval()


def fourier(matrix: np.ndarray, x: float, y: float) -> np.ndarray:
    """sin/cos of 2π ((2x-1) g_x + (2y-1) g_y), for (x, y) in [0, 1]², in float64."""
    phase = 2 * math.pi * ((2 * x - 1) * matrix[0] + (2 * y - 1) * matrix[1])
    return np.concatenate([np.sin(phase), np.cos(phase)])


def test_dense_pe_encodes_cell_centres(encoder):
    matrix = encoder.pe_layer.positional_encoding_gaussian_matrix.numpy().astype(np.float64)
    pe = encoder.get_dense_pe()
    assert pe.shape == (1, D, GRID, GRID)
    for row, col in [(0, 0), (1, 3), (3, 2)]:
        expected = fourier(matrix, (col + 0.5) / GRID, (row + 0.5) / GRID)
        np.testing.assert_allclose(pe[0, :, row, col].numpy(), expected, atol=1e-5)


def test_points_are_shifted_to_pixel_centres_and_labelled(encoder):
    matrix = encoder.pe_layer.positional_encoding_gaussian_matrix.numpy().astype(np.float64)
    coords = torch.tensor([[[10.0, 20.0], [63.0, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[1, 0, -1]])
    sparse, dense = encoder((coords, labels), None, None)
    # no box: one padding token is appended
    assert sparse.shape == (1, 4, D)
    weights = {k: e.weight[0].detach().numpy() for k, e in enumerate(encoder.point_embeddings)}
    np.testing.assert_allclose(sparse[0, 0].detach(), fourier(matrix, 10.5 / SIZE, 20.5 / SIZE) + weights[1], atol=1e-5)
    np.testing.assert_allclose(sparse[0, 1].detach(), fourier(matrix, 63.5 / SIZE, 0.5 / SIZE) + weights[0], atol=1e-5)
    not_a_point = encoder.not_a_point_embed.weight[0].detach()
    torch.testing.assert_close(sparse[0, 2], not_a_point, rtol=0, atol=0)
    torch.testing.assert_close(sparse[0, 3], not_a_point, rtol=0, atol=0)
    expected_dense = encoder.no_mask_embed.weight[0][:, None, None].expand(D, GRID, GRID)
    torch.testing.assert_close(dense[0], expected_dense, rtol=0, atol=0)


def test_box_gives_two_corner_tokens_and_no_padding(encoder):
    matrix = encoder.pe_layer.positional_encoding_gaussian_matrix.numpy().astype(np.float64)
    coords, labels = torch.tensor([[[30.0, 40.0]]]), torch.tensor([[1]])
    box = torch.tensor([[2.0, 4.0, 50.0, 60.0]])
    sparse, _ = encoder((coords, labels), box, None)
    assert sparse.shape == (1, 3, D)
    top_left = fourier(matrix, 2.5 / SIZE, 4.5 / SIZE) + encoder.point_embeddings[2].weight[0].detach().numpy()
    bottom_right = fourier(matrix, 50.5 / SIZE, 60.5 / SIZE) + encoder.point_embeddings[3].weight[0].detach().numpy()
    np.testing.assert_allclose(sparse[0, 1].detach(), top_left, atol=1e-5)
    np.testing.assert_allclose(sparse[0, 2].detach(), bottom_right, atol=1e-5)


def test_other_point_labels_get_position_only_as_official(encoder):
    # The official PromptEncoder embeds labels 0 and 1 only; labels 2/3 (ONNX box corners) keep their
    # position encoding and no label embedding. Box corners proper go through `boxes`.
    coords = torch.tensor([[[2.0, 4.0], [50.0, 60.0]]])
    as_corners, _ = encoder((coords, torch.tensor([[2, 3]])), None, None)
    as_background, _ = encoder((coords, torch.tensor([[0, 0]])), None, None)
    background = encoder.point_embeddings[0].weight
    torch.testing.assert_close(as_corners[:, :2] + background, as_background[:, :2], rtol=0, atol=1e-6)


def test_masks_and_batches(encoder):
    masks = torch.randn(3, 1, 4 * GRID, 4 * GRID)
    sparse, dense = encoder(None, None, masks)
    assert sparse.shape == (3, 0, D) and dense.shape == (3, D, GRID, GRID)
    assert encoder.mask_input_size == (16, 16)
    # the mask path is a plain function of each mask: batch rows do not mix
    _, one = encoder(None, None, masks[1:2])
    torch.testing.assert_close(dense[1:2], one, rtol=0, atol=1e-6)
    sparse, dense = encoder(None, None, None)
    assert sparse.shape == (1, 0, D) and dense.shape == (1, D, GRID, GRID)


def test_position_embedding_scale_and_non_square_image():
    torch.manual_seed(0)
    layer = PositionEmbeddingRandom(4, scale=2.0)
    torch.manual_seed(0)
    assert torch.equal(layer.positional_encoding_gaussian_matrix, 2.0 * torch.randn(2, 4))
    matrix = layer.positional_encoding_gaussian_matrix.numpy().astype(np.float64)
    out = layer.forward_with_coords(torch.tensor([[[30.0, 10.0]]]), (20, 40))  # (H, W)
    np.testing.assert_allclose(out[0, 0].numpy(), fourier(matrix, 30 / 40, 10 / 20), atol=1e-5)
    grid = layer((2, 3))
    assert grid.shape == (8, 2, 3)
    np.testing.assert_allclose(grid[:, 1, 2].numpy(), fourier(matrix, 2.5 / 3, 1.5 / 2), atol=1e-5)
