"""segment_video: outputs, DAVIS scoring protocol, object ids and the checks made before writing."""

import json
import struct

import numpy as np
import pytest
from PIL import Image

from vrpsam.engine import video as engine_video
from vrpsam.engine.video import plan_video, segment_video
from vrpsam.errors import InputError
from vrpsam.io.exports import davis_palette, save_palette_png
from vrpsam.vrp.predictor import Prediction

SIZE = (48, 64)
RED = (220, 30, 30)


def square_at(i, shape=SIZE):
    """The object of frame i: a 16x16 square moving 6 px to the right per frame."""
    mask = np.zeros(shape, bool)
    mask[10:26, 5 + 6 * i : 21 + 6 * i] = True
    return mask


def make_sequence(root, count=6, second_object=False):
    """PNG frames (grey noise, a red square) and DAVIS palette ground truth; returns (frames, gt) folders."""
    frames, gt = root / "frames", root / "gt"
    frames.mkdir(parents=True)
    gt.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 80, (*SIZE, 3), dtype=np.uint8)
        mask = square_at(i)
        image[mask] = RED
        Image.fromarray(image).save(frames / f"{i:05d}.png")
        labels = mask.astype(np.uint8)
        if second_object:
            labels[35:45, 2:12] = 2
        save_palette_png(labels, gt / f"{i:05d}.png")
    return frames, gt


class RedFinder:
    """A stand-in predictor: the red pixels of each frame, optionally moved ``shift`` px to the right."""

    def __init__(self, shift=0):
        self.shift, self.references = shift, []

    def set_reference(self, image, **annotation):
        self.references.append((image, annotation))

    def predict(self, image):
        mask = (image[..., 0] > 150) & (image[..., 1] < 100)
        mask = np.roll(mask, self.shift, axis=1)
        return Prediction(mask=mask, logits=mask.astype(np.float32), score=1.0)


@pytest.fixture
def avi(monkeypatch):
    """Force the Pillow-only Motion-JPEG overlay, whatever is installed."""
    monkeypatch.setattr(engine_video, "overlay_suffix", lambda: ".avi")


def test_outputs_and_perfect_scores(tmp_path, avi):
    frames, gt = make_sequence(tmp_path)
    predictor = RedFinder()
    out = tmp_path / "out"
    result = segment_video(predictor, frames, out, mask=gt / "00000.png", ground_truth=gt, progress=False)
    names = [f"{i:05d}.png" for i in range(6)]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "overlay.avi", "scores.json"])
    assert result.written == [out / n for n in names] + [out / "overlay.avi", out / "scores.json"]
    for i, name in enumerate(names):
        png = Image.open(out / name)
        assert png.mode == "P" and png.size == (SIZE[1], SIZE[0])
        assert np.array_equal(np.asarray(png.getpalette()[:6]).reshape(2, 3), davis_palette(2))
        np.testing.assert_array_equal(np.asarray(png), square_at(i).astype(np.uint8))
    (reference, annotation), = predictor.references
    np.testing.assert_array_equal(reference, np.asarray(Image.open(frames / "00000.png")))
    assert list(annotation) == ["mask"]
    assert struct.unpack_from("<I", (out / "overlay.avi").read_bytes(), 48)[0] == 6  # avih total frames
    scores = json.loads((out / "scores.json").read_text())
    assert scores == result.scores
    # DAVIS protocol: the reference (first) and the last frame are not scored
    assert [f["frame"] for f in scores["per_frame"]] == ["00001", "00002", "00003", "00004"]
    assert scores["frames_scored"] == 4 and scores["object_id"] == 1 and scores["reference_frame"] == "00000"
    assert scores["J"] == {"mean": 1.0, "recall": 1.0, "decay": 0.0} and scores["F"]["mean"] == 1.0
    assert scores["J&F"] == 1.0 and scores["boundary_tolerance_px"] == 1  # ceil(0.008 * 80)
    table = engine_video.format_scores(scores)
    assert table.splitlines()[1].split() == ["mean", "1.000", "1.000", "1.000"]


def test_shifted_prediction_scores(tmp_path, avi):
    frames, gt = make_sequence(tmp_path)
    result = segment_video(RedFinder(shift=4), frames, tmp_path / "out", points=[(12, 17)], ground_truth=gt,
                           overlay=False, progress=False)
    # 16x16 squares 4 px apart: overlap 16*12 = 192, union 2*256 - 192 = 320
    assert [f["J"] for f in result.scores["per_frame"]] == pytest.approx([0.6] * 4)
    assert result.scores["J"]["mean"] == pytest.approx(0.6)
    assert 0 < result.scores["F"]["mean"] < 1  # vertical edges 4 px off, beyond the 1 px tolerance
    assert result.scores["J&F"] == pytest.approx((0.6 + result.scores["F"]["mean"]) / 2)
    assert not (tmp_path / "out" / "overlay.avi").exists()


