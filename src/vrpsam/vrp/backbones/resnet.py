"""The deep-stem, dilated ResNets of VRP-SAM ("resnet50_v2" / "resnet101_v2", PSPNet/PFENet style).

Architecture (official ``model/base/resnet.py`` + ``VRP_encoder.py``):

- stem: conv3x3(3->64, stride 2)-BN-ReLU, conv3x3(64->64)-BN-ReLU, conv3x3(64->128)-BN-ReLU,
  maxpool(3, 2, 1), packed as ``layer0`` = Sequential of those ten modules (indices 0..9, so the
  convolutions sit at 0, 3, 6 and the BatchNorms at 1, 4, 7, the keys of VRP-SAM checkpoints);
- ``layer1`` .. ``layer4``: torchvision Bottlenecks (stride on the 3x3 conv2), 128 channels into layer1;
- layer3 and layer4 trade their stride for dilation, with torchvision's first-block rule: the first
  block of a dilated stage keeps the previous dilation. layer3.0.conv2 has dilation 1,
  layer3.{1..}.conv2 dilation 2, layer4.0.conv2 dilation 2, layer4.{1..}.conv2 dilation 4, padding
  equal to dilation. Output stride 8: a 512x512 input gives 64x64 maps from layer2 on.

Checkpoints use the "resnet50_v2.pth" key layout (``conv1``, ``bn1`` .. ``bn3``, ``layer1..4``, ``fc``);
:func:`map_resnet_v2_keys` renames the stem into ``layer0`` and drops ``fc``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from torch import Tensor, nn

from .base import FrozenBackbone, FrozenBatchNorm2d, init_random_weights, load_checkpoint

_EXPANSION = 4
_STEM_CHANNELS = 128
# resnet50_v2.pth stem module -> its index in our layer0 Sequential.
_STEM_KEYS = {
    "conv1": "layer0.0", "bn1": "layer0.1", "conv2": "layer0.3", "bn2": "layer0.4", "conv3": "layer0.6", "bn3": "layer0.7",
}  # fmt: skip


@dataclass(frozen=True)
class ResNetConfig:
    """Blocks per stage and which of layer2, layer3, layer4 replace their stride 2 by dilation."""

    blocks: tuple[int, int, int, int]
    dilate: tuple[bool, bool, bool] = (False, True, True)


RESNET50_V2 = ResNetConfig(blocks=(3, 4, 6, 3))
RESNET101_V2 = ResNetConfig(blocks=(3, 4, 23, 3))


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5): 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4), plus shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out = planes * _EXPANSION
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out)
        self.bn3 = FrozenBatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        # Registered only when the shape changes, so the checkpoint keys match (`downsample.0`, `.1`).
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(_conv1x1(inplanes, out, stride), FrozenBatchNorm2d(out))
        else:
            self.downsample = None

    def forward(self, x: Tensor) -> Tensor:
        """(B, inplanes, H, W) -> (B, 4*planes, H/stride, W/stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


def _deep_stem() -> nn.Sequential:
    return nn.Sequential(
        _conv3x3(3, 64, stride=2), FrozenBatchNorm2d(64), nn.ReLU(inplace=True),
        _conv3x3(64, 64), FrozenBatchNorm2d(64), nn.ReLU(inplace=True),
        _conv3x3(64, _STEM_CHANNELS), FrozenBatchNorm2d(_STEM_CHANNELS), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )  # fmt: skip


def _stage(
    inplanes: int, planes: int, blocks: int, stride: int, dilation: int, dilate: bool
) -> tuple[nn.Sequential, int]:
    """One ResNet stage and the dilation its successors inherit.

    A dilated stage keeps ``dilation`` (the previous one) in its first block and multiplies it by the
    stride it gives up for the remaining blocks (torchvision's rule, kept by VRP-SAM).
    """
    inner = dilation * stride if dilate else dilation
    first = Bottleneck(inplanes, planes, stride=1 if dilate else stride, dilation=dilation)
    rest = [Bottleneck(planes * _EXPANSION, planes, dilation=inner) for _ in range(blocks - 1)]
    return nn.Sequential(first, *rest), inner


class DeepStemResNet(FrozenBackbone):
    """Frozen deep-stem dilated ResNet; ``channels`` = (512, 1024, 2048), strides (8, 8, 8) by default."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.layer0 = _deep_stem()
        widths = (64, 128, 256, 512)
        strides = (1, 2, 2, 2)
        dilates = (False, *config.dilate)
        inplanes, dilation, total_stride = _STEM_CHANNELS, 1, 4
        out_strides = []
        for index, (planes, blocks, stride, dilate) in enumerate(zip(widths, config.blocks, strides, dilates), start=1):
            stage, dilation = _stage(inplanes, planes, blocks, stride, dilation, dilate)
            setattr(self, f"layer{index}", stage)
            inplanes = planes * _EXPANSION
            total_stride *= 1 if dilate else stride
            out_strides.append(total_stride)
        self.channels = (widths[1] * _EXPANSION, widths[2] * _EXPANSION, widths[3] * _EXPANSION)
        self.strides = (out_strides[1], out_strides[2], out_strides[3])
        init_random_weights(self)
        self.freeze()


def map_resnet_v2_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a "resnet50_v2.pth"-layout state dict to :class:`DeepStemResNet` keys.

    ``conv1``/``bn1``/``conv2``/``bn2``/``conv3``/``bn3`` -> ``layer0.{0,1,3,4,6,7}``; ``layer1..4`` keep
    their names. ``fc.*`` (the ImageNet classifier, unused by VRP-SAM) is dropped, and only ``fc.*``:
    every other key is passed through so a strict load reports it. Keys already in our layout
    (``layer0.*``) pass through unchanged.
    """
    renamed = {}
    for key, value in state.items():
        head, dot, rest = key.partition(".")
        if head == "fc":
            continue
        renamed[_STEM_KEYS.get(head, head) + dot + rest] = value
    return renamed


def build_resnet_v2(config: ResNetConfig, checkpoint: str | os.PathLike | None = None) -> DeepStemResNet:
    """A frozen :class:`DeepStemResNet`; random weights when ``checkpoint`` is None, else a strict load."""
    model = DeepStemResNet(config)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_resnet_v2_keys)
    return model
