"""MaskDecoder and its two-way transformer on a tiny configuration with realistically scaled weights."""

from __future__ import annotations

import math

import pytest
import torch

from vrpsam.errors import InputError
from vrpsam.sam.mask_decoder import MLP, MaskDecoder
from vrpsam.sam.transformer import Attention, TwoWayTransformer
from vrpsam.testing import realistic_

D, H, W, T = 32, 4, 5, 3  # width, embedding grid, prompt tokens


@pytest.fixture
def decoder() -> MaskDecoder:
    transformer = TwoWayTransformer(depth=2, embedding_dim=D, num_heads=4, mlp_dim=64)
    model = MaskDecoder(transformer_dim=D, transformer=transformer, iou_head_hidden_dim=D)
    return realistic_(model).eval()


def inputs(n: int, images: int = 1, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(images, D, H, W, generator=gen),
        torch.randn(1, D, H, W, generator=gen),
        torch.randn(n, T, D, generator=gen),
        torch.randn(n, D, H, W, generator=gen),
    )


def test_attention_is_scaled_dot_product_per_head():
    attn = realistic_(Attention(8, num_heads=2, downsample_rate=2), seed=3)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    out = attn(q, k, v)
    qp, kp, vp = attn.q_proj(q), attn.k_proj(k), attn.v_proj(v)  # (2, N, 4): two heads of 2
    heads = []
    for h in range(2):
        cols = slice(2 * h, 2 * h + 2)
        weights = torch.softmax(qp[..., cols] @ kp[..., cols].transpose(1, 2) / math.sqrt(2), dim=-1)
        heads.append(weights @ vp[..., cols])
    torch.testing.assert_close(out, attn.out_proj(torch.cat(heads, dim=-1)), rtol=0, atol=1e-6)


def test_attention_rejects_heads_that_do_not_divide():
    with pytest.raises(ValueError, match="num_heads"):
        Attention(32, num_heads=3)


def test_mlp_layers_and_relu():
    mlp = MLP(4, 6, 2, num_layers=3)
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(6, 4), (6, 6), (2, 6)]
    x = torch.randn(5, 4)
    a, b, c = mlp.layers
    torch.testing.assert_close(mlp(x), c(torch.relu(b(torch.relu(a(x))))))


def test_shapes_and_multimask_selection(decoder):
    args = inputs(n=2)
    with torch.no_grad():
        all_masks, all_iou = decoder.predict_masks(*args)
        multi, multi_iou = decoder(*args, multimask_output=True)
        single, single_iou = decoder(*args, multimask_output=False)
    assert all_masks.shape == (2, 4, 4 * H, 4 * W) and all_iou.shape == (2, 4)
    assert multi.shape == (2, 3, 4 * H, 4 * W) and multi_iou.shape == (2, 3)
    assert single.shape == (2, 1, 4 * H, 4 * W) and single_iou.shape == (2, 1)
    torch.testing.assert_close(multi, all_masks[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(single, all_masks[:, :1], rtol=0, atol=0)
    torch.testing.assert_close(single_iou, all_iou[:, :1], rtol=0, atol=0)
    assert 0.1 < all_masks.std() < 100  # realistic scale: not collapsed to ~0


def test_masks_are_hypernetwork_outputs_dotted_with_upscaled_features(decoder):
    captured = {}
    decoder.transformer.register_forward_hook(lambda m, i, out: captured.__setitem__("tokens", out[0]))
    decoder.output_upscaling.register_forward_hook(lambda m, i, out: captured.__setitem__("up", out))
    with torch.no_grad():
        masks, iou = decoder.predict_masks(*inputs(n=2))
        tokens, up = captured["tokens"], captured["up"]
        assert up.shape == (2, D // 8, 4 * H, 4 * W)
        for k, mlp in enumerate(decoder.output_hypernetworks_mlps):
            weights = mlp(tokens[:, 1 + k])  # token 0 is the IoU token, then the mask tokens
            expected = torch.einsum("nc,nchw->nhw", weights, up)
            torch.testing.assert_close(masks[:, k], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(iou, decoder.iou_prediction_head(tokens[:, 0]), rtol=0, atol=0)


def test_one_image_is_shared_by_all_prompt_sets(decoder):
    image, pe, sparse, dense = inputs(n=3)
    with torch.no_grad():
        shared = decoder(image, pe, sparse, dense, True)
        repeated = decoder(image.repeat(3, 1, 1, 1), pe, sparse, dense, True)
    for a, b in zip(shared, repeated):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_one_image_per_prompt_set_matches_decoding_each_alone(decoder):
    image, pe, sparse, dense = inputs(n=3, images=3)
    with torch.no_grad():
        batched = decoder(image, pe, sparse, dense, False)
        for i in range(3):
            alone = decoder(image[i : i + 1], pe, sparse[i : i + 1], dense[i : i + 1], False)
            torch.testing.assert_close(batched[0][i : i + 1], alone[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(batched[1][i : i + 1], alone[1], rtol=0, atol=1e-5)


def test_mismatched_image_batch_is_an_input_error(decoder):
    image, pe, sparse, dense = inputs(n=3, images=2)
    with pytest.raises(InputError, match="image_embeddings: batch 2 must be 1 or equal the 3 prompt sets"):
        decoder(image, pe, sparse, dense, True)


def test_gradients_reach_the_prompt_tokens(decoder):
    image, pe, sparse, dense = inputs(n=2, images=2)
    sparse.requires_grad_(True)
    masks, _ = decoder(image, pe, sparse, dense, False)
    masks.sum().backward()
    assert sparse.grad is not None and sparse.grad.abs().sum() > 0
