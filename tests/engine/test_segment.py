"""segment_targets and its parts: target discovery, output planning, prefetching, files written."""

import json
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from vrpsam.engine import segment
from vrpsam.engine.segment import find_targets, plan_outputs, prefetched, segment_targets
from vrpsam.errors import InputError
from vrpsam.io.exports import rle_to_mask
from vrpsam.vrp.predictor import Prediction

EXAMPLES = "assets/data/persam-examples"


class LeftHalf:
    """A stand-in predictor: the left half of every image, score = its width / 1000."""

    def __init__(self):
        self.seen = []

    def predict(self, image):
        self.seen.append(image.shape)
        mask = np.zeros(image.shape[:2], bool)
        mask[:, : image.shape[1] // 2] = True
        return Prediction(mask=mask, logits=mask.astype(np.float32), score=image.shape[1] / 1000)


def small_images(folder, names, size=(20, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / name)
    return [folder / n for n in names]


def test_find_targets_files_folders_globs_in_order(tmp_path):
    small_images(tmp_path / "dir", ["b.jpg", "a.png", "c.JPG"])
    (tmp_path / "dir" / "notes.txt").write_text("not an image")
    small_images(tmp_path / "dir" / "sub", ["deep.jpg"])
    single = small_images(tmp_path, ["z.jpg"])[0]
    found = find_targets([single, tmp_path / "dir", str(tmp_path / "dir" / "*.png")])
    assert [p.name for p in found] == ["z.jpg", "a.png", "b.jpg", "c.JPG"]  # a.png named twice, kept once
    deep = find_targets([str(tmp_path / "dir" / "**" / "*.jpg")])
    assert "deep.jpg" in [p.name for p in deep]


@pytest.mark.parametrize("spec, message", [
    ("missing.jpg", "no such target"),
    ("empty", "folder has no images"),
    ("*.webp", "matches no image"),
    ("broken.jpg", "not a readable image"),
])
def test_find_targets_errors(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.jpg").write_text("not a jpeg")
    with pytest.raises(InputError, match=message):
        find_targets([spec])


def test_same_stem_from_two_folders_is_refused(tmp_path):
    with pytest.raises(InputError, match="would both write"):
        plan_outputs([tmp_path / "a" / "x.jpg", tmp_path / "b" / "X.png"], tmp_path / "out")


def test_plan_puts_masks_overlays_and_json_where_documented(tmp_path):
    plan = plan_outputs([tmp_path / "t.jpg"], tmp_path / "out")
    assert plan.masks == (tmp_path / "out" / "t.png",)
    assert plan.overlays == (tmp_path / "out" / "overlays" / "t.jpg",)
    assert plan.coco_json == tmp_path / "out" / "results.coco.json"
    bare = plan_outputs([tmp_path / "t.jpg"], tmp_path / "out", overlays=False, coco_json=False)
    assert bare.paths() == [tmp_path / "out" / "t.png"]


def test_output_may_never_replace_a_target(tmp_path):
    targets = small_images(tmp_path, ["t.png"])
    with pytest.raises(InputError, match="replace a target"):
        segment_targets(LeftHalf(), targets, tmp_path, overwrite=True, progress=False)


def test_prefetch_keeps_order_and_stays_bounded():
    loaded, consumed = [], []
    ahead = []

    def load(i):
        loaded.append(i)
        ahead.append(len(loaded) - len(consumed))
        return i * 10

    for item, value in prefetched(list(range(12)), load, depth=2):
        time.sleep(0.002)  # a slow consumer lets the loader run ahead as far as it may
        consumed.append(item)
        assert value == item * 10
    assert consumed == list(range(12))
    assert max(ahead) <= 2 + 2  # queue depth, plus the item the consumer holds and the one being loaded


def test_prefetch_raises_the_loaders_error_at_its_item_and_stops():
    def load(i):
        if i == 2:
            raise InputError("bad item 2")
        return i

    got = []
    with pytest.raises(InputError, match="bad item 2"):
        for item, _ in prefetched(range(5), load):
            got.append(item)
    assert got == [0, 1]
    assert not any(t.name == "vrpsam-prefetch" for t in threading.enumerate())


def test_segment_targets_writes_masks_overlays_and_coco(tmp_path, shared):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("cat_01.jpg", "cat_02.jpg"):
        shutil.copy(shared(f"{EXAMPLES}/{name}"), folder / name)
    targets = find_targets([folder])
    out = tmp_path / "out"
    written = segment_targets(LeftHalf(), targets, out, progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "cat_01.png", "cat_02.png", "overlays/cat_01.jpg", "overlays/cat_02.jpg", "results.coco.json"]
    results = json.loads((out / "results.coco.json").read_text())
    assert [r["image_id"] for r in results] == [1, 2]
    for target, entry in zip(targets, results):
        with Image.open(target) as image:
            width, height = image.size
        mask = np.asarray(Image.open(out / f"{target.stem}.png")) == 255
        assert mask.shape == (height, width)
        np.testing.assert_array_equal(rle_to_mask(entry["segmentation"]), mask)
        assert mask[:, : width // 2].all() and not mask[:, width // 2 :].any()
        assert entry["file_name"] == str(target) and entry["mask_file"] == f"{target.stem}.png"
        assert (entry["height"], entry["width"]) == (height, width) and entry["score"] == width / 1000
        assert Image.open(out / "overlays" / f"{target.stem}.jpg").size == (width, height)
    assert not list(out.rglob(".*.part"))


def test_existing_outputs_stop_the_run_before_any_write(tmp_path):
    targets = small_images(tmp_path / "in", ["a.jpg", "b.jpg"])
    out = tmp_path / "out"
    segment_targets(LeftHalf(), targets, out, overlays=False, progress=False)
    (out / "a.png").write_bytes(b"keep me")
    (out / "b.png").unlink()
    with pytest.raises(InputError, match="already exist.*--overwrite"):
        segment_targets(LeftHalf(), targets, out, overlays=False, progress=False)
    assert (out / "a.png").read_bytes() == b"keep me" and not (out / "b.png").exists()
    segment_targets(LeftHalf(), targets, out, overlays=False, progress=False, overwrite=True)
    assert Image.open(out / "a.png").mode == "L"


def test_a_failure_midway_leaves_only_whole_files(tmp_path):
    targets = small_images(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])

    class FailsOnSecond(LeftHalf):
        def predict(self, image):
            if len(self.seen) == 1:
                raise KeyboardInterrupt
            return super().predict(image)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment_targets(FailsOnSecond(), targets, out, progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.png", "overlays/a.jpg"]


def test_manual_shards_split_targets_and_need_a_group_for_the_json(tmp_path):
    targets = small_images(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])
    with pytest.raises(InputError, match="torchrun"):
        segment_targets(LeftHalf(), targets, tmp_path / "out", shard=(1, 2), progress=False)
    assert not (tmp_path / "out").exists()
    written = segment_targets(LeftHalf(), targets, tmp_path / "out", shard=(1, 2), coco_json=False,
                              overlays=False, progress=False)
    assert [p.name for p in written] == ["b.png"]
    with pytest.raises(InputError, match="rank < world"):
        segment_targets(LeftHalf(), targets, tmp_path / "out", shard=(2, 2), progress=False)


def test_reads_run_ahead_of_the_model(tmp_path, monkeypatch):
    targets = small_images(tmp_path / "in", ["a.jpg", "b.jpg", "c.jpg"])
    loads = []
    original = segment.load_image
    monkeypatch.setattr(segment, "load_image", lambda p: loads.append(p.name) or original(p))

    class Slow(LeftHalf):
        def predict(self, image):
            if not self.seen:
                deadline = time.time() + 5
                while len(loads) < 2 and time.time() < deadline:  # the next image arrives meanwhile
                    time.sleep(0.005)
                assert len(loads) >= 2
            return super().predict(image)

    segment_targets(Slow(), targets, tmp_path / "out", progress=False)
    assert loads == ["a.jpg", "b.jpg", "c.jpg"]
