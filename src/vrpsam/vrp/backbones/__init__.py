"""Frozen image backbones of the VRP encoder, built by name.

Every backbone is a :class:`FrozenBackbone`: submodules ``layer0`` .. ``layer4`` applied in sequence
to ImageNet-normalised (B, 3, H, W) images, ``channels`` = output channels of (layer2, layer3, layer4),
``strides`` = their strides, ``name`` = the name it was built by; all parameters frozen and every
BatchNorm in eval mode whatever the parent module does.

| name           | channels          | strides    | checkpoint key layout                                  |
|----------------|-------------------|------------|--------------------------------------------------------|
| resnet50_v2    | (512, 1024, 2048) | (8, 8, 8)  | PSPNet/PFENet ``resnet50_v2.pth`` (``fc`` dropped)     |
| resnet101_v2   | (512, 1024, 2048) | (8, 8, 8)  | ``resnet101_v2.pth``, same layout                      |
| vgg16_bn       | (256, 512, 512)   | (8, 16, 16)| torchvision ``vgg16_bn`` (``classifier`` dropped)      |
| mobilenet_v2   | (32, 96, 320)     | (8, 8, 8)  | torchvision ``mobilenet_v2``; ``"imagenet"``; ``.tflite`` |

Checkpoints in our own layout (``layer0.*`` ..) load too.
"""

from __future__ import annotations

import os
from typing import Callable

from ...errors import CheckpointError, InputError
from .base import FrozenBackbone, FrozenBatchNorm2d
from .mobilenet_v2 import IMAGENET, MobileNetV2, MobileNetV2Backbone, build_mobilenet_v2, build_mobilenet_v2_backbone
from .resnet import RESNET50_V2, RESNET101_V2, DeepStemResNet, build_resnet_v2, map_resnet_v2_keys
from .vgg import Vgg16BN, build_vgg16_bn, map_vgg16_bn_keys

Builder = Callable[[str | os.PathLike | None], FrozenBackbone]

BACKBONES: dict[str, Builder] = {
    "resnet50_v2": lambda checkpoint: build_resnet_v2(RESNET50_V2, checkpoint),
    "resnet101_v2": lambda checkpoint: build_resnet_v2(RESNET101_V2, checkpoint),
    "vgg16_bn": build_vgg16_bn,
    "mobilenet_v2": build_mobilenet_v2_backbone,
}


def build_backbone(name: str, checkpoint: str | os.PathLike | None = None) -> FrozenBackbone:
    """The frozen backbone called ``name`` (see :data:`BACKBONES`).

    ``checkpoint``: None for random weights (tests), or a state-dict file loaded strictly after the
    backbone's key mapping. ``"imagenet"`` is the ImageNet weights that can be fetched freely, which only
    ``mobilenet_v2`` has (the converted TFLite file); the others need their file's path.
    """
    if name not in BACKBONES:
        raise InputError(f"backbone: unknown name {name!r} (known: {', '.join(BACKBONES)})")
    if isinstance(checkpoint, str) and checkpoint == IMAGENET and name != "mobilenet_v2":
        raise CheckpointError(
            f"{name}: no downloadable ImageNet weights; pass the path of its checkpoint file (e.g. {name}.pth)"
        )
    backbone = BACKBONES[name](checkpoint)
    backbone.name = name
    return backbone


__all__ = [
    "BACKBONES",
    "IMAGENET",
    "DeepStemResNet",
    "FrozenBackbone",
    "FrozenBatchNorm2d",
    "MobileNetV2",
    "MobileNetV2Backbone",
    "Vgg16BN",
    "build_backbone",
    "build_mobilenet_v2",
    "build_mobilenet_v2_backbone",
    "build_resnet_v2",
    "build_vgg16_bn",
    "map_resnet_v2_keys",
    "map_vgg16_bn_keys",
]
