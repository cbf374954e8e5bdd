"""Our TFLite -> torchvision MobileNetV2 converter, against the shared reference conversion and real photos."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from PIL import Image

import vrpsam.weights
from vrpsam.errors import CheckpointError
from vrpsam.vrp.backbones import MobileNetV2, build_backbone, build_mobilenet_v2
from vrpsam.vrp.backbones import tflite_convert
from vrpsam.vrp.backbones.mobilenet_v2 import MobileNetV2Config
from vrpsam.vrp.backbones.tflite_convert import convert_mobilenet_v2_tflite, convert_tflite_cached
from vrpsam.weights import load_into

FOLDER = "assets/weights/mobilenet_v2"
TFLITE = f"{FOLDER}/mobilenet_v2_1.0_224_quant.tflite"
PHOTOS = {
    "cat.bmp": "Egyptian cat",
    "bird.bmp": "chickadee",
    "parrot.jpg": "macaw",
    "hot_dog.jpg": "hotdog, hot dog, red hot",
    "dragonfly.bmp": "dragonfly, darning needle, devil's darning needle, sewing needle, snake feeder, snake doctor, mosquito hawk, skeeter hawk",
}


_CONVERSIONS: dict = {}


@pytest.fixture
def state(shared):
    """The converted state dict, computed once per test session (about 0.5 s)."""
    path = shared(TFLITE)
    if path not in _CONVERSIONS:
        _CONVERSIONS[path] = convert_mobilenet_v2_tflite(path)
    return _CONVERSIONS[path]


def test_conversion_reproduces_the_reference_state_dict(state, shared):
    reference = torch.load(shared(f"{FOLDER}/mobilenet_v2_imagenet_coral_dequant.pt"), weights_only=True)
    assert list(state) == list(reference) and len(state) == 314
    worst = 0.0
    for key, ref in reference.items():
        assert state[key].dtype == ref.dtype and state[key].shape == ref.shape, key
        worst = max(worst, (state[key].double() - ref.double()).abs().max().item())
    assert worst <= 1e-6


def test_converted_batchnorms_are_identity_plus_bias(state):
    assert torch.equal(state["features.5.conv.1.1.weight"], torch.ones(192))
    assert torch.equal(state["features.5.conv.1.1.running_mean"], torch.zeros(192))
    eps = MobileNetV2().features[0][1].eps
    torch.testing.assert_close(state["features.0.1.running_var"] + eps, torch.ones(32), rtol=0, atol=1e-7)
    assert state["classifier.1.weight"].shape == (1000, 1280)


@pytest.mark.parametrize("output_stride", [32, 8])
def test_top1_on_the_five_photos(state, shared, output_stride):
    # Output stride 8 (the backbone's dilated layout) must keep the pretrained network's semantics too.
    labels = shared(f"{FOLDER}/imagenet_labels.txt").read_text().splitlines()
    assert labels[0] == "background"  # the TF head's row 0, dropped by the converter
    net = MobileNetV2(MobileNetV2Config(output_stride=output_stride))
    load_into(net, state, source="converted")
    net.eval()
    batch = []
    for name in PHOTOS:
        image = Image.open(shared(f"{FOLDER}/test_images/{name}")).convert("RGB").resize((224, 224), Image.BILINEAR)
        rgb = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        batch.append(rgb * 2 - 1)  # the TF-slim input convention
    with torch.no_grad():
        top1 = net(torch.stack(batch)).argmax(dim=1).tolist()
    assert [labels[i + 1] for i in top1] == list(PHOTOS.values())


def test_first_use_converts_then_reads_the_cache(shared, tmp_path, monkeypatch):
    tflite = shared(TFLITE)
    monkeypatch.setattr(vrpsam.weights, "resolve", lambda name: tflite if name == "mobilenet_v2_tflite" else None)
    monkeypatch.setattr(vrpsam.weights, "cache_dir", lambda: tmp_path)
    backbone = build_backbone("mobilenet_v2", "imagenet")
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".safetensors"
    assert "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776" in cached[0].name  # the file's sha256

    def no_conversion(path):
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(tflite_convert, "convert_mobilenet_v2_tflite", no_conversion)
    again = build_backbone("mobilenet_v2", "imagenet")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in backbone.state_dict().items())
    assert build_mobilenet_v2(tflite).classifier[1].weight.shape == (1000, 1280)  # a .tflite path, same cache


def test_reference_pt_loads_into_the_backbone(shared):
    backbone = build_backbone("mobilenet_v2", shared(f"{FOLDER}/mobilenet_v2_imagenet_coral_dequant.pt"))
    assert backbone.channels == (32, 96, 320)


# ----------------------------------------------------------------------------- files that are not it


def test_missing_and_non_tflite_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such TFLite file"):
        convert_mobilenet_v2_tflite(tmp_path / "absent.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a TFLite model"):
        convert_mobilenet_v2_tflite(junk)


def test_truncated_file_is_a_clear_error(shared, tmp_path):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(shared(TFLITE).read_bytes()[:200_000])
    with pytest.raises(CheckpointError) as info:
        convert_mobilenet_v2_tflite(cut)
    assert str(cut) in str(info.value) and "\n" not in str(info.value)


def test_a_different_graph_is_rejected_not_guessed(shared, tmp_path):
    import tflite

    raw = bytearray(shared(TFLITE).read_bytes())
    graph = tflite.Model.GetRootAs(bytes(raw), 0).Subgraphs(0)
    op = graph.Operators(1)  # the first depthwise conv
    field = op._tab.Offset(4)  # Operator.opcode_index (uint32), present because it is not 0
    assert field != 0 and op.OpcodeIndex() == 1
    struct.pack_into("<I", raw, op._tab.Pos + field, 0)  # now it claims to be a CONV_2D
    changed = tmp_path / "changed.tflite"
    changed.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"not the expected MobileNetV2.*op 1 \(CONV_2D\).*DEPTHWISE_CONV_2D"):
        convert_mobilenet_v2_tflite(changed)
    with pytest.raises(CheckpointError, match="not the expected MobileNetV2"):
        convert_tflite_cached(changed, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
