"""SAM's image encoder: a plain ViT (ViTDet style) with windowed and global attention and a conv neck.

Parameter names and shapes follow Segment Anything's ``ImageEncoderViT`` so its checkpoints (keys
under ``image_encoder.``) load strictly. The maths is the same, organised for speed on CPU:

* attention is PyTorch's fused ``scaled_dot_product_attention`` with the decomposed relative-position
  bias as its additive mask (see :func:`rel_pos_attention`), so the (batch*heads, N, N) scores and
  their softmax are never stored; the official global blocks build several 4096 x 4096 maps per head;
* ``qkv`` runs on the unpadded token grid, and ``proj`` after the windows are merged back and the
  padding cropped, so no linear layer works on padding tokens;
* float32 CPU inference runs the linear layers through oneDNN (see :func:`linear`). PyTorch sends
  float32 ``F.linear`` to MKL, which runs its AVX2 code on AMD CPUs; oneDNN uses AVX-512 there and
  was about twice as fast on our machines. Same products and sums; only the order of the float
  additions differs (outputs agree with the official encoder to ~1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .common import LayerNorm2d, MLPBlock, onednn_usable

# Upper bound on one block of the relative-position mask (bytes): bounds the extra memory of global
# attention (the whole mask of one 64 x 64 grid is 805 MB per image) without splitting the work into
# many small calls, each of which can wait milliseconds for a descheduled thread on a busy machine.
_MASK_BLOCK_BYTES = 128 * 2**20

# oneDNN's fused linear (+ optional GELU); an internal op, so its absence is tolerated
_ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def _onednn_ready(*tensors: torch.Tensor) -> bool:
    return _ONEDNN_LINEAR is not None and onednn_usable(*tensors)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for (..., C_in) x, optionally followed by exact (erf) GELU.

    Float32 CPU inference goes through oneDNN (the GELU fused into the same pass); anything else,
    including autograd, through PyTorch's own ops.
    """
    if not _onednn_ready(x, weight):
        out = F.linear(x, weight, bias)
        return F.gelu(out) if gelu else out
    tokens = x.reshape(-1, x.shape[-1]).contiguous()  # strided operands hit oneDNN's slow reference kernel
    post_op, algorithm = ("gelu", "none") if gelu else ("none", "")  # "none": erf GELU, as nn.GELU()
    out = _ONEDNN_LINEAR(tokens, weight, bias, post_op, [], algorithm)
    return out.view(*x.shape[:-1], weight.shape[0])


@dataclass(frozen=True)
class ViTConfig:
    """The size-dependent part of a SAM ViT encoder; the rest is shared by vit_b, vit_l and vit_h."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]


VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_b": ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": ViTConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": ViTConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


def build_vit(name: str, img_size: int = 1024) -> "ImageEncoderViT":
    """SAM's image encoder ``name`` (``vit_b``, ``vit_l`` or ``vit_h``) with zero-initialised position tables."""
    if name not in VIT_CONFIGS:
        raise InputError(f"model type {name!r}: unknown ViT encoder, expected one of {', '.join(VIT_CONFIGS)}")
    cfg = VIT_CONFIGS[name]
    return ImageEncoderViT(
        img_size=img_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        global_attn_indexes=cfg.global_attn_indexes,
    )


