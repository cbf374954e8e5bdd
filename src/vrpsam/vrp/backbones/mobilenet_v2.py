"""MobileNetV2 (torchvision's layout and key names): an ImageNet classifier and a frozen VRP backbone view.

The only pretrained image backbone that can be fetched freely is Google's TF-slim MobileNetV2 1.0/224
(uint8 TFLite, see :mod:`.tflite_convert`). This module builds the same network with torchvision's
module tree (``features.0`` .. ``features.18``, ``classifier.1``), so the converted weights and any
torchvision ``mobilenet_v2`` state dict load 1:1.

Two conventions of the TF weights, both kept by default:

- Input: RGB on [0, 1] mapped to [-1, 1] (``x * 2 - 1``), not ImageNet mean/std. :class:`MobileNetV2`
  takes that [-1, 1] input. The backbone view takes ImageNet-normalised images like every VRP backbone
  and converts them itself (:class:`ImageNetToSigned`, a fixed affine map in ``layer0``).
- Padding: TF "SAME" padding puts the extra pixel of a stride-2 convolution at the bottom/right,
  where torchvision pads both sides. ``tf_padding=True`` pads like TF (exact numerics of the trained
  weights); ``False`` gives torchvision's padding (for torchvision-trained weights). Weights and keys
  are the same either way.

The backbone view (:class:`MobileNetV2Backbone`) splits ``features`` into five stages:

| stage  | ``features`` | channels | stride (output_stride 8 / 16 / 32) |
|--------|--------------|----------|------------------------------------|
| layer0 | 0, 1         | 16       | 2                                  |
| layer1 | 2, 3         | 24       | 4                                  |
| layer2 | 4..6         | 32       | 8                                  |
| layer3 | 7..13        | 96       | 8 / 16 / 16                        |
| layer4 | 14..17       | 320      | 8 / 16 / 32                        |

``features.18`` (1x1 conv to 1280, only feeding the classifier) and the classifier are not part of
it. Output stride 8 (the default, like the ResNets: 64x64 maps at 512 input) follows TF-slim/DeepLab:
once the running stride reaches ``output_stride``, later stride-2 blocks run at stride 1 and every
later depthwise conv is dilated by the stride given up so far (the block that gives it up keeps the
previous dilation). At 8: features.7..13 dilation 1, 2, 2, ..; features.14 dilation 2, 15..17 dilation 4.
Inside a stage the state-dict keys keep the torchvision ``features`` index:
``layer3.7.conv.0.0.weight`` is ``features.7.conv.0.0.weight``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import InputError
from ...io.images import IMAGENET_MEAN, IMAGENET_STD
from ...weights import load_into, read_state_dict
from .base import FrozenBackbone, FrozenBatchNorm2d, init_random_weights


# torchvision / TF-slim MobileNetV2 1.0: (expansion t, channels c, repeats n, first stride s).
_INVERTED_RESIDUALS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)  # fmt: skip
_STEM_CHANNELS = 32
_LAST_CHANNELS = 1280
# ``features`` index range of each backbone stage.
_STAGES = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 18))
OUTPUT_STRIDES = (8, 16, 32)
# The spelling of "the converted ImageNet TFLite weights" for ``checkpoint=`` arguments.
IMAGENET = "imagenet"


@dataclass(frozen=True)
class MobileNetV2Config:
    """``output_stride``: 8, 16 or 32 (plain classifier). ``tf_padding``: TF "SAME" padding at stride 2."""

    num_classes: int = 1000
    output_stride: int = 32
    tf_padding: bool = True
    dropout: float = 0.2


class TfSameConv2d(nn.Conv2d):
    """A ``Conv2d`` with TensorFlow's "SAME" padding: the odd padding pixel goes to the bottom/right."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        pads: list[int] = []
        geometry = zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation)
        for size, kernel, stride, dilation in reversed(list(geometry)):  # F.pad wants the last axis first
            span = (kernel - 1) * dilation + 1
            total = max((-(-size // stride) - 1) * stride + span - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6, keys ``0.weight`` and ``1.*`` (torchvision's Conv2dNormActivation)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1,
        tf_padding: bool = False,
    ) -> None:  # fmt: skip
        common = dict(dilation=dilation, groups=groups, bias=False)
        if tf_padding and stride > 1:
            conv: nn.Conv2d = TfSameConv2d(in_ch, out_ch, kernel, stride, padding=0, **common)
        else:
            conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2 * dilation, **common)
        super().__init__(conv, FrozenBatchNorm2d(out_ch), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """[1x1 expand ->] 3x3 depthwise (stride, dilation) -> 1x1 linear projection, plus identity when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int, dilation: int, tf_padding: bool) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers: list[nn.Module] = [ConvBNReLU6(in_ch, hidden, 1)] if expansion != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, dilation, groups=hidden, tf_padding=tf_padding),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            FrozenBatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride)."""
        y = self.conv(x)
        return x + y if self.use_res_connect else y


class MobileNetV2(nn.Module):
    """The MobileNetV2 1.0 ImageNet classifier, for inference only (its BatchNorms never train).

    ``feature_strides[i]`` is the stride of ``features[i]``'s output relative to the input.
    """

    def __init__(self, config: MobileNetV2Config = MobileNetV2Config()) -> None:
        super().__init__()
        if config.output_stride not in OUTPUT_STRIDES:
            raise InputError(f"output_stride: expected one of {OUTPUT_STRIDES}, got {config.output_stride!r}")
        features: list[nn.Module] = [ConvBNReLU6(3, _STEM_CHANNELS, 3, stride=2, tf_padding=config.tf_padding)]
        strides = [2]
        in_ch, running, dilation = _STEM_CHANNELS, 2, 1
        for expansion, out_ch, repeats, first_stride in _INVERTED_RESIDUALS:
            for index in range(repeats):
                stride = first_stride if index == 0 else 1
                block_dilation = dilation
                if running == config.output_stride:
                    # Output stride reached: keep the resolution and dilate everything after instead.
                    dilation *= stride
                    stride = 1
                running *= stride
                features.append(InvertedResidual(in_ch, out_ch, stride, expansion, block_dilation, config.tf_padding))
                strides.append(running)
                in_ch = out_ch
        features.append(ConvBNReLU6(in_ch, _LAST_CHANNELS, 1))
        strides.append(running)
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(_LAST_CHANNELS, config.num_classes))
        self.feature_strides = tuple(strides)
        init_random_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) RGB scaled to [-1, 1] -> (B, num_classes) logits."""
        pooled = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(pooled)


class ImageNetToSigned(nn.Module):
    """Fixed input adapter: ImageNet-normalised RGB -> the [-1, 1] RGB the TF weights were trained on.

    ``y = 2 * (x * std + mean) - 1``, per channel. No state-dict entries.
    """

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", 2 * std, persistent=False)
        self.register_buffer("shift", 2 * mean - 1, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) ImageNet-normalised -> (B, 3, H, W) on [-1, 1]."""
        return torch.addcmul(self.shift, x, self.scale)


