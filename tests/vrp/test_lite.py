"""The lite model's parts: memoised frozen features, the SAM-shaped neck, the prototype prior, the
trainable-part bookkeeping of VRPSAM and the lite checkpoint round trip (random weights, small inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vrpsam.errors import CheckpointError, InputError
from vrpsam.sam.lite_encoder import FeatureMemo, LiteImageEncoder, MemoisedBackbone
from vrpsam.vrp.backbones import build_mobilenet_v2_backbone
from vrpsam.vrp.build import BUILD_KEY, LITE_BACKGROUND_KEY, LITE_NAME, build_lite
from vrpsam.vrp.checkpoint import save_vrp_checkpoint
from vrpsam.vrp.proto import SELF_SUPPORT_FOREGROUND, PrototypePrior, background_prototypes, prototype_scores, self_support_scores


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    backbone = build_mobilenet_v2_backbone(None, output_stride=16)
    backbone.name = "mobilenet_v2"
    return backbone


def test_memo_returns_rounded_outputs_and_reuses_them(mobilenet):
    memo = MemoisedBackbone(mobilenet, max_bytes=1 << 26)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = mobilenet.layer2(mobilenet.layer1(mobilenet.layer0(x))).half().float()
    first = memo.layer2(memo.layer1(memo.layer0(x)))
    again = memo.layer2(x.clone())  # same content, another tensor
    assert torch.equal(first, expected) and torch.equal(again, expected)
    assert (memo.memo.hits, memo.memo.misses) == (1, 1)
    assert memo.channels == mobilenet.channels and memo.strides == (8, 16, 16) and memo.name == "mobilenet_v2"
    assert not any(p.requires_grad for p in memo.parameters())


def test_memo_evicts_oldest_beyond_its_budget():
    memo = FeatureMemo(max_bytes=3 * 16 * 2)  # three fp16 tensors of 16 values
    double = nn.Identity()
    for i in range(4):
        memo(0, double, torch.full((16,), float(i)))
    assert memo.bytes == 3 * 16 * 2
    memo(0, double, torch.full((16,), 0.0))  # the first was evicted: a miss again
    assert memo.misses == 5 and memo.hits == 0


def test_lite_image_encoder_is_sam_shaped_and_only_its_neck_trains(mobilenet):
    encoder = LiteImageEncoder(MemoisedBackbone(mobilenet), img_size=128)
    out = encoder(torch.randn(2, 3, 128, 128))
    assert out.shape == (2, 256, 16, 16)
    out.sum().backward()
    trained = {n for n, p in encoder.named_parameters() if p.grad is not None}
    assert {n.split(".")[1] for n in trained} == {"deep_proj", "detail_proj", "mix"}
    assert all(n.startswith("neck.") for n in trained)


def test_neck_feature_dropout_acts_in_training_only_and_adds_no_weights(mobilenet):
    plain = LiteImageEncoder(MemoisedBackbone(mobilenet), img_size=64)
    dropped = LiteImageEncoder(MemoisedBackbone(mobilenet), img_size=64, feature_dropout=0.5)
    dropped.neck.load_state_dict(plain.neck.state_dict(), strict=True)
    assert plain.neck.state_dict().keys() == dropped.neck.state_dict().keys()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dropped.eval()(x), plain.eval()(x))
        _, deep = dropped.features(x)
        dropped.train()
        out = dropped.neck.drop(deep)
        kept = (out != 0).flatten(2).any(-1)  # (1, C): channels left whole or zeroed
        assert 0 < kept.sum() < kept.numel()
        assert torch.equal(out[kept], deep[kept] * 2)  # whole channels kept, rescaled by 1 / (1 - 0.5)
        assert not torch.equal(dropped(x), plain.train()(x))


def test_prototype_scores_separate_foreground_from_background():
    fg, bg = torch.tensor([1.0, 0.0, 0.2]), torch.tensor([0.0, 1.0, 0.2])
    reference = torch.stack([fg, fg, bg, bg]).T.reshape(1, 3, 2, 2)
    weights = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    target = torch.stack([fg, bg, fg + bg]).T.reshape(1, 3, 1, 3)
    scores = prototype_scores(target, reference, weights)[0, 0, 0]
    # cos(fg, fg) - cos(fg, bg) = 1 - 0.04/1.04 for the foreground cell, its negative for background,
    # and 0 for a cell equally like both.
    expected = 1 - 0.04 / 1.04
    assert torch.allclose(scores, torch.tensor([expected, -expected, 0.0]), atol=1e-6)


def test_several_background_prototypes_score_against_the_closest_one():
    fg, sky, road = torch.eye(3)
    # reference: one object cell, a background of sky and road cells
    reference = torch.stack([fg, sky, sky, road, road, road]).T.reshape(1, 3, 1, 6)
    weights = torch.tensor([1.0, 0, 0, 0, 0, 0]).reshape(1, 1, 1, 6)
    target = torch.stack([fg, sky, road]).T.reshape(1, 3, 1, 3)
    found = background_prototypes(reference, 1 - weights, 2)[0]
    assert torch.allclose((found @ torch.stack([sky, road]).T).max(0).values, torch.ones(2), atol=1e-6)
    two = prototype_scores(target, reference, weights, background_count=2)[0, 0, 0]
    assert torch.allclose(two, torch.tensor([1.0, -1.0, -1.0]), atol=1e-6)  # each background kind fully matched
    one = prototype_scores(target, reference, weights)[0, 0, 0]  # the mean background is like neither kind
    assert (one[1:] > -0.9).all() and torch.equal(prototype_scores(target, reference, weights, background_count=1)[0, 0, 0], one)
    # a reference batch of 1 serves any number of targets
    assert prototype_scores(target.expand(3, -1, -1, -1), reference, weights, background_count=2).shape == (3, 1, 1, 3)


def test_background_prototypes_repeat_with_few_cells_and_are_zero_without_any():
    reference = torch.eye(3)[:, :2].reshape(1, 3, 1, 2)  # two cells
    found = background_prototypes(reference, torch.ones(1, 1, 1, 2), 4)[0]
    assert {tuple(v.tolist()) for v in found} == {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)}
    assert torch.equal(background_prototypes(reference, torch.zeros(1, 1, 1, 2), 4), torch.zeros(1, 4, 3))
    with pytest.raises(InputError, match="background_count"):
        PrototypePrior(32, background_count=0)


def test_self_support_rescores_against_the_targets_own_prototypes():
    a, b, c = torch.eye(3)
    # target cells: two of kind a (one confident), one of kind b, one between a and c
    target = torch.stack([a, a, b, torch.nn.functional.normalize(a + c, dim=0)]).T.reshape(1, 3, 1, 4)
    scores = torch.tensor([0.5, 0.05, -0.5, 0.02]).reshape(1, 1, 1, 4)
    mixed = self_support_scores(target, scores, 0.5)
    own = prototype_scores(target, target, (scores > SELF_SUPPORT_FOREGROUND).float(), (scores < 0).float())
    assert torch.allclose(own[0, 0, 0], torch.tensor([1.0, 1.0, -1.0, 2 ** -0.5]), atol=1e-6)  # foreground a, background b
    assert torch.allclose(mixed, 0.5 * scores + 0.5 * own)
    assert torch.equal(self_support_scores(target, scores, 0.0), scores)
    # a target with no confident cell (or no negative one) keeps its scores
    flat = torch.full((1, 1, 1, 4), 0.05)
    assert torch.equal(self_support_scores(target, flat, 0.5), flat)


@pytest.fixture(scope="module")
def lite():
    return build_lite(None, backbone_checkpoint=None)


def test_lite_trains_its_sam_parts_prior_and_vrp_encoder_only(lite):
    keys = lite.trainable_modules().state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"downsample_query", "merge_1", "transformer_decoder", "sam", "prior"}
    assert {"sam.image_encoder.neck.deep_proj.weight", "sam.image_encoder.neck.detail_proj.weight", "prior.scale"} <= set(keys)
    assert not any(k.startswith("sam.image_encoder.backbone") for k in keys)
    trainable = {id(p) for p in lite.trainable_parameters()}
    assert all(p.requires_grad == (id(p) in trainable) for p in lite.parameters())
    lite.train()
    assert lite.sam.mask_decoder.training and not lite.sam.image_encoder.backbone.training
    lite.eval()


def test_lite_forward_shapes_and_prior_shortcut(lite, monkeypatch):
    target, reference = torch.randn(1, 3, 512, 512), torch.randn(1, 1, 3, 512, 512)
    annotation = torch.zeros(1, 1, 512, 512)
    annotation[..., 100:300, 150:350] = 1
    with torch.no_grad():
        logits = lite.forward_shots(target, reference, annotation)
        assert logits.shape == (1, 1, 512, 512)
        # With a decoder that outputs nothing, the output is the prior itself (the shortcut).
        monkeypatch.setattr(lite.sam.mask_decoder, "forward", lambda **kw: (torch.zeros(1, 1, 256, 256), torch.zeros(1, 1)))
        features = lite.encoder.encode_target(target)
        encoded = lite.encoder.encode_reference(reference[:, 0], annotation[:, 0])
        prior = lite.prior_logits(features, [encoded])
        low_res, _ = lite.decode(torch.zeros(1, 256, 64, 64), torch.zeros(1, 50, 256), prior)
    assert prior.shape == (1, 1, 32, 32)
    assert torch.allclose(low_res, nn.functional.interpolate(prior, size=(256, 256), mode="bilinear"))


def test_lite_checkpoint_round_trip(lite, tmp_path):
    from vrpsam.engine.train import TrainedParts

    with torch.no_grad():
        lite.prior.bias.fill_(0.25)
        lite.prior.self_support.fill_(0.5)
    path = tmp_path / "lite.safetensors"
    save_vrp_checkpoint(TrainedParts(lite), path, {BUILD_KEY: {"sam": LITE_NAME}})
    loaded = build_lite(path, backbone_checkpoint=None)
    assert loaded.prior.bias.item() == 0.25 and loaded.prior.self_support.item() == 0.5
    assert loaded.prior.background_count == 1  # a checkpoint from before the setting: one background prototype
    four = tmp_path / "four.safetensors"
    save_vrp_checkpoint(TrainedParts(lite), four, {BUILD_KEY: {"sam": LITE_NAME, LITE_BACKGROUND_KEY: 4}})
    assert build_lite(four, backbone_checkpoint=None, background_count=1).prior.background_count == 4
    for (k, a), (_, b) in zip(lite.trainable_modules().state_dict().items(), loaded.trainable_modules().state_dict().items()):
        assert torch.equal(a, b), k
    other = tmp_path / "other.safetensors"
    save_vrp_checkpoint(TrainedParts(lite), other, {BUILD_KEY: {"sam": "vit_b"}})
    with pytest.raises(CheckpointError, match="not a lite checkpoint"):
        build_lite(other, backbone_checkpoint=None)


def test_unknown_trainable_sam_part_is_an_input_error(lite):
    from vrpsam.vrp.model import VRPSAM

    with pytest.raises(InputError, match="no submodule 'decoder'"):
        VRPSAM(lite.sam, lite.encoder, input_size=512, trainable_sam=("decoder",))
