"""Small building blocks shared by SAM's image encoders and mask decoder."""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map, with a per-channel affine."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them: (..., D) -> (..., D)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def no_autograd(*tensors: torch.Tensor | None) -> bool:
    """Whether no autograd graph is being recorded through ``tensors`` (fast paths are forward-only)."""
    return not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors)


def onednn_usable(*tensors: torch.Tensor | None) -> bool:
    """Whether to call oneDNN kernels directly: float32 CPU tensors, oneDNN built and enabled, no autograd.

    On this project's CPUs oneDNN's float32 matrix kernels ran about twice as fast as the MKL ones
    PyTorch picks by default; the encoders use them for inference and fall back to PyTorch otherwise.
    """
    first = tensors[0]
    return (
        first.device.type == "cpu"
        and first.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and no_autograd(*tensors)
    )
