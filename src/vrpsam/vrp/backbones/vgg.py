"""VGG-16 with BatchNorm, the alternative VRP-SAM backbone (official ``model/base/vgg.py`` + ``get_vgg16_layer``).

torchvision's ``vgg16_bn.features`` (43 modules before the last max-pool; every conv is conv3x3 + BN +
ReLU), with the max-pools in ``ceil_mode=True`` as in the official code, split into five stages:

| stage  | ``features`` indices | output at 512x512 input |
|--------|----------------------|-------------------------|
| layer0 | 0..6  (2 convs, pool) | 64 @ 256x256  |
| layer1 | 7..13 (2 convs, pool) | 128 @ 128x128 |
| layer2 | 14..23 (3 convs, pool)| 256 @ 64x64   |
| layer3 | 24..33 (3 convs, pool)| 512 @ 32x32   |
| layer4 | 34..42 (3 convs)      | 512 @ 32x32   |

``features[43]`` (the fifth pool) and the classifier are not used. layer2 comes out at stride 8 but
layer3 and layer4 at stride 16: the official encoder resizes layer2 to layer3's size before
concatenating (``strides`` says so).

Checkpoints use torchvision's key names (``features.N.*``, ``classifier.*``);
:func:`map_vgg16_bn_keys` moves ``features.N`` into the stage holding it and drops ``classifier.*``.
"""

from __future__ import annotations

import os
from typing import Mapping

from torch import Tensor, nn

from .base import FrozenBackbone, FrozenBatchNorm2d, init_random_weights, load_checkpoint

# Configuration "D": conv widths, "M" = 2x2 max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# First ``features`` index of each stage, and the end of the last one.
_SPLITS = (0, 7, 14, 24, 34, 43)


def _features() -> list[nn.Module]:
    modules: list[nn.Module] = []
    in_ch = 3
    for item in _VGG16:
        if item == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            modules += [nn.Conv2d(in_ch, item, 3, padding=1), FrozenBatchNorm2d(item), nn.ReLU(inplace=True)]
            in_ch = item
    return modules


class Vgg16BN(FrozenBackbone):
    """Frozen VGG-16-BN feature stages; ``channels`` = (256, 512, 512), ``strides`` = (8, 16, 16)."""

    def __init__(self) -> None:
        super().__init__()
        features = _features()
        for index, (start, end) in enumerate(zip(_SPLITS[:-1], _SPLITS[1:])):
            setattr(self, f"layer{index}", nn.Sequential(*features[start:end]))
        self.channels = (256, 512, 512)
        self.strides = (8, 16, 16)
        init_random_weights(self)
        self.freeze()


def _stage_of(index: int) -> tuple[int, int]:
    """``features`` index -> (stage, index inside that stage); -1 stage when past the last split."""
    for stage, (start, end) in enumerate(zip(_SPLITS[:-1], _SPLITS[1:])):
        if start <= index < end:
            return stage, index - start
    return -1, index


def map_vgg16_bn_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision ``vgg16_bn`` keys (``features.N.*``) to :class:`Vgg16BN` keys (``layerK.M.*``).

    ``classifier.*`` (the ImageNet head, unused by VRP-SAM) is dropped, and only that: any other key,
    including a ``features.N`` outside the five stages, is kept as is so a strict load reports it.
    Keys already in our layout (``layerK.*``) pass through unchanged.
    """
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "classifier":
            continue
        if parts[0] == "features" and len(parts) > 2 and parts[1].isdigit():
            stage, inner = _stage_of(int(parts[1]))
            if stage >= 0:
                key = ".".join([f"layer{stage}", str(inner), *parts[2:]])
        renamed[key] = value
    return renamed


def build_vgg16_bn(checkpoint: str | os.PathLike | None = None) -> Vgg16BN:
    """A frozen :class:`Vgg16BN`; random weights when ``checkpoint`` is None, else a strict load."""
    model = Vgg16BN()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_vgg16_bn_keys)
    return model
