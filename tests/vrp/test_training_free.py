"""TrainingFreePredictor: same interface as VRPPredictor; PerSAM-style location prior and refinement."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vrpsam.errors import InputError
from vrpsam.vrp.annotations import Annotation
from vrpsam.vrp.build import build_model
from vrpsam.vrp.predictor import Prediction, VRPPredictor
from vrpsam.vrp.training_free import TrainingFreeConfig, TrainingFreePredictor, _cell_coverage, _spread_points

EXAMPLES = "assets/data/persam-examples"
GREY, RED, BLUE = (128, 128, 128), (230, 20, 20), (20, 20, 230)


@pytest.fixture(scope="module")
def tiny_sam():
    return build_model("tiny-random").sam  # 128² input, 8x8 embedding grid


class ColourEncoder(nn.Module):
    """A hand-made "image encoder": each 16x16 cell's mean normalised (r, g, b), a constant 1, zeros.

    Cosine similarity between cells then only depends on their colours, so where the predictor must
    look is known in advance.
    """

    img_size = 128

    def forward(self, x):
        cells = F.avg_pool2d(x, 16)
        b, _, h, w = cells.shape
        return torch.cat([cells, torch.ones(b, 1, h, w), torch.zeros(b, 252, h, w)], 1)


@pytest.fixture(scope="module")
def colour_sam(tiny_sam):
    sam = copy.deepcopy(tiny_sam)
    sam.image_encoder = ColourEncoder()
    return sam


def scene(squares, h=96, w=128):
    """A grey (h, w) image with coloured squares {(y0, y1, x0, x1): colour}, aligned to 16-px cells."""
    image = np.empty((h, w, 3), np.uint8)
    image[:] = GREY
    for (y0, y1, x0, x1), colour in squares.items():
        image[y0:y1, x0:x1] = colour
    return image


def test_same_interface_as_vrp_predictor():
    public = {name for name in dir(VRPPredictor) if not name.startswith("_")} - {"model", "fusion"}
    assert public <= set(dir(TrainingFreePredictor))


def test_real_photos_every_annotation_kind(tiny_sam, shared):
    reference = shared(f"{EXAMPLES}/cat_00.jpg")
    predictor = TrainingFreePredictor(tiny_sam)
    predictor.set_reference(reference, mask=shared(f"{EXAMPLES}/cat_00.png"))
    predictor.add_reference(reference, points=[(640, 640), (500, 700)])
    predictor.add_reference(reference, box=(300, 200, 1000, 1200))
    strokes = np.zeros((1282, 1282), np.uint8)
    strokes[600:610, 300:1000] = 1
    predictor.add_reference(reference, scribble=strokes)
    assert predictor.num_references == 4
    target = shared(f"{EXAMPLES}/cat_01.jpg")
    result = predictor.predict(target)
    assert isinstance(result, Prediction)
    assert result.mask.shape == (1277, 1277) and result.mask.dtype == bool
    assert result.logits.shape == (1277, 1277) and result.logits.dtype == np.float32
    np.testing.assert_array_equal(result.mask, result.logits > 0)
    assert np.isfinite(result.score)
    again = predictor.predict_batch([target], batch_size=2)[0]
    np.testing.assert_array_equal(again.mask, result.mask)


def test_errors_without_reference_and_bad_arguments(tiny_sam):
    predictor = TrainingFreePredictor(tiny_sam)
    with pytest.raises(InputError, match="no reference"):
        predictor.predict(scene({}))
    with pytest.raises(InputError, match="exactly one"):
        predictor.set_reference(scene({}), mask=np.ones((96, 128)), box=(0, 0, 5, 5))
    with pytest.raises(InputError, match="outside the image"):
        predictor.set_reference(scene({}), box=(0, 0, 500, 5))
    predictor.set_reference(scene({}), box=(0, 0, 50, 50))
    with pytest.raises(InputError, match="batch_size"):
        predictor.predict_batch([scene({})], batch_size=0)
    with pytest.raises(InputError, match="refinement_steps"):
        TrainingFreeConfig(refinement_steps=-1)


def test_positive_click_where_similarity_peaks_negative_at_its_minimum(colour_sam):
    predictor = TrainingFreePredictor(colour_sam)
    reference = scene({(16, 48, 16, 48): RED})
    mask = np.zeros((96, 128), bool)
    mask[16:48, 16:48] = True
    predictor.set_reference(reference, mask=mask)
    target = scene({(48, 80, 80, 112): RED, (0, 32, 0, 32): BLUE})
    location = predictor.locate(target)
    assert location.similarity.shape == (96, 128)
    # the reference feature is exactly the red cells' feature, so red cells score cos = 1
    assert location.similarity.max() == pytest.approx(1.0, abs=1e-5)
    (px, py), (nx, ny) = location.points
    assert location.labels.tolist() == [1, 0]
    assert location.similarity[int(py), int(px)] == location.similarity.max()
    assert 80 <= px < 112 and 48 <= py < 80  # inside the red square
    assert 0 <= nx < 32 and 0 <= ny < 32  # inside the blue square, the least red-like
    assert location.similarity[int(ny), int(nx)] == location.similarity.min() < 0


def test_k_shot_averages_normalised_reference_features(colour_sam):
    red = scene({(16, 48, 16, 48): RED})
    blue = scene({(16, 48, 16, 48): BLUE})
    mask = np.zeros((96, 128), bool)
    mask[16:48, 16:48] = True
    predictor = TrainingFreePredictor(colour_sam)
    predictor.set_reference(red, mask=mask)
    f_red = predictor._reference_feature()
    predictor.set_reference(blue, mask=mask)
    f_blue = predictor._reference_feature()
    predictor.add_reference(red, mask=mask)
    expected = F.normalize(f_red + f_blue, dim=0)
    torch.testing.assert_close(predictor._reference_feature(), expected)
    assert f_red.norm().item() == pytest.approx(1.0)


class FakeSam:
    """Records predict() calls and answers with fixed masks: candidate 1 is the best, a 10x20 block."""

    def __init__(self, size=(40, 60), empty=False):
        self.calls = []
        self.size, self.empty = size, empty

    def predict(self, **kwargs):
        self.calls.append(kwargs)
        logits = np.full((3, *self.size), -1.0, np.float32)
        if not self.empty:
            logits[1, 5:15, 20:40] = 2.0
        low_res = np.arange(3 * 32 * 32, dtype=np.float32).reshape(3, 32, 32)
        masks = logits if kwargs.get("return_logits") else logits > 0
        return masks, np.array([0.1, 0.9, 0.3]), low_res


def test_decode_then_cascaded_refinement_by_hand(tiny_sam):
    from vrpsam.vrp.training_free import Location

    predictor = TrainingFreePredictor(tiny_sam, TrainingFreeConfig(refinement_steps=2))
    fake = predictor._sam = FakeSam()
    location = Location(similarity=np.zeros((40, 60), np.float32), points=np.array([[25.0, 8.0], [1.0, 1.0]]),
                        labels=np.array([1, 0]))
    result = predictor._decode(location)
    assert len(fake.calls) == 3
    first, second, third = fake.calls
    assert "mask_input" not in first and first["multimask_output"]
    np.testing.assert_array_equal(first["point_coords"], location.points)
    np.testing.assert_array_equal(second["mask_input"], np.arange(3 * 32 * 32).reshape(3, 32, 32)[1:2])
    assert second["box"] is None
    np.testing.assert_array_equal(third["box"], [20, 5, 39, 14])  # the best mask's inclusive bounds
    assert result.score == pytest.approx(0.9)
    assert result.mask.sum() == 10 * 20


def test_refinement_stops_on_an_empty_mask(tiny_sam):
    from vrpsam.vrp.training_free import Location

    predictor = TrainingFreePredictor(tiny_sam)
    fake = predictor._sam = FakeSam(empty=True)
    location = Location(np.zeros((40, 60), np.float32), np.array([[1.0, 1.0]]), np.array([1]))
    result = predictor._decode(location)
    assert len(fake.calls) == 1 and not result.mask.any()


def test_reference_mask_prompts_sam_like_persam(tiny_sam):
    predictor = TrainingFreePredictor(tiny_sam)
    fake = predictor._sam = FakeSam()
    clicks = Annotation.points([(25, 8), (30, 10)])
    region = predictor.reference_mask(clicks, (40, 60))
    np.testing.assert_array_equal(fake.calls[0]["point_coords"], [[25, 8], [30, 10]])
    np.testing.assert_array_equal(fake.calls[0]["point_labels"], [1, 1])
    assert region.sum() == 200  # SAM's best candidate, not the clicks

    fake.calls.clear()
    predictor.reference_mask(Annotation.boxes([(0, 0, 10, 10), (20, 20, 30, 30)]), (40, 60))
    assert [c["box"].tolist() for c in fake.calls] == [[0, 0, 10, 10], [20, 20, 30, 30]]

    predictor._sam = FakeSam(empty=True)  # SAM finds nothing: fall back to the annotation's own pixels
    fallback = predictor.reference_mask(Annotation.box(0, 0, 10, 5), (40, 60))
    assert fallback.sum() == 50 and fallback[:5, :10].all()


def test_scribble_points_are_spread_over_the_strokes():
    drawn = np.zeros((20, 30), bool)
    drawn[2, 3:25] = True
    drawn[15:18, 10] = True
    points = _spread_points(drawn, 8)
    assert len(points) == 8
    assert all(drawn[int(y), int(x)] for x, y in points)
    assert points[0].tolist() == [3, 2] and points[-1].tolist() == [10, 17]  # both ends of raster order


def test_cell_coverage_by_hand():
    full = np.ones((96, 128), bool)
    coverage = _cell_coverage(full, (96, 128), 128, (8, 8))
    torch.testing.assert_close(coverage[:6], torch.ones(6, 8))  # 96 rows = 6 cells
    torch.testing.assert_close(coverage[6:], torch.zeros(2, 8))  # padding
    dot = np.zeros((96, 128), bool)
    dot[50, 70] = True
    tiny = _cell_coverage(dot, (96, 128), 128, (8, 8))
    assert tiny[3, 4] == pytest.approx(1 / 256) and tiny.sum() == pytest.approx(1 / 256)
