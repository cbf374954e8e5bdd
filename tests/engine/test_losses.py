"""The official BCE + Dice objective, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from vrpsam.engine.losses import bce_term, dice_term, segmentation_loss
from vrpsam.errors import InputError


def test_zero_logits_hand_worked():
    # Two 2x2 samples, logits 0 everywhere so every probability is 1/2.
    # Sample 0: one foreground pixel. Sigma p = 2, Sigma t = 1, Sigma pt = 1/2 -> dice 1 - (1 + 1)/(3 + 1) = 1/2.
    # Sample 1: empty.               Sigma p = 2, Sigma t = 0, Sigma pt = 0   -> dice 1 - 1/3 = 2/3.
    # BCE of logit 0 is log 2 for every pixel, whatever the target.
    logits = torch.zeros(2, 1, 2, 2)
    mask = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    expected = math.log(2) + (0.5 + 2 / 3) / 2
    assert segmentation_loss(logits, mask).item() == pytest.approx(expected, abs=1e-6)


def test_confident_logits_hand_worked():
    # One 1x2 sample, logits (+2, -2), target (1, 0).
    # BCE: both pixels cost log(1 + e^-2) -> mean log(1 + e^-2).
    # Dice: p = (s, 1 - s) with s = sigmoid(2); Sigma pt = s, Sigma p = 1, Sigma t = 1 -> 1 - (2s + 1)/3.
    logits = torch.tensor([[[2.0, -2.0]]])
    mask = torch.tensor([[[1, 0]]])
    s = 1 / (1 + math.exp(-2))
    assert bce_term(logits, mask.float()).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)
    assert dice_term(logits, mask.float()).item() == pytest.approx(1 - (2 * s + 1) / 3, abs=1e-6)
    assert segmentation_loss(logits, mask).item() == pytest.approx(math.log(1 + math.exp(-2)) + 1 - (2 * s + 1) / 3, abs=1e-6)


def test_ignore_pixels_count_as_background():
    logits = torch.randn(2, 1, 5, 5)
    mask = (torch.rand(2, 5, 5) > 0.5).long()
    with_ignore = mask.clone()
    with_ignore[:, 0, :] = 255
    as_background = mask.clone()
    as_background[:, 0, :] = 0
    assert torch.equal(segmentation_loss(logits, with_ignore), segmentation_loss(logits, as_background))


def test_batch_mean_is_the_mean_of_per_sample_losses():
    # Each term is a mean over samples, which is what lets DDP's gradient averaging equal the global batch.
    logits = torch.randn(4, 1, 6, 6)
    mask = (torch.rand(4, 6, 6) > 0.5).long()
    whole = segmentation_loss(logits, mask)
    parts = torch.stack([segmentation_loss(logits[i : i + 1], mask[i : i + 1]) for i in range(4)])
    assert whole.item() == pytest.approx(parts.mean().item(), abs=1e-6)


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError):
        segmentation_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, 5))
    with pytest.raises(InputError):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4))


def test_ignored_pixels_are_left_out_with_ignore():
    # Ignoring a row of every sample equals the loss of the samples without that row, term by term:
    # BCE is the mean over the kept pixels, Dice sums over them only.
    logits = torch.randn(3, 1, 5, 4, requires_grad=True)
    mask = (torch.rand(3, 5, 4) > 0.5).long()
    mask[:, 0, :] = 255
    loss = segmentation_loss(logits, mask, ignore=True)
    kept = logits[:, :, 1:, :]
    assert loss.item() == pytest.approx(segmentation_loss(kept, mask[:, 1:, :]).item(), abs=1e-6)
    loss.backward()
    assert not logits.grad[:, :, 0, :].any() and logits.grad[:, :, 1:, :].abs().sum() > 0


def test_a_fully_ignored_sample_adds_nothing_but_its_constant():
    # No valid pixel: its BCE weight is 0 and its Dice is 1 - 1/1 = 0, so the batch loss is the other's
    # Dice over B = 2 plus the other's BCE.
    logits = torch.randn(2, 1, 3, 3)
    mask = (torch.rand(2, 3, 3) > 0.5).long()
    mask[1] = 255
    expected = bce_term(logits[:1, 0], mask[:1].float()) + dice_term(logits[:1, 0], mask[:1].float()) / 2
    assert segmentation_loss(logits, mask, ignore=True).item() == pytest.approx(expected.item(), abs=1e-6)
