"""VRPSAM and VRPPredictor on the seeded tiny model: shapes, caching, k-shot, modes, errors."""

import numpy as np
import pytest
import torch

from vrpsam.errors import InputError
from vrpsam.vrp.build import build_model
from vrpsam.vrp.predictor import VRPPredictor, make_annotation
from vrpsam.vrp.preprocess import Frame, normalised_tensor, pad_map


@pytest.fixture(scope="module")
def model():
    return build_model("tiny-random")


def photo(seed, h=90, w=120):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def box_mask(h=90, w=120):
    mask = np.zeros((h, w), np.uint8)
    mask[20:60, 30:100] = 1
    return mask


def test_forward_gives_square_logits(model):
    x = torch.randn(2, 3, 128, 128)
    annotation = torch.zeros(2, 128, 128)
    annotation[:, 32:96, 32:96] = 1
    with torch.no_grad():
        logits = model(x, x.flip(0), annotation)
    assert logits.shape == (2, 1, 128, 128)


def test_sam_is_frozen_and_stays_in_eval(model):
    model.train()
    try:
        assert not model.sam.training
        assert not any(p.requires_grad for p in model.sam.parameters())
        assert all(p.requires_grad for p in model.encoder.trainable_parameters())
    finally:
        model.eval()


def test_predictor_matches_the_uncached_forward(model):
    reference, target = photo(0), photo(1, 100, 80)
    predictor = VRPPredictor(model)
    predictor.set_reference(reference, mask=box_mask())
    prediction = predictor.predict(target)
    assert prediction.mask.shape == (100, 80) and prediction.mask.dtype == bool
    assert prediction.logits.shape == (100, 80)

    # The same computation by hand through forward(): official squash to 128², logits back to 100x80.
    frame_r = Frame.for_image((90, 120), 128, "official")
    frame_t = Frame.for_image((100, 80), 128, "official")
    ref = normalised_tensor(reference, frame_r)
    ann = pad_map(make_annotation(mask=box_mask()).to_map((90, 120), frame_r.resized), frame_r)
    with torch.no_grad():
        logits = model(normalised_tensor(target, frame_t), ref, ann)
    expected = torch.nn.functional.interpolate(logits, size=(100, 80), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(prediction.logits, expected[0, 0].numpy(), atol=1e-5)


def test_reference_is_encoded_once(model, monkeypatch):
    predictor = VRPPredictor(model)
    predictor.set_reference(photo(0), box=(30, 20, 100, 60))
    calls = []
    original = model.encoder.encode_reference
    monkeypatch.setattr(model.encoder, "encode_reference", lambda *a, **k: calls.append(1) or original(*a, **k))
    predictor.predict_batch([photo(1), photo(2), photo(3)], batch_size=2)
    assert calls == []


def test_batch_equals_one_by_one(model):
    predictor = VRPPredictor(model)
    predictor.set_reference(photo(0), points=[(50, 40), (70, 30)])
    targets = [photo(1), photo(2, 60, 60), photo(3)]
    batched = predictor.predict_batch(targets, batch_size=3)
    for target, result in zip(targets, batched):
        np.testing.assert_allclose(predictor.predict(target).logits, result.logits, atol=1e-5)


def test_k_shot_concatenates_or_averages_tokens(model, monkeypatch):
    decoded = []
    original = model.decode
    monkeypatch.setattr(model, "decode", lambda emb, prompts: decoded.append(prompts.shape) or original(emb, prompts))
    for fusion, tokens in (("concat", 2 * model.encoder.num_queries), ("mean", model.encoder.num_queries)):
        predictor = VRPPredictor(model, fusion=fusion)
        predictor.set_reference(photo(0), mask=box_mask())
        predictor.add_reference(photo(5), scribble=[[(35, 25), (90, 50)]])
        assert predictor.num_references == 2
        predictor.predict(photo(1))
        assert decoded[-1][1] == tokens


def test_standard_mode_keeps_original_size(model):
    model.preprocessing = "standard"
    try:
        predictor = VRPPredictor(model)
        predictor.set_reference(photo(0), mask=box_mask())
        prediction = predictor.predict(photo(1, 50, 130))
        assert prediction.logits.shape == (50, 130)
        assert np.isfinite(prediction.logits).all()
    finally:
        model.preprocessing = "official"


def test_predictor_errors_are_clear(model):
    predictor = VRPPredictor(model)
    with pytest.raises(InputError, match="no reference set"):
        predictor.predict(photo(1))
    with pytest.raises(InputError, match="exactly one of mask, points, box, scribble"):
        predictor.set_reference(photo(0), mask=box_mask(), box=(1, 2, 3, 4))
    with pytest.raises(InputError, match="exactly one"):
        predictor.set_reference(photo(0))
    with pytest.raises(InputError):
        predictor.set_reference(photo(0), box=(10, 10, 500, 50))  # outside the 120x90 image
    with pytest.raises(InputError):
        predictor.set_reference(photo(0), mask=np.zeros((90, 120), np.uint8))  # empty mask
    with pytest.raises(InputError):
        predictor.set_reference(photo(0), mask=np.ones((45, 60), np.uint8))  # wrong size
    with pytest.raises(InputError, match="HxWx3 uint8"):
        predictor.set_reference(np.zeros((90, 120), np.uint8), mask=box_mask())
    with pytest.raises(InputError, match="fusion"):
        VRPPredictor(model, fusion="max")


def test_mask_and_scribble_may_be_files(model, tmp_path):
    from PIL import Image

    Image.fromarray(box_mask() * 255).save(tmp_path / "mask.png")
    predictor = VRPPredictor(model)
    predictor.set_reference(photo(0), mask=tmp_path / "mask.png")
    from_file = predictor.predict(photo(1)).logits
    predictor.set_reference(photo(0), mask=box_mask())
    np.testing.assert_allclose(predictor.predict(photo(1)).logits, from_file, atol=1e-6)
    predictor.set_reference(photo(0), scribble=str(tmp_path / "mask.png"))
    assert predictor.num_references == 1


def test_build_vrp_sam_never_falls_back_to_random_sam_weights(monkeypatch, tmp_path):
    # Without a SAM checkpoint the official file is looked up; offline and absent, that is a clear error.
    from vrpsam.errors import CheckpointError
    from vrpsam.vrp.build import build_vrp_sam

    monkeypatch.setenv("VRPSAM_WEIGHTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="sam_vit_b_01ec64.pth"):
        build_vrp_sam(sam="vit_b", backbone="mobilenet_v2", image_size=64)
