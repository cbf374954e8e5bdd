"""MobileSAM's TinyViT encoder: checkpoint layout, shapes, attention maths, and the inference fast paths."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from vrpsam.testing import realistic_state_dict
import torch.nn.functional as F

import vrpsam.sam.tiny_vit as tiny_vit
from vrpsam.errors import InputError
from vrpsam.sam.tiny_vit import Attention, TinyViT, build_tiny_vit, relative_offset_index
from vrpsam.weights import load_into


def loaded(img_size: int = 128, seed: int = 0) -> TinyViT:
    model = build_tiny_vit(img_size)
    load_into(model, realistic_state_dict(model, seed), source="test")
    return model


def images(img_size: int = 128, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))


def test_state_dict_is_mobile_sams_image_encoder(shared):
    expected = {}
    for line in shared("reference/mobile_sam_state_dict_keys.txt").read_text().splitlines():
        if line.startswith("image_encoder."):
            key, shape = line.split(" ", 1)
            expected[key.removeprefix("image_encoder.")] = json.loads(shape)
    ours = {key: list(value.shape) for key, value in build_tiny_vit(1024).state_dict().items()}
    assert ours == expected


def test_small_sizes_keep_the_checkpoint_layout():
    full = {key: value.shape for key, value in TinyViT().state_dict().items()}
    for size in (128, 256):
        assert {key: value.shape for key, value in build_tiny_vit(size).state_dict().items()} == full


@pytest.mark.parametrize("img_size, batch", [(128, 2), (256, 1)])
def test_output_is_256_channels_at_one_sixteenth(img_size, batch):
    model = loaded(img_size)
    assert model.img_size == img_size
    with torch.no_grad():
        out = model(images(img_size, batch))
    assert out.shape == (batch, 256, img_size // 16, img_size // 16)
    assert out.is_contiguous() and torch.isfinite(out).all()


def test_bad_sizes_are_input_errors():
    with pytest.raises(InputError, match="img_size"):
        build_tiny_vit(100)
    with pytest.raises(InputError, match="image batch"):
        build_tiny_vit(128)(torch.zeros(1, 3, 64, 64))


def test_train_eval_toggles_and_load_after_eval_agree():
    state = realistic_state_dict(build_tiny_vit(128))
    x = images()
    reference = build_tiny_vit(128).train()  # loaded in train mode, then switched to eval
    load_into(reference, state, source="test")
    with torch.no_grad():
        expected = reference.eval()(x)
        reference.train()
        again = reference.eval()(x)
        eval_first = build_tiny_vit(128).eval()  # switched to eval before the weights arrive
        load_into(eval_first, state, source="test")
        after_load = eval_first(x)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    torch.testing.assert_close(after_load, expected, rtol=0, atol=0)
    assert not build_tiny_vit(128).training
    with torch.no_grad():  # train mode: plain ops, BatchNorm with batch statistics
        assert reference.train()(x).shape == expected.shape


def test_in_place_edits_of_the_bias_table_take_effect():
    model = loaded()
    x = images()
    with torch.no_grad():
        before = model(x)
        model.layers[2].blocks[0].attn.attention_biases.add_(1.0)
        model.layers[2].blocks[0].local_conv.bn.running_var.mul_(2.0)
        after = model(x)
        fresh = build_tiny_vit(128)
        load_into(fresh, model.state_dict(), source="edited")
        torch.testing.assert_close(fresh(x), after, rtol=0, atol=0)
    assert (after - before).abs().max() > 1e-3


def first_appearance_offsets(size: int) -> torch.Tensor:
    """TinyViT's numbering of (|dy|, |dx|) offsets, by first appearance over all (query, key) pairs."""
    points = list(itertools.product(range(size), range(size)))
    numbers: dict[tuple[int, int], int] = {}
    index = []
    for (y1, x1), (y2, x2) in itertools.product(points, points):
        index.append(numbers.setdefault((abs(y1 - y2), abs(x1 - x2)), len(numbers)))
    return torch.tensor(index).view(len(points), len(points))


@pytest.mark.parametrize("size", [1, 2, 5, 7])
def test_relative_offset_index_numbers_offsets_by_first_appearance(size):
    assert torch.equal(relative_offset_index(size), first_appearance_offsets(size))


def naive_attention(attn: Attention, x: torch.Tensor, size: int) -> torch.Tensor:
    """Window attention one window and one head at a time, straight from the definition."""
    heads, dim = attn.num_heads, x.shape[-1]
    head_dim = dim // heads
    offsets = first_appearance_offsets(size)
    outputs = []
    for window in x:
        qkv = attn.qkv(F.layer_norm(window, (dim,), attn.norm.weight, attn.norm.bias, attn.norm.eps))
        per_head = []
        for h in range(heads):
            chunk = qkv[:, 3 * head_dim * h : 3 * head_dim * (h + 1)]  # [q | k | v] for this head
            q, k, v = chunk[:, :head_dim], chunk[:, head_dim : 2 * head_dim], chunk[:, 2 * head_dim :]
            scores = q @ k.T / math.sqrt(head_dim) + attn.attention_biases[h][offsets]
            per_head.append(torch.softmax(scores, dim=-1) @ v)
        outputs.append(attn.proj(torch.cat(per_head, dim=-1)))
    return torch.stack(outputs)


@pytest.mark.parametrize("dim, heads, size", [(64, 2, 7), (40, 5, 4)])
def test_attention_matches_naive_reference(dim, heads, size):
    torch.manual_seed(0)
    attn = Attention(dim, heads, size).eval()
    with torch.no_grad():
        attn.attention_biases.normal_()
        attn.qkv.weight.normal_(0, dim**-0.5)
        attn.proj.weight.normal_(0, dim**-0.5)
        attn.qkv.bias.normal_(0, 0.1)
        attn.norm.weight.normal_(1, 0.1)
    x = torch.randn(3, size * size, dim)
    with torch.no_grad():
        expected = naive_attention(attn, x, size)
        fast = attn(x)
    plain = attn(x)  # autograd on: the plain PyTorch path
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.detach(), expected, rtol=1e-5, atol=1e-5)


def test_chunked_inference_equals_whole_tensors(monkeypatch):
    model = loaded(128)
    x = images(128)
    with torch.no_grad():
        whole = model(x)
        # Tiny chunks: bands of 1-2 rows in every bottleneck (strided merges included), 1 window
        # and a few tokens at a time in the transformer blocks.
        monkeypatch.setattr(tiny_vit, "_CHUNK_ELEMENTS", 4096)
        chunked = model(x)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_fast_paths_match_plain_pytorch(monkeypatch):
    model = loaded(128)
    x = images(128)
    with torch.no_grad():
        fast = model(x)
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
        without_onednn = model(x)
        monkeypatch.undo()
    with_autograd = model(x.requires_grad_())  # no chunks, no oneDNN calls, no in-place GELU on leaves
    with_autograd.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    torch.testing.assert_close(without_onednn, fast, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_autograd.detach(), fast, rtol=1e-5, atol=1e-5)


def test_folded_conv_bn_equals_conv_then_batchnorm():
    conv = tiny_vit.ConvBN(8, 16, 3, 2, groups=1)
    load_into(conv, realistic_state_dict(conv), source="test")
    conv.eval()
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), conv.bn(conv.c(x)), rtol=1e-5, atol=1e-5)
