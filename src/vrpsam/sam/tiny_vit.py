"""MobileSAM's image encoder ("vit_t"): TinyViT-5M with SAM's 256-channel neck at 1/16 resolution.

The module tree and parameter names follow MobileSAM's ``TinyViT`` so its checkpoint (keys under
``image_encoder.``) loads strictly, including the unused ImageNet classifier (``norm_head``, ``head``).
Built for inference: no drop path, no gradient checkpointing, no layer-wise learning rates. In
training mode, or when autograd records, it runs plain PyTorch ops (BatchNorm with batch statistics).

Inference on CPU is about 3x faster than the official code, with the same arithmetic up to float
rounding (outputs ~1e-5 apart at 1024²; from a float64 run, the official is ~4e-6 off, this ~9e-6):

- stages pass (B, C, H, W) maps in ``channels_last`` memory, the same memory as the (B, H, W, C)
  token grid of the transformer blocks, so switching views is free and oneDNN gets its fast layout;
- BatchNorm is folded into the preceding convolution, recomputed on every call (never stale);
- 1x1 convolutions and linear layers run through oneDNN (see :func:`_conv`), GELU runs in place;
- wide intermediates are computed in chunks (see ``_CHUNK_ELEMENTS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .common import LayerNorm2d, no_autograd, onednn_usable

# Most elements (float32: 28 MiB) an intermediate of one chunk of work may have at inference. At
# 1024² the widest intermediates would be 64 MiB; glibc serves anything over 32 MiB by mmap, so
# such a tensor is page-faulted in afresh on every call. Computing them in a few chunks of rows /
# windows / tokens keeps them on the reused heap, with the same arithmetic per output element.
# Not smaller: more chunks fit the caches better (~7% faster on an idle core) but multiply the
# parallel ops, each a thread synchronisation, which was measured 2x slower when other processes
# share the cores.
_CHUNK_ELEMENTS = 7 << 20


def _spans(count: int, elements_each: int) -> list[tuple[int, int]]:
    """Split ``count`` items of ``elements_each`` elements into as few near-equal spans as the budget allows."""
    pieces = max(1, min(count, -(-count * elements_each // _CHUNK_ELEMENTS)))
    step = -(-count // pieces)
    return [(start, min(start + step, count)) for start in range(0, count, step)]


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU written over ``x``, a fresh intermediate, instead of a newly allocated tensor."""
    return torch.ops.aten.gelu_(x)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in channels_last memory with the standard strides.

    oneDNN convolutions take a slow path (2x here) for equivalent but unusual strides, such as the
    batch stride of a single image made by permuting an (H, W, C) array.
    """
    batch, chans, height, width = x.shape
    if x.stride() == (chans * height * width, 1, width * chans, chans):
        return x
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last).copy_(x)


def _can_chunk(module: nn.Module, x: torch.Tensor) -> bool:
    """Chunked inference: eval mode (no batch statistics) and no autograd through ``module`` or ``x``."""
    return not module.training and no_autograd(x, *module.parameters())


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | tuple[int, ...] = 1,
    padding: int | tuple[int, ...] = 0,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` for (B, C, H, W) x; at CPU inference always through oneDNN, 1x1 kernels included.

    PyTorch sends 1x1 convolutions to its GEMM path (MKL), which oneDNN's kernels beat by about 2x
    on this (AVX-512 AMD) CPU. Same products and sums; only the order of float additions differs.
    """
    if not onednn_usable(x, weight, bias):
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)
    return torch.ops.aten.mkldnn_convolution(x, weight, bias, _pair(padding), _pair(stride), (1, 1), groups)


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for (..., C_in) x, computed as a 1x1 convolution by :func:`_conv` on CPU.

    (N, C) tokens are the memory of a channels_last (1, C, N, 1) map, so no data moves.
    """
    if not onednn_usable(x, layer.weight, layer.bias):
        return layer(x)
    tokens = x.reshape(-1, x.shape[-1]).contiguous()
    as_map = tokens.view(1, tokens.shape[0], 1, tokens.shape[1]).permute(0, 3, 1, 2)
    out = _conv(as_map, layer.weight[:, :, None, None], layer.bias)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], layer.out_features)


@dataclass(frozen=True)
class TinyViTConfig:
    """Architecture of a TinyViT encoder; the defaults are MobileSAM's TinyViT-5M at 1024²."""

    img_size: int = 1024
    in_chans: int = 3
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000
    out_chans: int = 256

    def __post_init__(self) -> None:
        if self.img_size <= 0 or self.img_size % 16:
            raise InputError(f"img_size: must be a positive multiple of 16, got {self.img_size}")


