"""Every dataset layout: class discovery, masks against hand-built expectations, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from dataset_builders import H, W, davis_objects, pascal_labels, rect, write_image, write_mask, yolo_line
from PIL import Image

from vrpsam.data import (
    COCO_CLASSES,
    VOC_CLASSES,
    CocoJsonSource,
    DavisSource,
    FolderSource,
    FssSource,
    PascalSource,
    YoloSource,
    open_source,
)
from vrpsam.data.base import IGNORE
from vrpsam.errors import DataError, InputError


def one_line_error(excinfo, *fragments) -> str:
    """The message of a DataError: one line containing every fragment."""
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, (fragment, message)
    return message


# ---------------------------------------------------------------- PASCAL-5i
def test_pascal_splits_classes_and_masks(pascal_root):
    train = open_source(f"pascal:{pascal_root}", split="train", min_pixels=1)
    val = open_source(f"pascal:{pascal_root}", min_pixels=1)
    assert isinstance(train, PascalSource) and val.split == "val"
    assert train.classes == {i + 1: name for i, name in enumerate(VOC_CLASSES)}
    assert train.all_items() == ["empty", "t1", "t2", "t3"]  # every mask not in val.txt
    assert val.all_items() == ["v1", "v2"]
    assert train.items(1) == ["t1", "t2"] and train.items(6) == ["t1", "t3"] and train.items(2) == []
    assert val.items(1) == ["v1"] and val.items(2) == ["v1", "v2"]

    labels = pascal_labels()["t1"]
    image, mask = train.load("t1", 1)
    assert image.shape == (H, W, 3)
    expected = np.where(labels == 1, 1, np.where(labels == 255, IGNORE, 0))
    np.testing.assert_array_equal(mask, expected)
    assert (mask == IGNORE).sum() == 9 + 8  # the hand-drawn boundary
    np.testing.assert_array_equal(train.mask("t1", 6), np.where(labels == 6, 1, np.where(labels == 255, 255, 0)))


def test_pascal_min_pixels_default_is_pfenet_rule(pascal_root):
    source = open_source(f"pascal:{pascal_root}", split="train")
    assert source.min_pixels == 2048  # no class of a 32x48 image can reach it
    assert all(source.items(c) == [] for c in source.classes)
    counted = open_source(f"pascal:{pascal_root}", split="train", min_pixels=100)
    assert counted.items(1) == ["t2"]  # t1 has 64 pixels of class 1, t2 has 256


def test_pascal_accepts_the_voc2012_folder_itself(pascal_root):
    source = PascalSource(pascal_root / "VOC2012", split="val", min_pixels=1)
    assert source.items(2) == ["v1", "v2"]


def test_pascal_layout_errors(pascal_root, tmp_path):
    with pytest.raises(DataError) as excinfo:
        open_source(f"pascal:{tmp_path / 'nowhere'}")
    one_line_error(excinfo, tmp_path / "nowhere", "missing")

    (tmp_path / "bare" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DataError) as excinfo:
        open_source(f"pascal:{tmp_path / 'bare'}")
    one_line_error(excinfo, tmp_path / "bare" / "VOC2012" / "SegmentationClassAug", "missing",
                   "PASCAL-5i expects DATA/VOC2012/")

    with pytest.raises(DataError) as excinfo:
        open_source(f"pascal:{pascal_root}", split="test")
    one_line_error(excinfo, "'test'", "'train' or 'val'")

    (pascal_root / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").write_text("v1\nv3\n")
    with pytest.raises(DataError) as excinfo:
        open_source(f"pascal:{pascal_root}", min_pixels=1).items(1)
    one_line_error(excinfo, pascal_root / "VOC2012" / "SegmentationClassAug" / "v3.png", "missing")


def test_pascal_rejects_values_that_are_not_classes(pascal_root):
    bad = pascal_root / "VOC2012" / "SegmentationClassAug" / "t2.png"
    write_mask(bad, rect((0, 4), (0, 4), 30))
    with pytest.raises(DataError) as excinfo:
        open_source(f"pascal:{pascal_root}", split="train").items(1)
    one_line_error(excinfo, bad, "value 30 is not a class index")


def test_missing_image_of_a_mask_is_reported(pascal_root):
    (pascal_root / "VOC2012" / "JPEGImages" / "t3.jpg").unlink()
    with pytest.raises(DataError) as excinfo:
        open_source(f"pascal:{pascal_root}", split="train").items(6)
    one_line_error(excinfo, pascal_root / "VOC2012" / "JPEGImages" / "t3.jpg", "missing image")


# ---------------------------------------------------------------- COCO
def test_coco_png_layout(coco_png_root):
    val = open_source(f"coco:{coco_png_root}", min_pixels=1)
    assert val.classes == {i + 1: name for i, name in enumerate(COCO_CLASSES)} and val.fold_rule == "interleave"
    assert val.items(2) == ["COCO_val2014_1", "COCO_val2014_2"] and val.items(80) == ["COCO_val2014_1"]
    assert val.items(1) == []
    np.testing.assert_array_equal(val.mask("COCO_val2014_1", 80), rect((0, 16), (0, 16)))
    train = open_source(f"coco:{coco_png_root}", split="train", min_pixels=1)
    assert train.all_items() == ["COCO_train2014_1"] and train.items(1) == ["COCO_train2014_1"]


def test_coco_png_missing_split_folder(coco_png_root):
    import shutil

    shutil.rmtree(coco_png_root / "MSCOCO14" / "train2014")
    with pytest.raises(DataError) as excinfo:
        open_source(f"coco:{coco_png_root}", split="train")
    one_line_error(excinfo, coco_png_root / "MSCOCO14" / "train2014", "missing", "COCO-20i expects")


PYCOCOTOOLS_NUMPY2 = "ignore:__array__ implementation:DeprecationWarning"


@pytest.mark.filterwarnings(PYCOCOTOOLS_NUMPY2)
def test_coco_json_classes_union_and_crowd(coco_json_path):
    pytest.importorskip("pycocotools")
    source = open_source(f"coco-json:{coco_json_path}", min_pixels=1)
    assert isinstance(source, CocoJsonSource)
    # categories sorted by COCO id (1, 3, 90) become classes 1, 2, 3
    assert source.classes == {1: "person", 2: "car", 3: "toothbrush"}
    assert source.all_items() == ["000001", "000002", "000003"]
    assert source.items(1) == ["000001", "000002"] and source.items(2) == ["000001"] and source.items(3) == ["000003"]

    # COCO polygons cover the continuous area, so polygon (2, 1)-(6, 4) fills columns 2..5, rows 1..3
    person = source.mask("000001", 1)
    np.testing.assert_array_equal(person, rect((1, 4), (2, 6), base=rect((20, 30), (30, 40))))
    car = source.mask("000001", 2)
    expected = rect((10, 20), (10, 20), IGNORE, base=np.zeros((H, W), np.uint8))
    expected[12:16, 12:16] = 1  # the instance wins over the crowd region around it
    np.testing.assert_array_equal(car, expected)
    image, mask = source.load("000003", 3)
    assert image.shape == (H, W, 3) and mask.sum() == 100


@pytest.mark.filterwarnings(PYCOCOTOOLS_NUMPY2)
def test_coco_json_min_pixels_uses_instance_areas(coco_json_path):
    pytest.importorskip("pycocotools")
    source = open_source(f"coco-json:{coco_json_path}", min_pixels=17)
    # person in 000001: area 12 + an instance without 'area' (decoded: 10x10 = 100) = 112; car: 16 (crowd not counted)
    assert source.index()["000001"] == {1: 112, 2: 16}
    assert source.items(1) == ["000001", "000002"] and source.items(2) == []


def test_coco_json_errors(coco_json_path, tmp_path):
    with pytest.raises(DataError) as excinfo:
        CocoJsonSource(coco_json_path, images_dir=tmp_path / "elsewhere")
    one_line_error(excinfo, tmp_path / "elsewhere", "missing image folder")
    broken = tmp_path / "annotations" / "instances_val2017.json"
    broken.parent.mkdir()
    broken.write_text('{"images": [], "annotations": []}')
    (tmp_path / "val2017").mkdir()
    with pytest.raises(DataError) as excinfo:
        CocoJsonSource(broken).classes
    one_line_error(excinfo, broken, "not a COCO instances JSON", "categories")


# ---------------------------------------------------------------- FSS-1000
def test_fss_layout(fss_root):
    source = open_source(f"fss:{fss_root}")
    assert isinstance(source, FssSource)
    assert source.classes == {1: "apple", 2: "zebra"}
    assert source.items(1) == ["apple/1", "apple/2", "apple/3"]
    np.testing.assert_array_equal(source.mask("apple/2", 1), rect((0, 8), (0, 10)))
    np.testing.assert_array_equal(source.mask("apple/2", 2), np.zeros((H, W), np.uint8))
    with pytest.raises(DataError) as excinfo:
        open_source(f"fss:{fss_root}", split="val")
    one_line_error(excinfo, "no splits")


def test_fss_missing_mask(fss_root):
    (fss_root / "zebra" / "2.png").unlink()
    with pytest.raises(DataError) as excinfo:
        open_source(f"fss:{fss_root}").items(1)
    one_line_error(excinfo, fss_root / "zebra" / "2.png", "missing mask")


# ---------------------------------------------------------------- DAVIS
def test_davis_tracks_and_masks(davis_root):
    source = open_source(f"davis:{davis_root}")
    assert isinstance(source, DavisSource)
    assert source.classes == {1: "seqA/1", 2: "seqA/2", 3: "seqB/1"}
    assert source.items(1) == ["seqA/00000", "seqA/00001", "seqA/00002"]
    assert source.items(2) == ["seqA/00001", "seqA/00002"]
    assert source.frames(2) == ["seqA/00000", "seqA/00001", "seqA/00002"]
    values = davis_objects()[("seqA", "00001")][0]
    expected = (values == 2).astype(np.uint8)
    expected[values == 255] = IGNORE
    np.testing.assert_array_equal(source.mask("seqA/00001", 2), expected)
    # a 2016-style grey mask: one object, 255 = foreground (not void)
    np.testing.assert_array_equal(source.mask("seqB/00002", 3), rect((10, 20), (12, 30)))
    assert not source.mask("seqB/00002", 1).any()  # another sequence's track


def test_davis_split_lists_and_missing_list(davis_root):
    val = open_source(f"davis:{davis_root}", split="val")
    assert val.classes == {1: "seqA/1", 2: "seqA/2"}
    with pytest.raises(DataError) as excinfo:
        open_source(f"davis:{davis_root}", split="train").classes
    one_line_error(excinfo, davis_root / "ImageSets" / "2017" / "train.txt", "missing")


def test_davis_single_sequence_folder(tmp_path):
    root = tmp_path / "myclip"
    for f in range(2):
        write_image(root / "JPEGImages" / f"{f:05d}.jpg", f)
        write_mask(root / "Annotations" / f"{f:05d}.png", rect((0, 5 + f), (0, 5)), mode="P")
    source = DavisSource(root)
    assert source.classes == {1: "myclip/1"} and source.items(1) == ["myclip/00000", "myclip/00001"]
    np.testing.assert_array_equal(source.mask("myclip/00001", 1), rect((0, 6), (0, 5)))


# ---------------------------------------------------------------- generic folders
def test_folder_layout_and_size_mismatch(folder_root):
    source = open_source(f"folder:{folder_root}")
    assert isinstance(source, FolderSource)
    assert source.classes == {1: "cat", 2: "dog"} and source.items(2) == ["dog/a", "dog/b", "dog/c"]
    image, mask = source.load("cat/b", 1)
    np.testing.assert_array_equal(image, np.asarray(Image.open(folder_root / "cat" / "images" / "b.png")))
    np.testing.assert_array_equal(mask, rect((1, 11), (5, 25)))

    bad = folder_root / "dog" / "masks" / "c.png"
    write_mask(bad, np.ones((30, 40), np.uint8))
    with pytest.raises(DataError) as excinfo:
        source.load("dog/c", 2)
    one_line_error(excinfo, bad, "30x40", folder_root / "dog" / "images" / "c.png", f"{H}x{W}")


def test_corrupt_image_is_a_data_error_naming_it(folder_root):
    broken = folder_root / "cat" / "images" / "a.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(DataError) as excinfo:
        open_source(f"folder:{folder_root}").image("cat/a")
    one_line_error(excinfo, broken, "not a readable image")


def test_folder_image_without_mask(folder_root):
    write_image(folder_root / "cat" / "images" / "z.jpg", 1)
    with pytest.raises(DataError) as excinfo:
        open_source(f"folder:{folder_root}").classes
    one_line_error(excinfo, folder_root / "cat" / "masks" / "z.png", "missing mask")


# ---------------------------------------------------------------- YOLO-seg
def test_yolo_polygons_rasterised_and_unioned(yolo_root):
    source = open_source(f"yolo:{yolo_root}")
    assert isinstance(source, YoloSource) and source.split == "train"
    assert source.classes == {1: "person", 2: "traffic light", 3: "dog"} and source.fold_rule == "block"
    assert source.all_items() == ["a", "b", "c", "d"]  # d: background image; orphan.txt: ignored
    assert source.items(1) == ["a", "b"] and source.items(2) == [] and source.items(3) == ["a", "c"]
    assert source.index()["d"] == {}
    # vertices (x*W, y*H) truncated, boundary included: x 0.25..0.5 -> columns 12..24, y -> rows 8..16
    expected = rect((8, 17), (12, 25), base=rect((24, 32), (36, 48)))
    np.testing.assert_array_equal(source.mask("a", 1), expected)
    np.testing.assert_array_equal(source.mask("a", 3), rect((0, 5), (0, 7)))
    assert not source.mask("d", 1).any()


@pytest.mark.parametrize("yaml_text", [
    "names: [person, 'traffic light', \"dog\"]\n",
    "names: ['person',\n  'traffic light', 'dog']\nnc: 3\n",
    "names:\n  - person\n  - traffic light  # comment\n  - dog\n",
])
def test_yolo_yaml_name_forms(yolo_root, yaml_text):
    (yolo_root / "data.yaml").write_text(yaml_text)
    assert YoloSource(yolo_root).classes == {1: "person", 2: "traffic light", 3: "dog"}


def test_yolo_without_yaml_numbers_classes(yolo_root):
    (yolo_root / "data.yaml").unlink()
    assert YoloSource(yolo_root).classes == {1: "0", 2: "1", 3: "2"}


def test_yolo_errors(yolo_root):
    with pytest.raises(DataError) as excinfo:
        open_source(f"yolo:{yolo_root}", split="val")
    one_line_error(excinfo, yolo_root / "images" / "val", "missing")

    (yolo_root / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # a detection box, not a polygon
    with pytest.raises(DataError) as excinfo:
        open_source(f"yolo:{yolo_root}").items(1)
    one_line_error(excinfo, yolo_root / "labels" / "train" / "b.txt", ":1:", "YOLO-seg polygon")

    (yolo_root / "labels" / "train" / "b.txt").write_text(yolo_line(0, 0.5, 0.5, 1.5, 1.0) + "\n")
    with pytest.raises(DataError) as excinfo:
        open_source(f"yolo:{yolo_root}").items(1)
    one_line_error(excinfo, "b.txt:1:", "normalised")

    (yolo_root / "labels" / "train" / "b.txt").write_text(yolo_line(7, 0.5, 0.5, 1.0, 1.0) + "\n")
    with pytest.raises(DataError) as excinfo:
        open_source(f"yolo:{yolo_root}").classes
    one_line_error(excinfo, "b.txt", "class index 7 has no name", "data.yaml")


# ---------------------------------------------------------------- open_source and views
def test_open_source_rejects_unknown_kinds_and_missing_paths(tmp_path):
    for spec, fragment in [("nonsense:/x", "unknown kind 'nonsense'"), ("no-colon", "KIND:PATH"),
                           (f"yolo:{tmp_path / 'absent'}", tmp_path / "absent")]:
        with pytest.raises(DataError) as excinfo:
            open_source(spec)
        one_line_error(excinfo, fragment)


def test_restricted_view(pascal_root):
    source = open_source(f"pascal:{pascal_root}", split="train", min_pixels=1)
    view = source.restrict([6], items=["t1", "t2"])
    assert view.classes == {6: "bus"} and view.items(6) == ["t1"]
    with pytest.raises(InputError):
        view.items(1)
    with pytest.raises(InputError):
        source.restrict([21])
    np.testing.assert_array_equal(view.mask("t1", 6), source.mask("t1", 6))


def test_index_cache_is_reused_and_invalidated(pascal_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = open_source(f"pascal:{pascal_root}", split="train", min_pixels=1, index_cache=cache)
    assert first.items(1) == ["t1", "t2"]
    assert len(list(cache.glob("index-*.json"))) == 1
    assert not any(p.suffix == ".tmp" for p in cache.iterdir())

    def no_scan(self, item):
        raise AssertionError("the cached index should have been used")

    monkeypatch.setattr(PascalSource, "_count", no_scan)
    again = open_source(f"pascal:{pascal_root}", split="train", min_pixels=1, index_cache=cache)
    assert again.items(6) == ["t1", "t3"]
    monkeypatch.undo()

    write_mask(pascal_root / "VOC2012" / "SegmentationClassAug" / "t3.png", rect((0, 32), (0, 48), 1))
    changed = open_source(f"pascal:{pascal_root}", split="train", min_pixels=1, index_cache=cache)
    assert changed.items(1) == ["t1", "t2", "t3"] and changed.items(6) == ["t1"]


def test_view_marks_its_ignored_classes_as_ignore(yolo_root):
    # e: a person over the whole photo and a dog in its top-left corner, overlapping it.
    write_image(yolo_root / "images" / "train" / "e.jpg", 90)
    (yolo_root / "labels" / "train" / "e.txt").write_text(yolo_line(0, 0.0, 0.0, 1.0, 1.0) + "\n"
                                                           + yolo_line(2, 0.0, 0.0, 0.125, 0.125) + "\n")
    source = open_source(f"yolo:{yolo_root}")
    dogs = source.restrict([3], ignored=[1])
    assert dogs.classes == {3: "dog"} and dogs.items(3) == ["a", "c", "e"]
    person, dog = source.mask("a", 1), source.mask("a", 3)
    np.testing.assert_array_equal(dogs.mask("a", 3), np.where(person == 1, IGNORE, dog))
    assert (dogs.mask("a", 3) == 1).sum() == dog.sum() > 0 and (dogs.mask("a", 3) == IGNORE).sum() == person.sum() > 0
    np.testing.assert_array_equal(dogs.mask("c", 3), source.mask("c", 3))  # no person in c
    # where the ignored class overlaps the requested one, the requested class keeps its pixels
    np.testing.assert_array_equal(dogs.mask("e", 3), np.where(source.mask("e", 3) == 1, 1, IGNORE))
    for ignored in ([3], [4]):  # the view's own class; not a class of the source
        with pytest.raises(InputError, match="ignored classes"):
            source.restrict([3], ignored=ignored)