class MobileNetV2Backbone(FrozenBackbone):
    """Frozen five-stage view over a :class:`MobileNetV2`'s ``features`` 0..17 (shares its modules).

    Takes ImageNet-normalised images (``layer0`` starts with :class:`ImageNetToSigned`).
    ``channels`` = (32, 96, 320).
    """

    def __init__(self, net: MobileNetV2) -> None:
        super().__init__()
        for stage, (start, end) in enumerate(_STAGES):
            modules: OrderedDict[str, nn.Module] = OrderedDict((str(i), net.features[i]) for i in range(start, end))
            if stage == 0:
                modules = OrderedDict([("input", ImageNetToSigned()), *modules.items()])
            setattr(self, f"layer{stage}", nn.Sequential(modules))
        self.channels = (32, 96, 320)
        self.strides = tuple(net.feature_strides[end - 1] for _, end in _STAGES[2:])
        self.freeze()


def mobilenet_v2_state_dict(checkpoint: str | os.PathLike) -> dict[str, Tensor]:
    """Weights for :class:`MobileNetV2` (torchvision key names) from ``checkpoint``.

    ``"imagenet"``: the registry's ImageNet TFLite file, converted on first use and cached;
    a ``.tflite`` path: that file, converted (and cached); any other path: a ``.pt``/``.pth``/
    ``.safetensors`` state dict with torchvision ``mobilenet_v2`` keys, read as is.
    """
    from .tflite_convert import convert_tflite_cached, load_mobilenet_v2_imagenet

    if isinstance(checkpoint, str) and checkpoint == IMAGENET:
        return load_mobilenet_v2_imagenet()
    if os.fspath(checkpoint).endswith(".tflite"):
        return convert_tflite_cached(checkpoint)
    return read_state_dict(checkpoint)


def build_mobilenet_v2(
    checkpoint: str | os.PathLike | None = None, *, output_stride: int = 32, tf_padding: bool = True
) -> MobileNetV2:
    """The :class:`MobileNetV2` classifier in eval mode; random weights when ``checkpoint`` is None,
    else a strict load of :func:`mobilenet_v2_state_dict` (``"imagenet"``, a ``.tflite``, or a state dict)."""
    net = MobileNetV2(MobileNetV2Config(output_stride=output_stride, tf_padding=tf_padding))
    if checkpoint is not None:
        load_into(net, mobilenet_v2_state_dict(checkpoint), source=os.fspath(checkpoint))
    return net.eval()


def build_mobilenet_v2_backbone(
    checkpoint: str | os.PathLike | None = None, *, output_stride: int = 8, tf_padding: bool = True
) -> MobileNetV2Backbone:
    """The frozen :class:`MobileNetV2Backbone` (output stride 8 by default); ``checkpoint`` as for
    :func:`build_mobilenet_v2` (torchvision keys, classifier included)."""
    return MobileNetV2Backbone(build_mobilenet_v2(checkpoint, output_stride=output_stride, tf_padding=tf_padding))
