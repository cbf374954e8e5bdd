"""What every frozen VRP backbone shares: five stages, fixed weights, BatchNorm forever in eval mode.

The VRP encoder calls ``layer0`` .. ``layer4`` one by one (it masks the reference's layer3 map before
layer4), so the stages are the interface, not ``forward``. ``channels`` and ``strides`` describe the
outputs of layer2, layer3 and layer4, the three maps the encoder reads.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from ...weights import load_into, read_state_dict

KeyMap = Callable[[Mapping[str, Tensor]], dict[str, Tensor]]


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` that refuses training mode, so no parent's ``.train()`` can update its statistics.

    Same parameters and buffers (same state-dict keys) as ``nn.BatchNorm2d``.
    """

    def train(self, mode: bool = True) -> "FrozenBatchNorm2d":
        return super().train(False)


class FrozenBackbone(nn.Module):
    """Base of the frozen backbones: ``layer0`` .. ``layer4`` applied in sequence.

    Subclasses build the five stages, set ``channels`` and ``strides`` (of layer2, layer3, layer4,
    strides relative to the input) and call :meth:`freeze` last. ``forward`` is a convenience; the
    VRP encoder calls the stages itself.
    """

    channels: tuple[int, int, int]
    strides: tuple[int, int, int]
    name: str | None = None  # the registry name, set by ``build_backbone``
    layer0: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module
    layer4: nn.Module

    def freeze(self) -> None:
        """Stop gradients into every parameter and switch to eval mode for good."""
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        # The backbone is a fixed feature extractor: a parent's .train() must not touch its BatchNorms.
        return super().train(False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, 3, H, W) ImageNet-normalised images -> the layer2, layer3 and layer4 maps, (B, C_i, H/s_i, W/s_i)."""
        f2 = self.layer2(self.layer1(self.layer0(x)))
        f3 = self.layer3(f2)
        return f2, f3, self.layer4(f3)


def load_checkpoint(module: nn.Module, checkpoint: str | os.PathLike, key_map: KeyMap) -> None:
    """Read ``checkpoint``, rename its keys with ``key_map`` and load it strictly into ``module``.

    A checkpoint saved before torch 0.4.1 gets its BatchNorm counters filled in (see
    :func:`fill_legacy_batch_counters`); nothing else is added, dropped or guessed here.
    """
    state = fill_legacy_batch_counters(key_map(read_state_dict(checkpoint)), module)
    load_into(module, state, source=str(checkpoint))


def fill_legacy_batch_counters(state: dict[str, Tensor], module: nn.Module) -> dict[str, Tensor]:
    """Add the ``num_batches_tracked`` counters that checkpoints saved before torch 0.4.1 lack.

    Only when the checkpoint has none of them at all (an old file, e.g. torchvision's 2017 VGG or
    PSPNet's ResNets); a checkpoint that has some but not all still fails the strict load. The counter
    only matters while BatchNorm trains, which a frozen backbone never does; it is set to 0.
    """
    if any(key.endswith(".num_batches_tracked") for key in state):
        return state
    counters = {k: torch.zeros((), dtype=torch.long) for k in module.state_dict() if k.endswith(".num_batches_tracked")}
    return {**state, **counters}


def init_random_weights(module: nn.Module) -> None:
    """torchvision's initialisation, for random weights that only stand in for a checkpoint (tests).

    Convolutions He-normal (fan-out), BatchNorm identity, linear layers N(0, 0.01), biases zero: it keeps
    activations at a sane scale through deep stacks.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