def test_reference_frame_and_last_frame_choice(tmp_path):
    frames, gt = make_sequence(tmp_path)
    predictor = RedFinder()
    plan = plan_video(frames, tmp_path / "out", reference_frame=2, box=(10, 10, 40, 26), ground_truth=gt)
    assert plan.truth.scored == (0, 1, 3, 4)
    plan = plan_video(frames, tmp_path / "out", reference_frame=2, box=(10, 10, 40, 26), ground_truth=gt,
                      score_last_frame=True, overlay=False)
    assert plan.truth.scored == (0, 1, 3, 4, 5) and "skips the last" in plan.truth.protocol
    result = engine_video.run_video(predictor, plan, progress=False)
    np.testing.assert_array_equal(predictor.references[0][0], np.asarray(Image.open(frames / "00002.png")))
    assert result.scores["frames_scored"] == 5


def test_sparse_ground_truth_scores_only_annotated_frames(tmp_path, avi):
    frames, gt = make_sequence(tmp_path)
    for name in ("00002.png", "00003.png"):
        (gt / name).unlink()
    result = segment_video(RedFinder(), frames, tmp_path / "out", mask=gt / "00000.png", ground_truth=gt,
                           overlay=False, progress=False)
    assert [f["frame"] for f in result.scores["per_frame"]] == ["00001", "00004"]


def test_object_id_picks_one_object_of_palette_masks(tmp_path):
    frames, gt = make_sequence(tmp_path, second_object=True)
    with pytest.raises(InputError, match=r"several objects \(ids 1, 2\)"):
        plan_video(frames, tmp_path / "out", points=[(12, 17)], ground_truth=gt)
    with pytest.raises(InputError, match="--object-id"):  # the palette mask itself is not binary
        plan_video(frames, tmp_path / "out", mask=gt / "00000.png")
    with pytest.raises(InputError, match=r"object id 3: appears in no ground-truth frame .*ids present: 1, 2"):
        plan_video(frames, tmp_path / "out", points=[(12, 17)], ground_truth=gt, object_id=3)
    out = tmp_path / "out"
    result = segment_video(RedFinder(), frames, out, mask=gt / "00000.png", ground_truth=gt, object_id=1,
                           overlay=False, progress=False)
    assert result.scores["object_id"] == 1 and result.scores["J&F"] == 1.0
    plan = plan_video(frames, tmp_path / "two", mask=gt / "00000.png", object_id=2, overlay=False)
    assert plan.annotation.raster.sum() == 100  # the 10x10 object 2 only
    engine_video.run_video(RedFinder(), plan, progress=False)
    assert set(np.unique(np.asarray(Image.open(tmp_path / "two" / "00003.png"))).tolist()) == {0, 2}


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case, message", [
    ("reference out of range", "reference frame 6: out of range"),
    ("negative reference", "reference frame -1: out of range"),
    ("empty mask", r"reference frame 0 \(00000\) --mask .*empty.png: mask: has no foreground"),
    ("box outside", "outside the image"),
    ("two annotations", "exactly one of mask, points, box, scribble"),
    ("no ground truth folder", "no such ground-truth folder"),
    ("ground truth names no frame", "extra.png: names no frame"),
    ("ground truth size", "differs from the frames'"),
    ("only reference and last annotated", "no frame to score"),
    ("out is the ground truth", "would replace an input file"),
    ("bad object id", "object id 0"),
])
def test_errors_come_before_any_file(case, message, tmp_path):
    frames, gt = make_sequence(tmp_path)
    out = tmp_path / "out"
    options = dict(mask=gt / "00000.png", ground_truth=gt)
    if case == "reference out of range":
        options["reference_frame"] = 6
    elif case == "negative reference":
        options["reference_frame"] = -1
    elif case == "empty mask":
        Image.fromarray(np.zeros(SIZE, np.uint8)).save(tmp_path / "empty.png")
        options["mask"] = tmp_path / "empty.png"
    elif case == "box outside":
        options = dict(box=(0, 0, 500, 10))
    elif case == "two annotations":
        options["points"] = [(1, 1)]
    elif case == "no ground truth folder":
        options["ground_truth"] = tmp_path / "nowhere"
    elif case == "ground truth names no frame":
        save_palette_png(square_at(0), gt / "extra.png")
    elif case == "ground truth size":
        save_palette_png(np.ones((10, 10), np.uint8), gt / "00003.png")
    elif case == "only reference and last annotated":
        for i in range(1, 5):
            (gt / f"{i:05d}.png").unlink()
    elif case == "out is the ground truth":
        out = gt
    elif case == "bad object id":
        options["object_id"] = 0
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=message) as error:
        segment_video(RedFinder(), frames, out, progress=False, **options)
    assert "\n" not in str(error.value)
    assert snapshot(tmp_path) == before and (out == gt or not out.exists())


def test_existing_outputs_need_overwrite(tmp_path, avi):
    frames, gt = make_sequence(tmp_path)
    out = tmp_path / "out"
    segment_video(RedFinder(), frames, out, mask=gt / "00000.png", ground_truth=gt, progress=False)
    before = snapshot(out)
    with pytest.raises(InputError, match="already exist; pass --overwrite"):
        segment_video(RedFinder(shift=2), frames, out, mask=gt / "00000.png", ground_truth=gt, progress=False)
    assert snapshot(out) == before
    result = segment_video(RedFinder(shift=2), frames, out, mask=gt / "00000.png", ground_truth=gt,
                           overwrite=True, progress=False)
    assert result.scores["J"]["mean"] < 1 and snapshot(out) != before