class ConvBN(nn.Module):
    """A bias-free convolution followed by BatchNorm, padded to keep 'same' size at stride 1.

    In eval mode the BatchNorm is an affine map per channel, so it is folded into the convolution
    weights. The fold is recomputed on every call (a few thousand multiplies) rather than cached, so
    it always reflects the current parameters, e.g. right after ``load_state_dict``.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        if self.training:
            return self.bn(self.c(x))
        weight, bias = self.folded()
        return _conv(x, weight, bias, self.c.stride, self.c.padding, self.c.groups)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval-mode (weight, bias) of a single convolution equal to conv followed by BatchNorm."""
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
        return self.c.weight * scale[:, None, None, None], self.bn.bias - self.bn.running_mean * scale


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: (B, C_in, H, W) -> (B, D, H/4, W/4)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        # A Sequential for the checkpoint's names (seq.0, seq.2); forward applies its GELU in place.
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq[2](_gelu_(self.seq[0](x)))


class _Bottleneck(nn.Module):
    """1x1 conv, depthwise 3x3 conv (strided), 1x1 conv, each BN-folded, GELU after the first two.

    At inference the output is computed in bands of rows, each from the input rows its 3x3 window
    reaches, so the wide hidden maps (4x the channels at 1/4 resolution) never exist whole.
    """

    residual: bool

    def __init__(self, dim: int, hidden: int, out_dim: int, stride: int):
        super().__init__()
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, stride, groups=hidden)
        self.conv3 = ConvBN(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C_out, H / stride, W / stride)."""
        batch, _, height, width = x.shape
        stride = self.conv2.c.stride[0]
        out_height, out_width = (height - 1) // stride + 1, (width - 1) // stride + 1
        per_row = self.conv1.c.out_channels * width * stride  # hidden elements per output row
        if batch * out_height * per_row <= _CHUNK_ELEMENTS or not _can_chunk(self, x):
            return self._rows(x, 0, out_height)
        out = torch.empty(
            (batch, self.conv3.c.out_channels, out_height, out_width),
            dtype=x.dtype,
            device=x.device,
            memory_format=torch.channels_last,
        )
        for image in range(batch):  # one image at a time keeps bands tall whatever the batch size
            for top, bottom in _spans(out_height, per_row):
                self._rows(x[image : image + 1], top, bottom, out=out[image : image + 1, :, top:bottom])
        return out

    def _rows(self, x: torch.Tensor, top: int, bottom: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Output rows [top, bottom), from the input rows they depend on; written to ``out`` if given."""
        stride = self.conv2.c.stride[0]
        kernel, pad = self.conv2.c.kernel_size[0], self.conv2.c.padding[0]
        # Start one output row early (the 3x3 kernel reaches pad = 1 <= stride rows up) so the slab
        # begins on the stride grid; that row, which sees zero padding instead of the real row
        # above, is dropped. Below the image the conv's own zero padding is the real padding.
        first = max(top - 1, 0)
        low, high = first * stride, min((bottom - 1) * stride - pad + kernel, x.shape[2])
        hidden = _gelu_(self.conv1(x[:, :, low:high]))
        hidden = _gelu_(self.conv2(hidden))[:, :, top - first : bottom - first]
        projected = self.conv3(hidden)
        if not self.residual:
            return projected if out is None else out.copy_(projected)
        if out is None:
            projected += x[:, :, top:bottom]
            return _gelu_(projected)
        return _gelu_(torch.add(projected, x[:, :, top:bottom], out=out))


