"""Frozen VRP backbones: structure, key layouts, strict loading, frozen BatchNorm, output strides.

Structure tests run at small inputs (64x64) on one core; the strides they check give the 512x512
sizes (64x64 for the ResNets and MobileNetV2 at output stride 8, 64/32 for VGG).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vrpsam.errors import CheckpointError, InputError
from vrpsam.vrp.backbones import (
    BACKBONES,
    FrozenBackbone,
    MobileNetV2,
    build_backbone,
    build_mobilenet_v2,
    map_resnet_v2_keys,
    map_vgg16_bn_keys,
)
from vrpsam.vrp.backbones.mobilenet_v2 import IMAGENET_MEAN, IMAGENET_STD, MobileNetV2Config, TfSameConv2d

# resnet50_v2.pth stem names <- our layer0 indices (the inverse of the documented mapping).
PTH_STEM = {
    "layer0.0": "conv1", "layer0.1": "bn1", "layer0.3": "conv2", "layer0.4": "bn2", "layer0.6": "conv3", "layer0.7": "bn3",
}  # fmt: skip


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return build_backbone("resnet50_v2")


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return build_backbone("vgg16_bn")


def randomise_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine terms, so a wrong or missing BN shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 1 + 0.1 * torch.randn(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)


def stage_shapes(backbone: nn.Module, size: int) -> list[tuple[int, ...]]:
    x = torch.randn(1, 3, size, size)
    shapes = []
    with torch.no_grad():
        for i in range(5):
            x = getattr(backbone, f"layer{i}")(x)
            shapes.append(tuple(x.shape[1:]))
    return shapes


def test_the_table_has_the_four_backbones():
    assert list(BACKBONES) == ["resnet50_v2", "resnet101_v2", "vgg16_bn", "mobilenet_v2"]
    with pytest.raises(InputError, match="unknown name 'resnet50'"):
        build_backbone("resnet50")


def test_imagenet_spelling_is_only_for_mobilenet():
    with pytest.raises(CheckpointError, match="resnet50_v2: no downloadable ImageNet weights"):
        build_backbone("resnet50_v2", "imagenet")


# ----------------------------------------------------------------------------- ResNet


def test_resnet50_counts_match_the_official_log(resnet50):
    # The official log's "Backbone # param.: 23685367" sums state-dict numel over layer0..4 (BN
    # running stats and batch counters included, no fc); its trainable parameters are 23,631,808.
    assert sum(v.numel() for v in resnet50.state_dict().values()) == 23_685_367
    assert sum(p.numel() for p in resnet50.parameters()) == 23_631_808
    assert resnet50.name == "resnet50_v2" and isinstance(resnet50, FrozenBackbone)


def test_resnet50_keys_and_shapes(resnet50):
    state = resnet50.state_dict()
    layer0 = {k.split(".")[1] for k in state if k.startswith("layer0.")}
    assert layer0 == {"0", "1", "3", "4", "6", "7"}
    assert tuple(state["layer0.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(state["layer0.3.weight"].shape) == (64, 64, 3, 3)
    assert tuple(state["layer0.6.weight"].shape) == (128, 64, 3, 3)
    assert tuple(state["layer1.0.conv1.weight"].shape) == (64, 128, 1, 1)
    assert tuple(state["layer1.0.downsample.0.weight"].shape) == (256, 128, 1, 1)
    assert tuple(state["layer4.0.downsample.0.weight"].shape) == (2048, 1024, 1, 1)
    assert [len(getattr(resnet50, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert not any(k.startswith(("fc.", "conv1", "bn1")) for k in state)
    assert isinstance(resnet50.layer0[9], nn.MaxPool2d)


def test_resnet50_dilation_follows_torchvision_first_block_rule(resnet50):
    def dilation(stage: str) -> list[int]:
        return [block.conv2.dilation[0] for block in getattr(resnet50, stage)]

    assert dilation("layer2") == [1, 1, 1, 1]
    assert dilation("layer3") == [1, 2, 2, 2, 2, 2]
    assert dilation("layer4") == [2, 4, 4]
    for stage in ("layer3", "layer4"):
        for block in getattr(resnet50, stage):
            assert block.conv2.stride == (1, 1) and block.conv2.padding == block.conv2.dilation
    assert resnet50.layer2[0].conv2.stride == (2, 2)


def test_resnet50_output_stride_8(resnet50):
    shapes = stage_shapes(resnet50, 64)
    assert shapes == [(128, 16, 16), (256, 16, 16), (512, 8, 8), (1024, 8, 8), (2048, 8, 8)]
    assert resnet50.channels == (512, 1024, 2048) and resnet50.strides == (8, 8, 8)  # 64x64 at 512


def test_resnet101_blocks():
    model = build_backbone("resnet101_v2")
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 23, 3]
    assert [b.conv2.dilation[0] for b in model.layer3] == [1] + [2] * 22
    assert model.channels == (512, 1024, 2048)


def to_pth_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        prefix = ".".join(key.split(".")[:2])
        out[PTH_STEM[prefix] + key[len(prefix):] if prefix in PTH_STEM else key] = value
    out["fc.weight"] = torch.randn(1000, 2048) * 0.01
    out["fc.bias"] = torch.zeros(1000)
    return out


def test_resnet_loads_the_pth_layout_strictly(resnet50, tmp_path):
    randomise_batchnorm(resnet50)
    pth = to_pth_layout(resnet50.state_dict())
    assert "conv1.weight" in pth and "bn3.running_var" in pth
    path = tmp_path / "resnet50_v2.pth"
    torch.save(pth, path)
    loaded = build_backbone("resnet50_v2", path)
    for key, value in resnet50.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x)[2], resnet50(x)[2], rtol=0, atol=0)

    # Only fc.* is dropped: any other stray key is reported, as is a missing one.
    torch.save({**pth, "head.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys: head\.weight"):
        build_backbone("resnet50_v2", path)
    torch.save({k: v for k, v in pth.items() if k != "layer2.1.bn2.bias"}, path)
    with pytest.raises(CheckpointError, match=r"missing keys: layer2\.1\.bn2\.bias"):
        build_backbone("resnet50_v2", path)


def test_resnet_loads_a_pre_0_4_1_checkpoint_without_batch_counters(resnet50, tmp_path):
    pth = {k: v for k, v in to_pth_layout(resnet50.state_dict()).items() if not k.endswith("num_batches_tracked")}
    torch.save(pth, tmp_path / "old.pth")
    loaded = build_backbone("resnet50_v2", tmp_path / "old.pth")
    assert torch.equal(loaded.layer4[2].bn3.running_var, resnet50.layer4[2].bn3.running_var)


def test_resnet_key_map_renames_the_stem_and_drops_only_fc():
    value = torch.zeros(1)
    names = ["conv1.weight", "bn3.running_mean", "layer1.0.conv1.weight", "fc.bias", "extra"]
    state = dict.fromkeys(names, value)
    assert set(map_resnet_v2_keys(state)) == {"layer0.0.weight", "layer0.7.running_mean", "layer1.0.conv1.weight", "extra"}


# ----------------------------------------------------------------------------- frozen behaviour


@pytest.mark.parametrize("name", ["resnet50_v2", "vgg16_bn", "mobilenet_v2"])
def test_backbone_stays_frozen_under_a_training_parent(name, resnet50, vgg):
    backbone = {"resnet50_v2": resnet50, "vgg16_bn": vgg}.get(name) or build_backbone(name)
    parent = nn.Sequential(backbone, nn.Identity())
    parent.train()
    assert not any(m.training for m in backbone.modules())
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()  # even a direct call cannot switch a backbone BatchNorm to training
            assert not m.training
    assert not any(p.requires_grad for p in backbone.parameters())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    out = backbone(torch.randn(2, 3, 32, 32))
    assert not any(o.requires_grad for o in out)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    parent.train(False)


# ----------------------------------------------------------------------------- VGG


def test_vgg_split_matches_the_official_indices(vgg):
    assert [len(getattr(vgg, f"layer{i}")) for i in range(5)] == [7, 7, 10, 10, 9]
    for i in range(4):
        assert isinstance(getattr(vgg, f"layer{i}")[-1], nn.MaxPool2d)
    assert isinstance(vgg.layer4[-1], nn.ReLU)
    pools = [m for m in vgg.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4 and all(p.ceil_mode for p in pools)
    assert vgg.channels == (256, 512, 512) and vgg.strides == (8, 16, 16)


def test_vgg_shapes_use_ceil_mode(vgg):
    # 100 -> 50 -> 25 -> 13 -> 7 (ceil); at 512: layer2 64x64, layer3/4 32x32.
    assert stage_shapes(vgg, 100) == [(64, 50, 50), (128, 25, 25), (256, 13, 13), (512, 7, 7), (512, 7, 7)]


def test_vgg_key_map_and_strict_load(vgg, tmp_path):
    randomise_batchnorm(vgg, seed=1)
    to_features = {}
    offsets = (0, 7, 14, 24, 34)
    for key, value in vgg.state_dict().items():
        stage, index, rest = key.split(".", 2)
        to_features[f"features.{offsets[int(stage[-1])] + int(index)}.{rest}"] = value
    assert "features.41.running_var" in to_features and "features.0.weight" in to_features
    torch.save({**to_features, "classifier.0.weight": torch.zeros(2, 2)}, tmp_path / "vgg16_bn.pth")
    loaded = build_backbone("vgg16_bn", tmp_path / "vgg16_bn.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vgg.state_dict().items())
    assert set(map_vgg16_bn_keys({"features.24.weight": torch.zeros(1)})) == {"layer3.0.weight"}
    assert set(map_vgg16_bn_keys({"features.43.x": torch.zeros(1)})) == {"features.43.x"}  # left for the strict load


# ----------------------------------------------------------------------------- MobileNetV2


def test_mobilenet_backbone_split_and_output_stride_8():
    backbone = build_backbone("mobilenet_v2")
    assert backbone.channels == (32, 96, 320) and backbone.strides == (8, 8, 8)
    assert stage_shapes(backbone, 64) == [(16, 32, 32), (24, 16, 16), (32, 8, 8), (96, 8, 8), (320, 8, 8)]
    depthwise = {k: m for k, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    dilations = [m.dilation[0] for m in depthwise.values()]
    strides = [m.stride[0] for m in depthwise.values()]
    # features 1..17: strides 2 at 2 and 4 only; dilation 2 from features.8, 4 from features.15.
    assert strides == [1, 2, 1, 2, 1, 1] + [1] * 11
    assert dilations == [1] * 7 + [2] * 7 + [4] * 3
    assert list(depthwise)[7] == "layer3.8.conv.1.0"
    state = backbone.state_dict()
    assert "layer0.0.0.weight" in state and "layer4.17.conv.2.weight" in state
    assert not any("classifier" in k or ".18." in k or "input" in k for k in state)


@pytest.mark.parametrize("output_stride, strides", [(16, (8, 16, 16)), (32, (8, 16, 32))])
def test_mobilenet_other_output_strides(output_stride, strides):
    from vrpsam.vrp.backbones import build_mobilenet_v2_backbone

    backbone = build_mobilenet_v2_backbone(output_stride=output_stride)
    assert backbone.strides == strides
    assert [s[1:] for s in stage_shapes(backbone, 64)[2:]] == [(64 // s, 64 // s) for s in strides]
    with pytest.raises(InputError, match="output_stride"):
        build_mobilenet_v2_backbone(output_stride=4)


def test_mobilenet_classifier_matches_torchvision_layout():
    net = MobileNetV2()
    state = net.state_dict()
    assert len(state) == 314
    assert sum(p.numel() for p in net.parameters()) == 3_504_872
    assert tuple(state["features.18.0.weight"].shape) == (1280, 320, 1, 1)
    assert tuple(state["classifier.1.weight"].shape) == (1000, 1280)
    assert tuple(state["features.1.conv.0.0.weight"].shape) == (32, 1, 3, 3)
    assert tuple(state["features.2.conv.2.weight"].shape) == (24, 96, 1, 1)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


def test_mobilenet_backbone_takes_imagenet_normalised_input():
    torch.manual_seed(0)
    net = build_mobilenet_v2(output_stride=8)
    randomise_batchnorm(net)
    from vrpsam.vrp.backbones import MobileNetV2Backbone

    backbone = MobileNetV2Backbone(net)
    rgb = torch.rand(1, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got = backbone.layer0((rgb - mean) / std)
        want = net.features[1](net.features[0](rgb * 2 - 1))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size, pads", [(8, (0, 1, 0, 1)), (9, (1, 1, 1, 1))])
def test_tf_same_padding_puts_the_odd_pixel_bottom_right(size, pads):
    torch.manual_seed(0)
    conv = TfSameConv2d(2, 3, 3, stride=2, padding=0, bias=False)
    x = torch.randn(1, 2, size, size)
    expected = F.conv2d(F.pad(x, pads), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape[-1] == -(-size // 2)


def test_symmetric_padding_option():
    net = MobileNetV2(MobileNetV2Config(tf_padding=False))
    assert not any(isinstance(m, TfSameConv2d) for m in net.modules())
    assert net.features[0][0].padding == (1, 1)
