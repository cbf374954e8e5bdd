"""The VRP prompt generator: learnable queries read the reference, then the target, and become SAM prompts.

Attribute names follow the official ``transformer_decoder`` module so that state-dict keys map one to one
onto official checkpoints (``transformer_cross_attention_layers_0.0.multihead_attn.in_proj_weight`` ...).
Each stage is one post-norm attention block without feed-forward layer: ``x = LayerNorm(x + Attn(x, ...))``.
The position encoding is added to the keys only; queries and values carry none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import PositionEmbeddingSine


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout (packed ``in_proj``, ``out_proj``).

    Batch-first: query (B, Nq, C), key and value (B, Nk, C) -> (B, Nq, C).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        # nn.MultiheadAttention's initialisation, then the official layers' Xavier pass over every matrix.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> projected (B, heads, N, C / heads)."""
        b, n, _ = x.shape
        return F.linear(x, weight, bias).view(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._heads(query, w_q, b_q)
        k = self._heads(key, w_k, b_k)
        v = self._heads(value, w_v, b_v)
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class SelfAttentionBlock(nn.Module):
    """Post-norm self-attention among the queries: (B, Q, C) -> (B, Q, C)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.self_attn(x, x, x))


class CrossAttentionBlock(nn.Module):
    """Post-norm cross-attention from the queries (B, Q, C) to tokens (B, N, C) whose keys carry ``pos``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.multihead_attn = MultiHeadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.multihead_attn(x, tokens + pos, tokens))


class PromptGenerator(nn.Module):
    """``num_queries`` learnable queries: cross-attn(reference) -> self-attn -> cross-attn(target) -> self-attn.

    The first two blocks see only the reference, so :meth:`attend_reference` can run once per reference
    and :meth:`attend_target` once per target.
    """

    def __init__(self, num_queries: int = 50, dim: int = 256, num_heads: int = 4) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.position_encoding = PositionEmbeddingSine(dim // 2)
        # Official names and registration order; index 0 of one-element lists (the official num_layers=1).
        # "_0" blocks are the reference stage, the others the target stage.
        self.transformer_self_attention_layers = nn.ModuleList([SelfAttentionBlock(dim, num_heads)])
        self.transformer_self_attention_layers_0 = nn.ModuleList([SelfAttentionBlock(dim, num_heads)])
        self.transformer_cross_attention_layers = nn.ModuleList([CrossAttentionBlock(dim, num_heads)])
        self.transformer_cross_attention_layers_0 = nn.ModuleList([CrossAttentionBlock(dim, num_heads)])
        self.supp_q_feat = nn.Embedding(num_queries, dim)

    def _tokens(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) -> tokens (B, hw, C) and their position encoding (B or 1, hw, C)."""
        pos = self.position_encoding(features[:1]).flatten(2).transpose(1, 2)
        return features.flatten(2).transpose(1, 2), pos

    def attend_reference(self, reference_features: torch.Tensor) -> torch.Tensor:
        """Reference tokens (B, C, h, w) -> query states (B, Q, C) after the reference stage."""
        tokens, pos = self._tokens(reference_features)
        queries = self.supp_q_feat.weight.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        queries = self.transformer_cross_attention_layers_0[0](queries, tokens, pos)
        return self.transformer_self_attention_layers_0[0](queries)

    def attend_target(self, queries: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        """Query states (B or 1, Q, C) and target tokens (B, C, h, w) -> prompts (B, Q, C)."""
        tokens, pos = self._tokens(target_features)
        queries = queries.expand(tokens.shape[0], -1, -1)
        queries = self.transformer_cross_attention_layers[0](queries, tokens, pos)
        return self.transformer_self_attention_layers[0](queries)

    def forward(self, target_features: torch.Tensor, reference_features: torch.Tensor) -> torch.Tensor:
        """Target and reference tokens (B, C, h, w) -> prompts (B, Q, C)."""
        return self.attend_target(self.attend_reference(reference_features), target_features)
