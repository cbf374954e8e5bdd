"""The VRP encoder: feature augmenter maths, the reusable reference path, downsampling, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vrpsam.errors import InputError
from vrpsam.vrp.encoder import VRPEncoder, cosine_prior, masked_average


class TinyBackbone(nn.Module):
    """A stand-in with the backbone interface: ``layer0..4``, ``channels``, frozen, BatchNorm in eval.

    ``vgg_like``: layer3 halves the resolution of layer2, as VGG's does.
    """

    def __init__(self, vgg_like: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)

        def conv(cin, cout, stride=1):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())

        self.layer0 = conv(3, 4, 2)
        self.layer1 = conv(4, 6)
        self.layer2 = conv(6, 8, 2)
        self.layer3 = conv(8, 12, 2 if vgg_like else 1)
        self.layer4 = conv(12, 16)
        self.channels = (8, 12, 16)
        with torch.no_grad():  # non-trivial BatchNorm statistics, so eval vs train mode would show
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
        self.requires_grad_(False).eval()


def _encoder(vgg_like: bool = False, mode: str = "nearest") -> VRPEncoder:
    encoder = VRPEncoder(TinyBackbone(vgg_like), num_queries=5, hidden_dim=16, annotation_downsample=mode)
    with torch.no_grad():
        for p in encoder.trainable_parameters():
            p.copy_(torch.randn(p.shape) * (p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1))
    return encoder.eval()


def _inputs(batch: int = 2, size: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, 3, size, size, generator=g)
    reference = torch.randn(batch, 3, size, size, generator=g)
    annotation = torch.zeros(batch, size, size)
    annotation[:, 8:24, 4:20] = 1
    return target, reference, annotation


def test_masked_average_by_hand():
    features = torch.arange(8.0).view(1, 2, 2, 2)  # channel 0: 0..3, channel 1: 4..7
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    expected = torch.tensor([(0 + 2) / 2.0005, (4 + 6) / 2.0005]).view(1, 2, 1, 1)
    assert torch.allclose(masked_average(features, mask), expected)
    assert torch.equal(masked_average(features, torch.zeros_like(mask)), torch.zeros(1, 2, 1, 1))


def test_cosine_prior_by_hand_and_broadcast():
    g = torch.Generator().manual_seed(3)
    reference = torch.rand(1, 4, 2, 3, generator=g)
    reference[..., 0, 0] = 0  # a masked-out pixel: similarity 0, never above a real match
    targets = torch.rand(2, 4, 3, 2, generator=g)
    prior = cosine_prior(reference, targets)
    assert prior.shape == (2, 1, 3, 2)
    for b in range(2):
        for i in range(3):
            for j in range(2):
                t = targets[b, :, i, j]
                sims = [(r @ t) / (r.norm() * t.norm() + 1e-7) for r in reference[0].flatten(1).T]
                assert torch.allclose(prior[b, 0, i, j], max(sims), atol=1e-6)
    assert torch.allclose(cosine_prior(reference.expand(2, -1, -1, -1), targets), prior, atol=1e-7)


@pytest.mark.parametrize("vgg_like", [False, True])
@torch.no_grad()
def test_cached_reference_path_equals_forward(vgg_like):
    encoder = _encoder(vgg_like)
    target, reference, annotation = _inputs()
    prompts = encoder(target, reference, annotation)
    assert prompts.shape == (2, 5, 16)
    encoding = encoder.encode_reference(reference, annotation)
    assert torch.equal(encoder.prompts(encoder.encode_target(target), encoding), prompts)
    h = 4 if vgg_like else 8
    assert encoding.tokens.shape == (2, 16, h, h) and encoding.mask.shape == (2, 1, h, h)
    assert encoding.masked_deep.shape == (2, 16, h, h) and encoding.prototype.shape == (2, 16, 1, 1)


@torch.no_grad()
def test_reference_masks_layer3_before_layer4():
    encoder = _encoder()
    _, reference, annotation = _inputs()
    encoding = encoder.encode_reference(reference, annotation)
    backbone = encoder.backbone
    f3 = backbone.layer3(backbone.layer2(backbone.layer1(backbone.layer0(reference))))
    mask = torch.nn.functional.interpolate(annotation[:, None], size=f3.shape[-2:], mode="nearest")
    assert torch.equal(encoding.mask, mask)
    assert torch.allclose(encoding.masked_deep, backbone.layer4(f3 * mask) * mask)


@torch.no_grad()
def test_one_reference_serves_many_targets():
    encoder = _encoder()
    targets, reference, annotation = _inputs(batch=3)
    one = encoder.encode_reference(reference[:1], annotation[:1])
    prompts = encoder.prompts(encoder.encode_target(targets), one)
    assert prompts.shape == (3, 5, 16)
    for i in range(3):
        alone = encoder(targets[i : i + 1], reference[:1], annotation[:1])
        assert torch.allclose(prompts[i : i + 1], alone, atol=1e-6)
    with pytest.raises(InputError, match="cannot serve"):
        encoder.prompts(encoder.encode_target(targets), encoder.encode_reference(reference[:2], annotation[:2]))


@torch.no_grad()
def test_single_click_nearest_drops_it_and_max_keeps_it():
    _, reference, _ = _inputs(batch=1)
    click = torch.zeros(1, 32, 32)
    click[0, 13, 21] = 1  # off the stride-4 grid that nearest samples (rows/cols 0, 4, 8, ...)
    nearest = _encoder(mode="nearest").encode_reference(reference, click)
    assert nearest.mask.sum() == 0 and nearest.prototype.abs().sum() == 0
    assert nearest.masked_deep.abs().sum() == 0
    kept = _encoder(mode="max").encode_reference(reference, click)
    assert kept.mask.sum() == 1 and kept.mask[0, 0, 13 // 4, 21 // 4] == 1
    assert kept.prototype.abs().sum() > 0


def test_eval_is_deterministic_and_train_uses_dropout():
    encoder = _encoder()
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(encoder(*inputs), encoder(*inputs))
        encoder.train()
        assert not encoder.backbone.training
        assert all(not m.training for m in encoder.backbone.modules())
        torch.manual_seed(0)
        first = encoder(*inputs)
        torch.manual_seed(1)
        assert not torch.allclose(first, encoder(*inputs))


def test_only_vrp_parts_train():
    encoder = _encoder().train()
    encoder(*_inputs()).square().sum().backward()
    trainable = encoder.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in encoder.parameters() if p.requires_grad}
    assert all(p.grad is not None for p in trainable)
    assert all(p.grad is None and not p.requires_grad for p in encoder.backbone.parameters())
    names = set(encoder.trainable_modules().state_dict())
    assert {"downsample_query.0.weight", "merge_1.0.weight", "transformer_decoder.supp_q_feat.weight"} <= names
    assert not any(name.startswith("backbone") for name in names)


def test_resnet50_v2_trainable_count_is_official():
    from vrpsam.vrp.backbones import build_backbone

    with torch.device("meta"):
        encoder = VRPEncoder(build_backbone("resnet50_v2"))
    assert sum(p.numel() for p in encoder.trainable_parameters()) == 1_592_064
    assert encoder.downsample_query[0].weight.shape == (256, 1536, 1, 1)
    assert encoder.merge_1[0].weight.shape == (256, 513, 1, 1)


def test_bad_inputs_are_clear_errors():
    encoder = _encoder()
    target, reference, annotation = _inputs()
    with pytest.raises(InputError, match="annotation"):
        encoder(target, reference, annotation[:, :16])
    with pytest.raises(InputError, match="target"):
        encoder(target[:, :1], reference, annotation)
    with pytest.raises(InputError, match="annotation_downsample"):
        VRPEncoder(TinyBackbone(), annotation_downsample="area")


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("references", [1, 2])
def test_cosine_prior_equals_the_full_comparison(signed, references):
    # The prior skips reference pixels outside the annotation; it must equal comparing all of them.
    generator = torch.Generator().manual_seed(references + 2 * signed)
    targets = torch.randn(2, 16, 8, 8, generator=generator)
    mask = (torch.rand(references, 1, 8, 8, generator=generator) > 0.6).float()
    masked = torch.randn(references, 16, 8, 8, generator=generator) * mask
    if not signed:  # post-ReLU features, as ResNet's layer4
        targets, masked = targets.relu(), masked.relu()
    flat_ref, flat_tgt = masked.flatten(2).transpose(1, 2), targets.flatten(2)
    norms = flat_ref.norm(dim=2, keepdim=True) * flat_tgt.norm(dim=1, keepdim=True)
    full = (flat_ref @ flat_tgt / (norms + 1e-7)).amax(dim=1).view(2, 1, 8, 8)
    assert torch.allclose(cosine_prior(masked, targets), full, atol=1e-6)
    assert torch.equal(cosine_prior(torch.zeros(1, 16, 8, 8), targets), torch.zeros(2, 1, 8, 8))