class ImageEncoderViT(nn.Module):
    """(B, in_chans, img_size, img_size) image -> (B, out_chans, img_size/16, img_size/16) embedding."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        rel_pos_zero_init: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        """Arguments mean what they mean in Segment Anything; ``window_size=0`` makes every block global.

        ``rel_pos_zero_init`` is accepted for compatibility: as in the official code, the relative
        position tables start at zero either way (checkpoints overwrite them).
        """
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                grid_size=grid,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, img_size, img_size) -> (B, out_chans, img_size/16, img_size/16)."""
        expected = (self.patch_embed.proj.in_channels, self.img_size, self.img_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise InputError(f"image batch: expected shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, C, H, W) -> (B, H/p, W/p, D) token grid."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous once here: otherwise every residual sum inherits the permuted strides and each
        # LayerNorm and linear layer would copy its input
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class Block(nn.Module):
    """Pre-norm transformer block on a (B, H, W, D) token grid: attention then MLP, both residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float,
        qkv_bias: bool,
        use_rel_pos: bool,
        window_size: int,
        grid_size: int,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(
            dim, num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos, window_size=window_size, grid_size=grid_size
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, D) -> (B, H, W, D)."""
        x = x + self.attn(self.norm1(x))
        # MLPBlock's layers, with its GELU fused into lin1 (see :func:`linear`)
        hidden = linear(self.norm2(x), self.mlp.lin1.weight, self.mlp.lin1.bias, gelu=True)
        return x + linear(hidden, self.mlp.lin2.weight, self.mlp.lin2.bias)


class Attention(nn.Module):
    """Multi-head self-attention with decomposed relative positions, global or in square windows.

    With ``window_size > 0`` the grid is zero-padded to a multiple of the window and attention runs
    inside each window (padding tokens included, as in the official encoder); with 0 it is global.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool,
        use_rel_pos: bool,
        window_size: int,
        grid_size: int,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            # one table entry per relative offset -(s-1)..(s-1) along each axis of the attended area
            span = window_size if window_size > 0 else grid_size
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * span - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * span - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, D) normalised tokens -> (B, H, W, D) attention output (after ``proj``)."""
        B, H, W, D = x.shape
        # a global block attends within one window that covers the whole grid
        window = (self.window_size, self.window_size) if self.window_size > 0 else (H, W)
        qkv = linear(x, self.qkv.weight, self.qkv.bias)
        if H % window[0] or W % window[1]:
            # The official encoder zero-pads the *normalised tokens* before qkv, so each padding
            # token's q, k and v is exactly qkv's bias: padding qkv's output with its bias is the same.
            fill = self.qkv.bias if self.qkv.bias is not None else qkv.new_zeros(3 * D)
            qkv = pad_grid(qkv, window, fill)
        q, k, v = split_windows(qkv, window, 3, self.num_heads).unbind(0)
        rel_h, rel_w = (self.rel_pos_h, self.rel_pos_w) if self.use_rel_pos else (None, None)
        out = rel_pos_attention(q, k, v, window, self.scale, rel_h, rel_w)
        out = merge_windows(out, window, (B, qkv.shape[1], qkv.shape[2]))
        # proj acts on each token alone, so it can run after the padding tokens are cropped
        return linear(out[:, :H, :W], self.proj.weight, self.proj.bias)


def pad_grid(x: torch.Tensor, window: tuple[int, int], fill: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, Hp, Wp, C), padded bottom/right with ``fill`` (C,) up to multiples of ``window``."""
    B, H, W, C = x.shape
    Hp, Wp = -(-H // window[0]) * window[0], -(-W // window[1]) * window[1]
    padded = fill.to(x.dtype).expand(B, Hp, Wp, C).clone()
    padded[:, :H, :W] = x
    return padded


def split_windows(x: torch.Tensor, window: tuple[int, int], parts: int, heads: int) -> torch.Tensor:
    """(B, Hp, Wp, parts * heads * c) -> (parts, B * windows * heads, wh * ww, c), contiguous.

    Splitting into q/k/v, windows and heads is one copy. Windows are in row-major order, as are the
    tokens within a window.
    """
    B, Hp, Wp, C = x.shape
    wh, ww = window
    c = C // (parts * heads)
    x = x.view(B, Hp // wh, wh, Wp // ww, ww, parts, heads, c)
    return x.permute(5, 0, 1, 3, 6, 2, 4, 7).contiguous().view(parts, -1, wh * ww, c)


def merge_windows(x: torch.Tensor, window: tuple[int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`split_windows` for one part: (B * windows * heads, wh * ww, c) -> (B, Hp, Wp, heads * c)."""
    B, Hp, Wp = grid
    wh, ww = window
    x = x.view(B, Hp // wh, Wp // ww, -1, wh, ww, x.shape[-1])
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, -1)


def relative_embeddings(table: torch.Tensor, size: int) -> torch.Tensor:
    """(2*size-1, d) table -> (size, size, d): entry [i, j] is the embedding of offset i - j."""
    if table.shape[0] != 2 * size - 1:
        raise InputError(f"relative position table: {table.shape[0]} rows do not fit an extent of {size}")
    offsets = torch.arange(size, device=table.device)
    return table[offsets[:, None] - offsets[None, :] + (size - 1)]


def rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    area: tuple[int, int],
    scale: float,
    rel_pos_h: torch.Tensor | None = None,
    rel_pos_w: torch.Tensor | None = None,
    mask_bytes: int | None = None,
) -> torch.Tensor:
    """softmax(scale * q k^T + bias) v for q, k, v (G, h*w, d) over an (h, w) token area -> (G, h*w, d).

    ``bias[(i, j), (m, n)] = q[i, j] . Rh[i - m] + q[i, j] . Rw[j - n]`` (decomposed relative
    positions, MViTv2) is added when both tables are given. The attention itself is PyTorch's fused
    ``scaled_dot_product_attention`` with the bias as an additive mask, so softmax(scores) is never
    stored; the mask is built for blocks of query rows (and of the G axis) of at most
    ``mask_bytes`` (default ``_MASK_BLOCK_BYTES``) at a time.
    """
    G, N, d = q.shape
    h, w = area
    if rel_pos_h is None or rel_pos_w is None:
        return F.scaled_dot_product_attention(q[None], k[None], v[None], scale=scale)[0]
    q_grid = q.view(G, h, w, d)
    # (G, h, w, h) and (G, h, w, w): each query's bias towards every key row and every key column
    bias_h = torch.einsum("gijc,imc->gijm", q_grid, relative_embeddings(rel_pos_h, h))
    bias_w = torch.einsum("gijc,jnc->gijn", q_grid, relative_embeddings(rel_pos_w, w))
    mask_bytes = _MASK_BLOCK_BYTES if mask_bytes is None else mask_bytes
    row_bytes = w * N * q.element_size()
    rows = max(1, min(h, mask_bytes // row_bytes))
    groups = max(1, min(G, mask_bytes // (rows * row_bytes)))  # > 1 only when rows == h
    outputs = []
    for g0 in range(0, G, groups):
        g = slice(g0, g0 + groups)
        for r0 in range(0, h, rows):
            r = slice(r0, r0 + rows)
            mask = _rel_pos_mask(bias_h[g, r], bias_w[g, r])
            queries, keys, values = q[None, g, r0 * w : (r0 + rows) * w], k[None, g], v[None, g]
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask[None], scale=scale)
            outputs.append(attended[0])
    # blocks in (group, band) order: (groups, N, d) blocks when rows == h, else (1, rows * w, d)
    return torch.cat(outputs, 0 if rows == h else 1).view(G, N, d)


def _rel_pos_mask(bias_h: torch.Tensor, bias_w: torch.Tensor) -> torch.Tensor:
    """(g, r, w, h) row and (g, r, w, w) column biases -> (g, r * w, h * w) additive attention mask.

    Written contiguously in one pass: a plain broadcast sum of the (strided) einsum outputs comes
    out in a permuted layout, and reshaping it costs a second pass over the largest tensor here.
    """
    g, r, w, h = bias_h.shape
    if torch.is_grad_enabled() and (bias_h.requires_grad or bias_w.requires_grad):
        return (bias_h[..., None] + bias_w[..., None, :]).reshape(g, r * w, h * w)
    mask = bias_h.new_empty(g, r, w, h, w)
    torch.add(bias_h[..., None], bias_w[..., None, :], out=mask)
    return mask.view(g, r * w, h * w)