class MBConv(_Bottleneck):
    """Inverted residual: GELU(x + bottleneck(x)) with a 4x wider hidden map. (B, C, H, W) -> same."""

    residual = True

    def __init__(self, dim: int, expand_ratio: float):
        super().__init__(dim, int(dim * expand_ratio), dim, stride=1)


class PatchMerging(_Bottleneck):
    """Bottleneck to ``out_dim`` channels, downsampling by ``stride``: (B, C, H, W) -> (B, C_out, H/s, W/s)."""

    residual = False

    def __init__(self, dim: int, out_dim: int, stride: int):
        super().__init__(dim, out_dim, out_dim, stride)


def relative_offset_index(window_size: int) -> torch.Tensor:
    """(N, N) index, N = window_size², of each query/key pair's |dy|, |dx| offset among the N offsets.

    Numbered as TinyViT numbers them, by first appearance scanning query then key in row-major
    order; the first query (0, 0) already meets every offset in row-major order, so the number of
    (|dy|, |dx|) is ``|dy| * window_size + |dx|``.
    """
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    return (rows[:, None] - rows[None, :]).abs() * window_size + (cols[:, None] - cols[None, :]).abs()


class Attention(nn.Module):
    """Multi-head self-attention inside one window, with a learned bias per head and relative offset.

    The LayerNorm is part of this module (as in TinyViT), so it also sees the zero padding tokens.
    The bias table is gathered on every call (at most heads x 196² numbers) instead of cached at
    ``eval()``, so it can never be stale after loading weights.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        # Not part of the checkpoint (TinyViT registers it non-persistent): rebuilt from the window size.
        self.register_buffer("attention_bias_idxs", relative_offset_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens of B windows -> (B, N, C)."""
        batch, tokens, dim = x.shape
        # Per head the projection holds [q | k | v] side by side (TinyViT's layout).
        qkv = _linear(self.qkv, self.norm(x)).view(batch, tokens, self.num_heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        attn = q @ k.transpose(-2, -1)
        # In place: the same scale-then-add as TinyViT, without two more (B, heads, N, N) tensors.
        attn.mul_(self.head_dim**-0.5).add_(self._bias(tokens))
        out = attn.softmax(dim=-1) @ v
        return _linear(self.proj, out.transpose(1, 2).reshape(batch, tokens, dim))

    def _bias(self, tokens: int) -> torch.Tensor:
        """(heads, N, N) bias of every query/key pair (index_select: 4x faster than fancy indexing)."""
        picked = self.attention_biases.index_select(1, self.attention_bias_idxs.view(-1))
        return picked.view(self.num_heads, tokens, tokens)


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear: (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(self.fc2, _gelu_(_linear(self.fc1, self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise 3x3 conv, MLP: (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int):
        super().__init__()
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) contiguous tokens -> (B, H, W, C)."""
        x = x + self._windowed_attention(x)
        # (B, H, W, C) viewed as a channels_last (B, C, H, W) map: no copies either way.
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self._plus_mlp(x)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C) view; the grid is zero-padded at the bottom/right to whole windows."""
        batch, height, width, dim = x.shape
        size = self.window_size
        pad_h, pad_w = -height % size, -width % size
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // size, (width + pad_w) // size
        windows = x.view(batch, rows, size, cols, size, dim).transpose(2, 3).reshape(-1, size * size, dim)
        out = self._attend(windows).view(batch, rows, cols, size, size, dim).transpose(2, 3)
        return out.reshape(batch, rows * size, cols * size, dim)[:, :height, :width]

    def _attend(self, windows: torch.Tensor) -> torch.Tensor:
        """(W, N, C) -> (W, N, C), at inference a few windows at a time (see ``_CHUNK_ELEMENTS``)."""
        count, tokens, dim = windows.shape
        spans = _spans(count, tokens * max(self.attn.num_heads * tokens, 3 * dim))
        if len(spans) == 1 or not _can_chunk(self, windows):
            return self.attn(windows)
        return torch.cat([self.attn(windows[start:stop]) for start, stop in spans])

    def _plus_mlp(self, x: torch.Tensor) -> torch.Tensor:
        """x + mlp(x) for (B, H, W, C) x; at inference a slice of tokens at a time."""
        tokens = x.reshape(-1, x.shape[-1])
        spans = _spans(len(tokens), self.mlp.fc1.out_features)
        if len(spans) == 1 or not _can_chunk(self, x):
            return x + self.mlp(x)
        out = torch.empty_like(tokens)
        for start, stop in spans:
            torch.add(tokens[start:stop], self.mlp(tokens[start:stop]), out=out[start:stop])
        return out.view(x.shape)


class ConvStage(nn.Module):
    """MBConv blocks then a PatchMerging: (B, C, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, dim: int, out_dim: int, depth: int, expand_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class TransformerStage(nn.Module):
    """TinyViT blocks then an optional PatchMerging: (B, C, H, W) -> (B, C_out, H', W')."""

    def __init__(self, dim: int, depth: int, block_args: dict, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, **block_args) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.permute(0, 2, 3, 1).contiguous()  # free when x is channels_last
        for block in self.blocks:
            tokens = block(tokens)
        x = tokens.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder with SAM's neck: (B, 3, S, S) -> (B, 256, S/16, S/16), S = ``img_size``.

    Loads MobileSAM's ``image_encoder.*`` weights (prefix stripped) with the same keys and shapes
    at any ``img_size``; the attention bias tables depend on the window sizes only.

    MobileSAM's change to TinyViT: the merge into the last stage keeps the resolution (stride 1), so
    the output grid is 1/16 of the input like SAM's ViT encoders.
    """

    def __init__(self, config: TinyViTConfig = TinyViTConfig()):
        super().__init__()
        self.config = config
        self.img_size = config.img_size
        dims = config.embed_dims
        last = len(dims) - 1
        self.patch_embed = PatchEmbed(config.in_chans, dims[0])
        self.layers = nn.ModuleList([ConvStage(dims[0], dims[1], config.depths[0], config.mbconv_expand_ratio)])
        for i in range(1, len(dims)):
            block_args = dict(
                num_heads=config.num_heads[i],
                window_size=config.window_sizes[i],
                mlp_ratio=config.mlp_ratio,
                local_conv_size=config.local_conv_size,
            )
            merge = PatchMerging(dims[i], dims[i + 1], stride=1 if i + 1 == last else 2) if i < last else None
            self.layers.append(TransformerStage(dims[i], config.depths[i], block_args, merge))
        # ImageNet classifier of the TinyViT backbone: never used by SAM, kept so the checkpoint fits.
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], config.num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], config.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(config.out_chans),
            nn.Conv2d(config.out_chans, config.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(config.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images -> (B, 256, S/16, S/16) image embeddings."""
        size = self.img_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.config.in_chans, size, size):
            raise InputError(
                f"image batch: expected shape (B, {self.config.in_chans}, {size}, {size}), got {tuple(x.shape)}"
            )
        x = self.patch_embed(_channels_last(x))
        for layer in self.layers:
            x = layer(x)
        return self._neck(x).contiguous()

    def _neck(self, x: torch.Tensor) -> torch.Tensor:
        """``self.neck(x)`` with its convolutions through :func:`_conv`: (B, C, h, w) -> (B, 256, h, w)."""
        reduce, norm1, mix, norm2 = self.neck
        return norm2(_conv(norm1(_conv(x, reduce.weight, None)), mix.weight, None, padding=1))


def build_tiny_vit(img_size: int = 1024) -> TinyViT:
    """MobileSAM's TinyViT-5M encoder for ``img_size``² inputs, randomly initialised, in eval mode."""
    return TinyViT(TinyViTConfig(img_size=img_size)).eval()
