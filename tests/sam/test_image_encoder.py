"""SAM's ViT image encoder: official parameter layout, and attention equal to a naive reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vrpsam.errors import InputError
from vrpsam.sam.image_encoder import VIT_CONFIGS, Attention, ImageEncoderViT, build_vit, rel_pos_attention
from vrpsam.testing import realistic_

TINY = dict(embed_dim=32, depth=4, num_heads=4, global_attn_indexes=(1, 3))


def expected_layout(name: str, img_size: int = 1024, window: int = 14) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of Segment Anything's ImageEncoderViT, written out by hand."""
    cfg = VIT_CONFIGS[name]
    D, grid, head = cfg.embed_dim, img_size // 16, cfg.embed_dim // cfg.num_heads
    shapes = {
        "pos_embed": (1, grid, grid, D),
        "patch_embed.proj.weight": (D, 3, 16, 16),
        "patch_embed.proj.bias": (D,),
    }
    for i in range(cfg.depth):
        span = grid if i in cfg.global_attn_indexes else window
        b = f"blocks.{i}."
        shapes.update(
            {
                b + "norm1.weight": (D,),
                b + "norm1.bias": (D,),
                b + "attn.rel_pos_h": (2 * span - 1, head),
                b + "attn.rel_pos_w": (2 * span - 1, head),
                b + "attn.qkv.weight": (3 * D, D),
                b + "attn.qkv.bias": (3 * D,),
                b + "attn.proj.weight": (D, D),
                b + "attn.proj.bias": (D,),
                b + "norm2.weight": (D,),
                b + "norm2.bias": (D,),
                b + "mlp.lin1.weight": (4 * D, D),
                b + "mlp.lin1.bias": (4 * D,),
                b + "mlp.lin2.weight": (D, 4 * D),
                b + "mlp.lin2.bias": (D,),
            }
        )
    shapes.update(
        {
            "neck.0.weight": (256, D, 1, 1),
            "neck.1.weight": (256,),
            "neck.1.bias": (256,),
            "neck.2.weight": (256, 256, 3, 3),
            "neck.3.weight": (256,),
            "neck.3.bias": (256,),
        }
    )
    return shapes


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_full_size_state_dict_matches_official_layout(name):
    with torch.device("meta"):  # vit_h has 632M parameters: shapes only, no memory
        model = build_vit(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_layout(name)


def test_small_image_sizes_the_tables_from_window_and_grid():
    model = ImageEncoderViT(img_size=96, window_size=4, **TINY)
    assert model.blocks[0].attn.rel_pos_h.shape == (7, 8)  # window 4
    assert model.blocks[1].attn.rel_pos_w.shape == (11, 8)  # global over the 6 x 6 grid
    assert model.pos_embed.shape == (1, 6, 6, 32)


def test_unknown_model_type_and_wrong_input_shape_are_input_errors():
    with pytest.raises(InputError, match="vit_x"):
        build_vit("vit_x")
    model = ImageEncoderViT(img_size=64, window_size=4, **TINY)
    with pytest.raises(InputError, match="expected shape"):
        model(torch.zeros(1, 3, 32, 32))


# ---- naive reference: the attention exactly as written in the papers, one window at a time ----


def naive_window_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """(B, h, w, D) tokens of one window (or the whole grid) -> (B, h, w, D)."""
    B, h, w, D = x.shape
    heads, hd = attn.num_heads, D // attn.num_heads
    qkv = F.linear(x.reshape(B, h * w, D), attn.qkv.weight, attn.qkv.bias)
    q, k, v = qkv.view(B, h * w, 3, heads, hd).permute(2, 0, 3, 1, 4)  # each (B, heads, N, hd)
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    i, j = i.flatten(), j.flatten()
    # table rows for every (query, key) pair: offset i_q - i_k (and j_q - j_k), shifted to be >= 0
    rel = attn.rel_pos_h[i[:, None] - i[None, :] + h - 1] + attn.rel_pos_w[j[:, None] - j[None, :] + w - 1]
    bias = (q[:, :, :, None, :] * rel).sum(-1)  # (B, heads, N, N)
    probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale + bias, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(B, h, w, D)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def naive_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, D) -> (B, H, W, D): zero-pad the tokens, attend in each window, crop (as official)."""
    B, H, W, D = x.shape
    s = attn.window_size
    if s == 0:
        return naive_window_attention(attn, x)
    padded = F.pad(x, (0, 0, 0, -W % s, 0, -H % s))
    out = torch.zeros_like(padded)
    for r in range(0, padded.shape[1], s):
        for c in range(0, padded.shape[2], s):
            out[:, r : r + s, c : c + s] = naive_window_attention(attn, padded[:, r : r + s, c : c + s])
    return out[:, :H, :W]


def naive_encoder(model: ImageEncoderViT, image: torch.Tensor) -> torch.Tensor:
    x = model.patch_embed.proj(image).permute(0, 2, 3, 1) + model.pos_embed
    for block in model.blocks:
        x = x + naive_attention(block.attn, block.norm1(x))
        x = x + block.mlp.lin2(F.gelu(block.mlp.lin1(block.norm2(x))))
    return model.neck(x.permute(0, 3, 1, 2))


@pytest.mark.parametrize(
    "img_size, window",
    [(64, 4), (80, 3), (80, 4), (64, 0)],
    ids=["windows-fit", "padded-3", "padded-4", "all-global"],
)
def test_attention_equals_naive_reference(img_size, window):
    torch.manual_seed(0)
    model = realistic_(ImageEncoderViT(img_size=img_size, window_size=window, **TINY))
    grid = img_size // 16
    x = torch.randn(2, grid, grid, 32)
    for block in model.blocks[:2]:  # one windowed (unless window 0) and one global block
        with torch.no_grad():
            torch.testing.assert_close(block.attn(x), naive_attention(block.attn, x), rtol=0, atol=1e-5)


def test_padding_tokens_take_part_in_window_attention():
    # Official behaviour: padding tokens are zeros *before* qkv, so they are attended to with
    # k = v = the qkv bias. Masking them out instead would change the result near the border.
    torch.manual_seed(1)
    attn = realistic_(ImageEncoderViT(img_size=80, window_size=3, **TINY)).blocks[0].attn
    x = torch.randn(1, 5, 5, 32)
    with torch.no_grad():
        ours = attn(x)
        masked = naive_window_attention(attn, x[:, 3:, 3:])  # bottom-right window without its padding
    assert (ours[:, 3:, 3:] - masked).abs().max() > 1e-3


def test_encoder_equals_naive_reference_and_has_the_official_output_shape():
    torch.manual_seed(0)
    model = realistic_(ImageEncoderViT(img_size=80, window_size=3, **TINY))
    images = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        out = model(images)
        ref = naive_encoder(model, images)
    assert out.shape == (2, 256, 5, 5)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mask_bytes", [1, 200, 2000, 2**30])
def test_attention_is_independent_of_the_mask_block_size(mask_bytes):
    torch.manual_seed(0)
    G, h, w, d = 6, 5, 3, 8
    q, k, v = (torch.randn(G, h * w, d) for _ in range(3))
    rel_h, rel_w = torch.randn(2 * h - 1, d), torch.randn(2 * w - 1, d)
    ref = rel_pos_attention(q, k, v, (h, w), 0.3, rel_h, rel_w, mask_bytes=2**30)
    got = rel_pos_attention(q, k, v, (h, w), 0.3, rel_h, rel_w, mask_bytes=mask_bytes)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    # and it is a softmax attention: without positions, uniform keys give the mean of v
    plain = rel_pos_attention(q, torch.zeros_like(k), v, (h, w), 0.3, mask_bytes=mask_bytes)
    torch.testing.assert_close(plain, v.mean(1, keepdim=True).expand_as(v), rtol=0, atol=1e-6)


def test_training_path_matches_inference_path_and_backpropagates():
    # With autograd the encoder uses PyTorch's own ops (no oneDNN calls, no in-place softmax).
    torch.manual_seed(0)
    model = realistic_(ImageEncoderViT(img_size=80, window_size=3, **TINY))
    images = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        inference = model(images)
    out = model(images)
    torch.testing.assert_close(out, inference, rtol=0, atol=1e-5)
    out.square().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["blocks.0.attn.rel_pos_h"].abs().sum() > 0


def test_without_relative_positions_there_are_no_tables_and_no_bias():
    torch.manual_seed(0)
    plain = realistic_(ImageEncoderViT(img_size=64, window_size=4, use_rel_pos=False, **TINY))
    assert not any("rel_pos" in k for k in plain.state_dict())
    with_tables = ImageEncoderViT(img_size=64, window_size=4, **TINY)
    state = {k: torch.zeros_like(v) if "rel_pos" in k else v for k, v in with_tables.state_dict().items()}
    state.update(plain.state_dict())
    with_tables.load_state_dict(state)  # zero tables: a zero bias
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain(images), with_tables(images), rtol=0, atol=1e-6)
