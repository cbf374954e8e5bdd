"""sam_model_registry: official key names, shapes and sizes; strict checkpoint loading; Sam's pre/post-processing.

Counts were read off the official models (segment-anything @ dca509f, MobileSAM) instantiated on the
meta device; they equal the released files sam_vit_{b,l,h}_*.pth and mobile_sam.pt.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vrpsam import Sam, sam_model_registry
from vrpsam.errors import CheckpointError, InputError
from vrpsam.sam import SamPredictor
from vrpsam.sam.build import build_sam_vit_h


def on_meta(name: str) -> Sam:
    with torch.device("meta"):
        return sam_model_registry[name]()


def shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if k.startswith(prefix)}


def official_prompt_and_decoder_shapes() -> dict[str, tuple[int, ...]]:
    """Every prompt_encoder.* and mask_decoder.* entry of an official SAM / MobileSAM checkpoint."""
    d, half, mlp = 256, 128, 2048
    out = {"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, half)}
    for name in ["point_embeddings.0", "point_embeddings.1", "point_embeddings.2", "point_embeddings.3",
                 "not_a_point_embed", "no_mask_embed"]:
        out[f"prompt_encoder.{name}.weight"] = (1, d)
    for index, weight, bias in [(0, (4, 1, 2, 2), 4), (1, (4,), 4), (3, (16, 4, 2, 2), 16), (4, (16,), 16),
                                (6, (d, 16, 1, 1), d)]:
        out[f"prompt_encoder.mask_downscaling.{index}.weight"] = weight
        out[f"prompt_encoder.mask_downscaling.{index}.bias"] = (bias,)

    def attention(prefix: str, inner: int) -> None:
        for proj in ("q_proj", "k_proj", "v_proj"):
            out[f"{prefix}.{proj}.weight"], out[f"{prefix}.{proj}.bias"] = (inner, d), (inner,)
        out[f"{prefix}.out_proj.weight"], out[f"{prefix}.out_proj.bias"] = (d, inner), (d,)

    def linear(prefix: str, n_out: int, n_in: int) -> None:
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = (n_out, n_in), (n_out,)

    t = "mask_decoder.transformer"
    for layer in (0, 1):
        attention(f"{t}.layers.{layer}.self_attn", d)
        attention(f"{t}.layers.{layer}.cross_attn_token_to_image", half)
        attention(f"{t}.layers.{layer}.cross_attn_image_to_token", half)
        linear(f"{t}.layers.{layer}.mlp.lin1", mlp, d)
        linear(f"{t}.layers.{layer}.mlp.lin2", d, mlp)
        for norm in ("norm1", "norm2", "norm3", "norm4"):
            out[f"{t}.layers.{layer}.{norm}.weight"] = out[f"{t}.layers.{layer}.{norm}.bias"] = (d,)
    attention(f"{t}.final_attn_token_to_image", half)
    out[f"{t}.norm_final_attn.weight"] = out[f"{t}.norm_final_attn.bias"] = (d,)
    out["mask_decoder.iou_token.weight"], out["mask_decoder.mask_tokens.weight"] = (1, d), (4, d)
    out["mask_decoder.output_upscaling.0.weight"], out["mask_decoder.output_upscaling.0.bias"] = (d, 64, 2, 2), (64,)
    out["mask_decoder.output_upscaling.1.weight"] = out["mask_decoder.output_upscaling.1.bias"] = (64,)
    out["mask_decoder.output_upscaling.3.weight"], out["mask_decoder.output_upscaling.3.bias"] = (64, 32, 2, 2), (32,)
    for token in range(4):
        prefix = f"mask_decoder.output_hypernetworks_mlps.{token}.layers"
        linear(f"{prefix}.0", d, d), linear(f"{prefix}.1", d, d), linear(f"{prefix}.2", 32, d)
    prefix = "mask_decoder.iou_prediction_head.layers"
    linear(f"{prefix}.0", d, d), linear(f"{prefix}.1", d, d), linear(f"{prefix}.2", 4, d)
    return out


def test_registry_names():
    assert set(sam_model_registry) == {"default", "vit_h", "vit_l", "vit_b", "vit_t"}
    assert sam_model_registry["default"] is build_sam_vit_h


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "vit_t"])
def test_prompt_encoder_and_decoder_keys_are_official(name):
    model = on_meta(name)
    expected = official_prompt_and_decoder_shapes()
    assert len(expected) == 137
    ours = {k: v for k, v in shapes(model).items() if not k.startswith("image_encoder.")}
    assert ours == expected


@pytest.mark.parametrize(
    "name, entries, params, representative",
    [
        ("vit_b", 314, 93_735_472, {
            "image_encoder.pos_embed": (1, 64, 64, 768),
            "image_encoder.patch_embed.proj.weight": (768, 3, 16, 16),
            "image_encoder.blocks.0.attn.rel_pos_h": (27, 64),  # windowed: 2 * 14 - 1
            "image_encoder.blocks.2.attn.rel_pos_h": (127, 64),  # global: 2 * 64 - 1
            "image_encoder.blocks.11.mlp.lin2.weight": (768, 3072),
            "image_encoder.neck.0.weight": (256, 768, 1, 1),
            "image_encoder.neck.3.bias": (256,),
        }),
        ("vit_l", 482, 312_342_832, {
            "image_encoder.pos_embed": (1, 64, 64, 1024),
            "image_encoder.blocks.5.attn.rel_pos_w": (127, 64),
            "image_encoder.blocks.23.attn.rel_pos_w": (127, 64),
            "image_encoder.blocks.22.attn.rel_pos_w": (27, 64),
        }),
        ("vit_h", 594, 641_090_608, {
            "image_encoder.pos_embed": (1, 64, 64, 1280),
            "image_encoder.blocks.7.attn.rel_pos_h": (127, 80),
            "image_encoder.blocks.8.attn.rel_pos_h": (27, 80),
            "image_encoder.blocks.31.mlp.lin2.weight": (1280, 5120),
        }),
        ("vit_t", 439, 10_130_092, {
            "image_encoder.patch_embed.seq.0.c.weight": (32, 3, 3, 3),
            "image_encoder.layers.3.blocks.1.attn.attention_biases": (10, 49),
            "image_encoder.head.weight": (1000, 320),
            "image_encoder.neck.0.weight": (256, 320, 1, 1),
        }),
    ],
)
def test_official_sizes(name, entries, params, representative):
    model = on_meta(name)
    state = shapes(model)
    assert len(state) == entries
    assert sum(p.numel() for p in model.parameters()) == params
    assert {k: state[k] for k in representative} == representative
    assert not any("pixel_" in k for k in state)  # non-persistent, as in the official files
    assert not model.training


def test_vit_t_matches_the_full_mobile_sam_key_list(shared):
    listing = shared("reference/mobile_sam_state_dict_keys.txt")
    expected = {}
    for line in listing.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = re.fullmatch(r"(\S+) \[(.*)\]", line).groups()
            expected[key] = tuple(int(s) for s in shape.split(",") if s.strip())
    assert shapes(on_meta("vit_t")) == expected


@pytest.fixture(scope="module")
def random_vit_t(tmp_path_factory) -> tuple[Sam, Path]:
    """A seeded 64² MobileSAM with every tensor redrawn, and its official-layout checkpoint."""
    torch.manual_seed(0)
    model = sam_model_registry["vit_t"](image_size=64)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=gen)
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen) if "running_var" in name else noise / 4)
    model.eval()  # anything derived from the weights in eval mode is derived again
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam_random.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("as_type", [str, Path])
def test_checkpoint_round_trip_gives_identical_outputs(random_vit_t, as_type):
    source, path = random_vit_t
    loaded = sam_model_registry["vit_t"](checkpoint=as_type(path), image_size=64)
    assert not loaded.training
    assert all(p.requires_grad for p in loaded.parameters())  # freezing is the caller's decision
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    image = torch.randint(0, 256, (48, 64, 3), dtype=torch.uint8).numpy()
    results = []
    for model in (source, loaded):
        predictor = SamPredictor(model)
        predictor.set_image(image)
        results.append((predictor.features, *predictor.predict(point_coords=[[10, 20]], point_labels=[1])))
    assert results[0][0].abs().max() > 0
    for ours, theirs in zip(*results):
        assert (torch.as_tensor(ours) == torch.as_tensor(theirs)).all()


def test_a_wrong_checkpoint_is_one_clear_error(random_vit_t, tmp_path):
    _, path = random_vit_t
    renamed = torch.load(path, weights_only=True)
    renamed["mask_decoder.iou_tokens.weight"] = renamed.pop("mask_decoder.iou_token.weight")
    torch.save(renamed, tmp_path / "renamed.pt")
    expected = "missing keys: mask_decoder.iou_token.weight; unexpected keys: mask_decoder.iou_tokens.weight"
    with pytest.raises(CheckpointError, match=expected):
        sam_model_registry["vit_t"](checkpoint=tmp_path / "renamed.pt", image_size=64)
    reshaped = torch.load(path, weights_only=True)
    reshaped["mask_decoder.mask_tokens.weight"] = torch.zeros(5, 256)
    torch.save(reshaped, tmp_path / "reshaped.pt")
    expected = r"wrong shapes: mask_decoder.mask_tokens.weight \(5, 256\) != \(4, 256\)"
    with pytest.raises(CheckpointError, match=expected):
        sam_model_registry["vit_t"](checkpoint=tmp_path / "reshaped.pt", image_size=64)
    with pytest.raises(CheckpointError, match="no such weights file"):
        sam_model_registry["vit_t"](checkpoint=tmp_path / "absent.pt", image_size=64)


def test_image_size_must_be_a_multiple_of_16():
    with pytest.raises(InputError, match="image_size: must be a positive multiple of 16, got 100"):
        sam_model_registry["vit_b"](image_size=100)


def test_preprocess_and_postprocess_by_hand():
    model = sam_model_registry["vit_t"](image_size=64)
    assert "pixel_mean" in dict(model.named_buffers()) and "pixel_mean" not in model.state_dict()
    assert model.mask_threshold == 0.0 and model.image_format == "RGB" and model.img_size == 64
    x = torch.zeros(1, 3, 40, 64)
    x[:, 0], x[:, 1], x[:, 2] = 123.675 + 58.395, 116.28, 103.53 - 2 * 57.375
    out = model.preprocess(x)
    assert out.shape == (1, 3, 64, 64)
    torch.testing.assert_close(out[0, :, :40].mean((1, 2)), torch.tensor([1.0, 0.0, -2.0]))
    assert (out[:, :, 40:] == 0).all()  # padded below with zeros after normalising
    masks = torch.zeros(2, 3, 16, 16)
    masks[..., :10, :] = 1.0  # rows 0..9 of 16 -> 0..40 of 64, exactly the valid 40 input rows
    up = model.postprocess_masks(masks, (40, 64), (80, 128))
    assert up.shape == (2, 3, 80, 128)
    # 16 -> 64 rows puts the edge at row 40, blurred over rows 38 (0.875) and 39 (0.625); the crop keeps
    # rows 0..39, and 40 -> 80 rows maps output row 79 onto row 39.25, clamped to 39.
    assert (up[..., :75, :] == 1.0).all()
    torch.testing.assert_close(up[..., 79, :], torch.full((2, 3, 128), 0.625))
