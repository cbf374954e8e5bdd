"""SamPredictor: pre- and post-processing against hand-computed expectations, and clear input errors.

The model is MobileSAM's layout at a 64² input (embedding 4x4, low-res masks 16x16). The test image is
300 (H) x 200 (W): resized to 64 x 43 (200 * 64 / 300 = 42.67), padded to 64 x 64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vrpsam import SamPredictor, sam_model_registry
from vrpsam.errors import InputError

SIZE, LOW = 64, 16
H, W = 300, 200
NEW_H, NEW_W = 64, 43
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return sam_model_registry["vit_t"](image_size=SIZE)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def predictor(model, image) -> SamPredictor:
    predictor = SamPredictor(model)
    predictor.set_image(image)
    return predictor


def capture_inputs(module: torch.nn.Module) -> dict:
    """Record the positional arguments of every call of ``module``; remove the hook with ['handle']."""
    seen = {}
    seen["handle"] = module.register_forward_pre_hook(lambda m, args: seen.__setitem__("args", args))
    return seen


def replace_decoder_output(model, low_res: torch.Tensor):
    """Make the mask decoder return ``low_res`` (1, C, 16, 16) logits; returns the hook handle."""
    iou = torch.zeros(1, low_res.shape[1])
    return model.mask_decoder.register_forward_hook(lambda m, args, out: (low_res, iou))


def test_image_is_resized_normalised_and_padded(model, image):
    seen = capture_inputs(model.image_encoder)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    seen["handle"].remove()
    resized = np.asarray(Image.fromarray(image).resize((NEW_W, NEW_H), Image.BILINEAR), dtype=np.float64)
    expected = np.zeros((1, 3, SIZE, SIZE))
    expected[0, :, :NEW_H, :NEW_W] = ((resized - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(seen["args"][0].numpy(), expected, atol=1e-5)
    assert predictor.original_size == (H, W) and predictor.input_size == (NEW_H, NEW_W)
    assert predictor.get_image_embedding().shape == (1, 256, 4, 4)
    assert predictor.device == torch.device("cpu")


def test_bgr_input_is_flipped_to_rgb(model, image, predictor):
    other = SamPredictor(model)
    other.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
    torch.testing.assert_close(other.features, predictor.features, rtol=0, atol=0)


def test_prompts_reach_the_model_in_the_resized_frame(model, predictor):
    seen = capture_inputs(model.prompt_encoder)
    predictor.predict(point_coords=np.array([[100, 150]]), point_labels=np.array([1]))
    (coords, labels), boxes, masks = seen["args"]
    torch.testing.assert_close(coords, torch.tensor([[[100 * NEW_W / W, 150 * NEW_H / H]]]))
    assert labels.tolist() == [[1]] and boxes is None and masks is None
    predictor.predict(box=np.array([10, 30, 200, 300]), mask_input=np.zeros((1, LOW, LOW)))
    points, boxes, masks = seen["args"]
    seen["handle"].remove()
    assert points is None
    torch.testing.assert_close(boxes, torch.tensor([[[10 * NEW_W / W, 30 * NEW_H / H, NEW_W, NEW_H]]]))
    assert masks.shape == (1, 1, LOW, LOW) and masks.dtype == torch.float32


def test_output_shapes(predictor):
    masks, iou, low_res = predictor.predict(point_coords=[[10, 20]], point_labels=[1])
    assert masks.shape == (3, H, W) and masks.dtype == bool
    assert iou.shape == (3,) and low_res.shape == (3, LOW, LOW)
    masks, iou, low_res = predictor.predict(box=[0, 0, W, H], multimask_output=False, return_logits=True)
    assert masks.shape == (1, H, W) and masks.dtype == np.float32
    assert iou.shape == (1,) and low_res.shape == (1, LOW, LOW)
    masks, _, _ = predictor.predict()  # no prompt at all is allowed, as in the official predictor
    assert masks.shape == (3, H, W)


def test_low_res_mask_is_cropped_and_upscaled_to_the_original_image(model, predictor):
    # Left 5 of 16 low-res columns positive: the edge sits at x = 20 of the 64-pixel input,
    # inside the 43 valid columns, so at x = 20 * 200 / 43 = 93.0 in the original image.
    low_res = torch.where(torch.arange(LOW) < 5, 1.0, -1.0).expand(1, 1, LOW, LOW).contiguous()
    handle = replace_decoder_output(model, low_res)
    masks, _, returned = predictor.predict(multimask_output=False)
    handle.remove()
    np.testing.assert_array_equal(returned, low_res[0].numpy())
    assert masks.shape == (1, H, W) and (masks == masks[:, :1]).all()  # every row the same
    assert masks[0, 0, :91].all() and not masks[0, 0, 96:].any()
    # top 8 of 16 rows positive: the edge sits at y = 32 of 64, i.e. y = 150 in the original image
    low_res = torch.where(torch.arange(LOW)[:, None] < 8, 1.0, -1.0).expand(1, 1, LOW, LOW).contiguous()
    handle = replace_decoder_output(model, low_res)
    masks, _, _ = predictor.predict(multimask_output=False)
    handle.remove()
    assert (masks == masks[:, :, :1]).all() and masks[0, :148, 0].all() and not masks[0, 153:, 0].any()


def test_constant_logits_stay_constant(model, predictor):
    handle = replace_decoder_output(model, torch.full((1, 3, LOW, LOW), 0.25))
    logits, _, _ = predictor.predict(return_logits=True)
    handle.remove()
    np.testing.assert_allclose(logits, 0.25, atol=1e-6)


def test_predict_agrees_with_the_batched_model_forward(model, image, predictor):
    coords, labels = np.array([[100.0, 150.0], [20.0, 30.0]]), np.array([1, 0])
    masks, iou, low_res = predictor.predict(coords, labels, multimask_output=True)
    transform = predictor.transform
    record = {
        "image": torch.as_tensor(transform.apply_image(image)).permute(2, 0, 1).float(),
        "original_size": (H, W),
        "point_coords": torch.as_tensor(transform.apply_coords(coords, (H, W)), dtype=torch.float32)[None],
        "point_labels": torch.as_tensor(labels)[None],
    }
    out = model([record], multimask_output=True)[0]
    np.testing.assert_allclose(out["low_res_logits"][0].numpy(), low_res, atol=1e-5)
    np.testing.assert_allclose(out["iou_predictions"][0].numpy(), iou, atol=1e-5)
    assert out["masks"].shape == (1, 3, H, W)


def test_mask_input_changes_the_prediction(predictor):
    _, _, low_res = predictor.predict(point_coords=[[100, 150]], point_labels=[1])
    _, iou_a, _ = predictor.predict(point_coords=[[100, 150]], point_labels=[1])
    _, iou_b, _ = predictor.predict(point_coords=[[100, 150]], point_labels=[1], mask_input=10 * low_res[:1])
    assert not np.allclose(iou_a, iou_b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"point_coords": [[1, 2]]}, "point_labels: required when point_coords is given"),
        ({"point_labels": [1]}, "point_coords: required when point_labels is given"),
        ({"point_coords": [1, 2], "point_labels": [1]}, "point_coords: expected an Nx2 array .* got shape 2$"),
        ({"point_coords": [[1, 2], [3, 4]], "point_labels": [1]}, "point_labels: expected 2 labels, one per point, got shape 1$"),
        ({"point_coords": [[1, 2]], "point_labels": [4]}, r"point_labels: values must be in \{-1, 0, 1, 2, 3\}, got 4$"),
        (
            {"point_coords": [[201, 2]], "point_labels": [1]},
            r"point_coords: \(201, 2\) is outside the image \(x in \[0, 200\], y in \[0, 300\]\)$",
        ),
        ({"point_coords": [[5, -1]], "point_labels": [1]}, r"point_coords: \(5, -1\) is outside the image"),
        ({"point_coords": [["a", 2]], "point_labels": [1]}, "point_coords: expected an Nx2 array of numbers, got list"),
        ({"point_coords": [[np.nan, 2]], "point_labels": [1]}, "point_coords: contains NaN or infinite values"),
        ({"box": [1, 2, 3]}, "box: expected 4 numbers x1, y1, x2, y2, got shape 3$"),
        ({"box": [50, 2, 10, 30]}, r"box: expected x1 <= x2 and y1 <= y2, got \(50, 2, 10, 30\)"),
        ({"box": [0, 0, 10, 301]}, r"box: \(10, 301\) is outside the image"),
        ({"mask_input": np.zeros((1, 256, 256))}, "mask_input: expected low-res logits of shape 1x16x16 .* got 1x256x256$"),
        ({"mask_input": np.zeros((LOW, LOW))}, "mask_input: .* got 16x16$"),
    ],
)
def test_bad_prompts_are_one_line_input_errors(predictor, kwargs, message):
    with pytest.raises(InputError, match=message) as info:
        predictor.predict(**kwargs)
    assert "\n" not in str(info.value)


def test_points_on_the_image_border_are_accepted(predictor):
    predictor.predict(point_coords=[[0, 0], [W, H]], point_labels=[1, 0])
    predictor.predict(box=[0, 0, W, H])


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 10), np.uint8), "image: expected an HxWx3 uint8 array, got shape 10x10 dtype uint8"),
        (np.zeros((10, 10, 4), np.uint8), "image: expected an HxWx3 uint8 array, got shape 10x10x4 dtype uint8"),
        (np.zeros((10, 10, 3), np.float32), "image: expected an HxWx3 uint8 array, got shape 10x10x3 dtype float32"),
        (np.zeros((0, 10, 3), np.uint8), "got shape 0x10x3"),
        ([[[0, 0, 0]]], "image: expected a numpy array .*, got list"),
    ],
)
def test_bad_images_are_input_errors(model, bad, message):
    with pytest.raises(InputError, match=message):
        SamPredictor(model).set_image(bad)


def test_image_format_and_order_of_calls(model, image):
    predictor = SamPredictor(model)
    with pytest.raises(InputError, match="image_format: must be 'RGB' or 'BGR', got 'rgb'"):
        predictor.set_image(image, image_format="rgb")
    with pytest.raises(InputError, match=r"no image set: call set_image\(...\)"):
        predictor.predict(point_coords=[[1, 2]], point_labels=[1])
    with pytest.raises(InputError, match="no image set"):
        predictor.get_image_embedding()
    predictor.set_image(image)
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.features is None
    with pytest.raises(InputError, match="no image set"):
        predictor.predict_torch(None, None)


def test_set_torch_image_checks_the_resized_shape(model):
    predictor = SamPredictor(model)
    with pytest.raises(InputError, match="transformed_image: expected 1x3xHxW with longer side 64 .* got 1x3x32x40$"):
        predictor.set_torch_image(torch.zeros(1, 3, 32, 40), (32, 40))
    predictor.set_torch_image(torch.zeros(1, 3, 48, 64), (480, 640))
    assert predictor.input_size == (48, 64) and predictor.original_size == (480, 640)
