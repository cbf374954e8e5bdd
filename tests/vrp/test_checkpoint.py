"""VRP encoder checkpoints: the official best_model.pt layout and our trainable-only safetensors files."""

from __future__ import annotations

import os

import pytest
import torch

from vrpsam.errors import CheckpointError, InputError
from vrpsam.vrp.backbones import build_backbone
from vrpsam.vrp.checkpoint import (
    checkpoint_format,
    load_official_vrp_checkpoint,
    load_vrp_checkpoint,
    load_vrp_encoder,
    official_state_dict,
    save_vrp_checkpoint,
)
from vrpsam.vrp.encoder import VRPEncoder


def _randomise(encoder: VRPEncoder, seed: int = 0) -> VRPEncoder:
    """Distinct values in every float tensor, so any mix-up of keys shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in encoder.state_dict().values():  # shares storage with the parameters and buffers
            if not tensor.is_floating_point():
                continue
            if tensor.dim() > 1:
                tensor.copy_(torch.randn(tensor.shape, generator=g) * tensor[0].numel() ** -0.5)
            else:  # norm scales, biases, BatchNorm statistics: positive, near 1
                tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=g))
    return encoder


@pytest.fixture(scope="module")
def resnet_encoder() -> VRPEncoder:
    encoder = VRPEncoder(build_backbone("resnet50_v2"))
    return _randomise(encoder).eval()


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_layout_keys_and_shapes(resnet_encoder):
    state = official_state_dict(resnet_encoder)
    assert len(state) == 357 and all(k.startswith("module.") for k in state)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    # Names and shapes from the official checkpoint description (vrp_sam_official.md §5).
    assert shapes["module.layer0.0.weight"] == (64, 3, 3, 3)
    assert shapes["module.layer0.3.weight"] == (64, 64, 3, 3)
    assert shapes["module.layer0.6.weight"] == (128, 64, 3, 3)
    assert "module.layer0.7.num_batches_tracked" in shapes
    assert shapes["module.layer1.0.conv1.weight"] == (64, 128, 1, 1)
    assert "module.layer4.0.downsample.1.running_var" in shapes
    assert shapes["module.downsample_query.0.weight"] == (256, 1536, 1, 1)
    assert shapes["module.merge_1.0.weight"] == (256, 513, 1, 1)
    assert shapes["module.transformer_decoder.supp_q_feat.weight"] == (50, 256)
    attn = "module.transformer_decoder.transformer_cross_attention_layers_0.0.multihead_attn"
    assert shapes[f"{attn}.in_proj_weight"] == (768, 256) and shapes[f"{attn}.out_proj.bias"] == (256,)
    trainable = sum(v.numel() for k, v in state.items() if not k.startswith("module.layer"))
    assert trainable == 1_592_064


def test_official_file_round_trips_strictly(resnet_encoder, tmp_path):
    path = tmp_path / "best_model.pt"
    torch.save(official_state_dict(resnet_encoder), path)
    assert checkpoint_format(path) == "official"
    loaded = load_official_vrp_checkpoint(path)
    assert loaded.backbone_name == "resnet50_v2" and loaded.num_queries == 50 and not loaded.training
    assert _same_state(loaded, resnet_encoder)
    x = torch.randn(1, 3, 64, 64)
    annotation = torch.zeros(1, 64, 64)
    annotation[:, 16:48, 8:40] = 1
    with torch.no_grad():
        assert torch.equal(loaded(x, x.flip(-1), annotation), resnet_encoder(x, x.flip(-1), annotation))


def test_official_num_queries_and_vgg_are_read_off_the_keys(tmp_path):
    encoder = _randomise(VRPEncoder(build_backbone("vgg16_bn"), num_queries=7))
    path = tmp_path / "vgg.pt"
    torch.save(official_state_dict(encoder), path)
    loaded = load_official_vrp_checkpoint(path)
    assert loaded.backbone_name == "vgg16_bn" and loaded.num_queries == 7
    assert loaded.downsample_query[0].weight.shape == (256, 768, 1, 1)
    assert _same_state(loaded, encoder)


def test_official_trainable_only_file_needs_the_backbone(resnet_encoder, tmp_path):
    state = {k: v for k, v in official_state_dict(resnet_encoder).items() if not k.startswith("module.layer")}
    path = tmp_path / "trainable.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="backbone_checkpoint"):
        load_official_vrp_checkpoint(path)
    backbone_path = tmp_path / "resnet50_v2.pth"
    torch.save(resnet_encoder.backbone.state_dict(), backbone_path)
    loaded = load_official_vrp_checkpoint(path, backbone_checkpoint=backbone_path)
    assert _same_state(loaded, resnet_encoder)
    full = _save(official_state_dict(resnet_encoder), tmp_path / "full.pt")
    with pytest.raises(InputError, match="backbone_checkpoint"):
        load_official_vrp_checkpoint(full, backbone_checkpoint=backbone_path)


def _save(state: dict, path) -> str:
    torch.save(state, path)
    return str(path)


def test_official_file_problems_are_named(resnet_encoder, tmp_path):
    state = official_state_dict(resnet_encoder)
    missing = dict(state)
    del missing["module.merge_1.0.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: merge_1\.0\.weight"):
        load_official_vrp_checkpoint(_save(missing, tmp_path / "missing.pt"))
    extra = {**state, "module.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        load_official_vrp_checkpoint(_save(extra, tmp_path / "extra.pt"))
    unprefixed = {k[len("module.") :]: v for k, v in state.items()}
    with pytest.raises(CheckpointError, match="module."):
        load_official_vrp_checkpoint(_save(unprefixed, tmp_path / "plain.pt"))


@pytest.mark.parametrize("first_byte", [0x80, ord("P")])
def test_format_of_safetensors_whose_header_length_looks_like_torch(tmp_path, first_byte):
    # The 8-byte header length comes first; 0x80 (pickle) or "P" (zip) there must not fool the sniffing.
    from safetensors.torch import save_file

    from vrpsam.vrp.checkpoint import FORMAT_KEY, FORMAT_NAME

    path = tmp_path / "x.safetensors"
    for padding in range(256):
        save_file({"w": torch.zeros(2)}, str(path), metadata={FORMAT_KEY: FORMAT_NAME, "pad": "x" * padding})
        if path.read_bytes()[0] == first_byte:
            break
    assert path.read_bytes()[0] == first_byte
    assert checkpoint_format(path) == "vrpsam"


def test_our_format_round_trip(resnet_encoder, tmp_path):
    path = tmp_path / "vrp.safetensors"
    save_vrp_checkpoint(resnet_encoder, path, {"condition": "mask", "fold": 0})
    assert os.listdir(tmp_path) == ["vrp.safetensors"]  # no temporary file left behind
    assert checkpoint_format(path) == "vrpsam"
    state, metadata = load_vrp_checkpoint(path)
    assert state.keys() == resnet_encoder.trainable_modules().state_dict().keys()
    assert metadata == {
        "format_version": 1,
        "backbone": "resnet50_v2",
        "num_queries": 50,
        "hidden_dim": 256,
        "annotation_downsample": "nearest",
        "condition": "mask",
        "fold": 0,
    }
    assert sum(v.numel() for v in state.values()) == 1_592_064
    with pytest.raises(CheckpointError, match="backbone_checkpoint"):
        load_vrp_encoder(path)
    backbone_path = tmp_path / "resnet50_v2.pth"
    torch.save(resnet_encoder.backbone.state_dict(), backbone_path)
    loaded = load_vrp_encoder(path, backbone_checkpoint=backbone_path)
    assert _same_state(loaded, resnet_encoder) and not loaded.training


def test_save_metadata_rules(resnet_encoder, tmp_path):
    with pytest.raises(InputError, match="num_queries"):
        save_vrp_checkpoint(resnet_encoder, tmp_path / "a.safetensors", {"num_queries": 10})
    repeated = tmp_path / "repeated.safetensors"
    save_vrp_checkpoint(resnet_encoder, repeated, {"num_queries": 50, "backbone": "resnet50_v2"})
    assert load_vrp_checkpoint(repeated)[1]["num_queries"] == 50
    repeated.unlink()
    with pytest.raises(InputError, match="JSON"):
        save_vrp_checkpoint(resnet_encoder, tmp_path / "b.safetensors", {"when": object()})
    anonymous = VRPEncoder(build_backbone("vgg16_bn"))
    anonymous.backbone_name = None
    with pytest.raises(InputError, match="backbone"):
        save_vrp_checkpoint(anonymous, tmp_path / "c.safetensors")
    assert not list(tmp_path.iterdir())


def test_unknown_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello, not a checkpoint")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    for path, message in [(junk, "neither"), (plain, "marker"), (tmp_path / "absent.pt", "no such")]:
        with pytest.raises(CheckpointError, match=message):
            load_vrp_encoder(path)
    with pytest.raises(CheckpointError, match="use load_official_vrp_checkpoint"):
        load_vrp_checkpoint(_save({"module.x": torch.zeros(1)}, tmp_path / "official.pt"))
    with pytest.raises(CheckpointError, match="not a VRP-SAM encoder"):
        load_official_vrp_checkpoint(tmp_path / "official.pt")
    stamped = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, str(stamped), metadata={"vrpsam.format": "vrp_encoder", "vrpsam.format_version": "9"})
    with pytest.raises(CheckpointError, match="version"):
        load_vrp_checkpoint(stamped)
