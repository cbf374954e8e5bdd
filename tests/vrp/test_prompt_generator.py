"""The sine position encoding and the prompt generator (official key names, attention maths, reuse)."""

from __future__ import annotations

import math

import torch
from torch import nn

from vrpsam.vrp.position_encoding import PositionEmbeddingSine
from vrpsam.vrp.prompt_generator import PromptGenerator

# Official names relative to ``transformer_decoder.`` (vrp_sam_official.md §5).
_BLOCKS = {
    "transformer_self_attention_layers.0": "self_attn",
    "transformer_self_attention_layers_0.0": "self_attn",
    "transformer_cross_attention_layers.0": "multihead_attn",
    "transformer_cross_attention_layers_0.0": "multihead_attn",
}


def _official_shapes(dim: int = 256, queries: int = 50) -> dict[str, tuple[int, ...]]:
    shapes = {"supp_q_feat.weight": (queries, dim)}
    for block, attn in _BLOCKS.items():
        shapes[f"{block}.{attn}.in_proj_weight"] = (3 * dim, dim)
        shapes[f"{block}.{attn}.in_proj_bias"] = (3 * dim,)
        shapes[f"{block}.{attn}.out_proj.weight"] = (dim, dim)
        shapes[f"{block}.{attn}.out_proj.bias"] = (dim,)
        shapes[f"{block}.norm.weight"] = (dim,)
        shapes[f"{block}.norm.bias"] = (dim,)
    return shapes


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Realistic random weights: N(0, 1/fan_in) matrices, norms near 1, small biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
            elif name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return module


def test_position_encoding_values_by_hand():
    h, w = 4, 6
    pos = PositionEmbeddingSine(num_pos_feats=8)(torch.zeros(2, 3, h, w))
    assert pos.shape == (2, 16, h, w)
    for i in range(h):
        y = (i + 1) / (h + 1e-6) * 2 * math.pi
        for c in range(8):
            angle = y / 10000 ** (2 * (c // 2) / 8)
            expected = math.sin(angle) if c % 2 == 0 else math.cos(angle)
            assert torch.allclose(pos[:, c, i, :], torch.tensor(expected), atol=1e-6)
    for j in range(w):
        x = (j + 1) / (w + 1e-6) * 2 * math.pi
        assert torch.allclose(pos[:, 8, :, j], torch.tensor(math.sin(x)), atol=1e-6)
        assert torch.allclose(pos[:, 9, :, j], torch.tensor(math.cos(x)), atol=1e-6)


def test_state_dict_has_the_official_names_and_shapes():
    generator = PromptGenerator()
    shapes = {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    assert shapes == _official_shapes()
    assert sum(p.numel() for p in generator.parameters()) == 4 * 263_680 + 50 * 256


def _reference_prompts(generator: PromptGenerator, target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The same computation through torch's own nn.MultiheadAttention, sequence-first as in the official code."""
    state = generator.state_dict()
    dim = target.shape[1]

    def block(name: str, attn: str, queries, keys, values):
        mha = nn.MultiheadAttention(dim, 4)
        mha.load_state_dict({k.split(f"{attn}.")[1]: v for k, v in state.items() if k.startswith(f"{name}.{attn}.")})
        norm = nn.LayerNorm(dim)
        norm.load_state_dict({"weight": state[f"{name}.norm.weight"], "bias": state[f"{name}.norm.bias"]})
        return norm(queries + mha(queries, keys, values, need_weights=False)[0])

    def tokens(features):
        pos = PositionEmbeddingSine(dim // 2)(features).flatten(2).permute(2, 0, 1)
        return features.flatten(2).permute(2, 0, 1), pos

    tgt, tgt_pos = tokens(target)
    ref, ref_pos = tokens(reference)
    q = state["supp_q_feat.weight"].unsqueeze(1).repeat(1, target.shape[0], 1)
    q = block("transformer_cross_attention_layers_0.0", "multihead_attn", q, ref + ref_pos, ref)
    q = block("transformer_self_attention_layers_0.0", "self_attn", q, q, q)
    q = block("transformer_cross_attention_layers.0", "multihead_attn", q, tgt + tgt_pos, tgt)
    q = block("transformer_self_attention_layers.0", "self_attn", q, q, q)
    return q.permute(1, 0, 2)


@torch.no_grad()
def test_matches_torch_multihead_attention():
    generator = _randomise(PromptGenerator(num_queries=7, dim=32)).eval()
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 32, 5, 6, generator=g).relu()
    reference = torch.randn(2, 32, 5, 6, generator=g).relu()
    prompts = generator(target, reference)
    assert prompts.shape == (2, 7, 32)
    assert torch.allclose(prompts, _reference_prompts(generator, target, reference), atol=1e-5)


@torch.no_grad()
def test_reference_stage_is_reusable_and_broadcasts():
    generator = _randomise(PromptGenerator(num_queries=5, dim=16)).eval()
    g = torch.Generator().manual_seed(2)
    targets = torch.randn(3, 16, 4, 4, generator=g)
    reference = torch.randn(1, 16, 4, 4, generator=g)
    queries = generator.attend_reference(reference)
    assert queries.shape == (1, 5, 16)
    together = generator.attend_target(queries, targets)
    assert torch.equal(together, generator(targets, reference.expand(3, -1, -1, -1)))
    for i in range(3):
        assert torch.allclose(together[i : i + 1], generator(targets[i : i + 1], reference), atol=1e-6)


def test_gradients_reach_every_parameter():
    generator = _randomise(PromptGenerator(num_queries=3, dim=16))
    generator(torch.randn(1, 16, 3, 3), torch.randn(1, 16, 3, 3)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
