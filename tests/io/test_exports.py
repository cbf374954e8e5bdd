"""Mask exports: PNG, overlay, COCO RLE and results entries, palette PNG; atomic writes."""

import json

import numpy as np
import pytest
from PIL import Image

from vrpsam.errors import InputError
from vrpsam.io import exports
from vrpsam.io.images import load_image, load_mask


def blob(h=30, w=40):
    mask = np.zeros((h, w), bool)
    mask[5:20, 10:35] = True
    mask[22:25, 2:4] = True
    return mask


def test_mask_png_is_single_channel_0_255_at_the_mask_size(tmp_path):
    mask = blob()
    path = exports.save_mask_png(mask, tmp_path / "m.png")
    image = Image.open(path)
    assert image.mode == "L" and image.size == (40, 30)
    pixels = np.asarray(image)
    assert set(np.unique(pixels).tolist()) == {0, 255}
    np.testing.assert_array_equal(pixels == 255, mask)
    # {0, 1} input means the same mask
    exports.save_mask_png(mask.astype(np.uint8), tmp_path / "m01.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m01.png")), pixels)


def test_mask_png_refuses_soft_masks_and_odd_suffixes(tmp_path):
    with pytest.raises(InputError, match="binary"):
        exports.save_mask_png(np.array([[0, 1], [2, 3]]), tmp_path / "m.png")
    with pytest.raises(InputError, match="unsupported file type"):
        exports.save_mask_png(blob(), tmp_path / "m.gif")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    def explode(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        exports.save_mask_png(blob(), tmp_path / "m.png")
    assert list(tmp_path.iterdir()) == []


def test_overwriting_replaces_the_file_whole(tmp_path):
    path = tmp_path / "m.png"
    exports.save_mask_png(blob(), path)
    exports.save_mask_png(~blob(), path)
    np.testing.assert_array_equal(np.asarray(Image.open(path)) == 255, ~blob())
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_rle_small_masks_by_hand():
    # Column-major runs, starting with zeros. [[0,1],[0,1]]: 0,0 | 1,1 -> runs [2, 2] -> "22".
    assert exports.mask_to_rle(np.array([[0, 1], [0, 1]], bool)) == {"size": [2, 2], "counts": "22"}
    # [[1,1],[0,1]]: 1,0 | 1,1 -> runs [0, 1, 1, 2]; the 4th is stored as 2 - 1 (delta to two back) -> "0111".
    assert exports.mask_to_rle(np.array([[1, 1], [0, 1]], bool)) == {"size": [2, 2], "counts": "0111"}


def test_rle_round_trips_a_real_mask_and_is_json_ready(shared):
    mask = load_mask(shared("assets/data/persam-examples/cat_00.png")) > 0
    rle = exports.mask_to_rle(mask)
    assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
    back = exports.rle_to_mask(json.loads(json.dumps(rle)))
    assert back.dtype == bool
    np.testing.assert_array_equal(back, mask)
    # bytes counts (pycocotools' own output) decode too
    np.testing.assert_array_equal(exports.rle_to_mask({**rle, "counts": rle["counts"].encode()}), mask)


def test_rle_errors_are_one_line():
    with pytest.raises(InputError, match="'size'"):
        exports.rle_to_mask({"counts": "22"})
    with pytest.raises(InputError, match="uncompressed"):
        exports.rle_to_mask({"size": [2, 2], "counts": [2, 2]})


def test_coco_result_fields_by_hand():
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:7] = True  # 3 rows x 5 columns at x=2, y=1
    entry = exports.coco_result(mask, image_id=7, score=0.25, category_id=3, file_name="a/b.jpg", mask_file="b.png")
    assert entry["image_id"] == 7 and entry["category_id"] == 3 and entry["score"] == 0.25
    assert entry["height"] == 6 and entry["width"] == 8
    assert entry["area"] == 15 and entry["bbox"] == [2.0, 1.0, 5.0, 3.0]
    assert entry["file_name"] == "a/b.jpg" and entry["mask_file"] == "b.png"
    np.testing.assert_array_equal(exports.rle_to_mask(entry["segmentation"]), mask)
    json.dumps(entry)  # plain JSON types only


def test_overlay_tints_inside_outlines_border_keeps_outside():
    image = np.full((10, 12, 3), 100, np.uint8)
    mask = np.zeros((10, 12), bool)
    mask[2:8, 3:9] = True
    out = exports.overlay(image, mask, color=(200, 0, 50), alpha=0.5)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    np.testing.assert_array_equal(out[4, 5], [150, 50, 75])  # interior: (100 + colour) / 2
    np.testing.assert_array_equal(out[2, 5], [200, 0, 50])  # top edge: full colour
    np.testing.assert_array_equal(out[5, 8], [200, 0, 50])  # right edge


def test_save_overlay_writes_a_jpeg_of_the_image_size(tmp_path, shared):
    image = load_image(shared("assets/data/persam-examples/cat_00.jpg"))
    mask = load_mask(shared("assets/data/persam-examples/cat_00.png")) > 0
    path = exports.save_overlay(image, mask, tmp_path / "o.jpg")
    written = Image.open(path)
    assert written.format == "JPEG" and written.size == (image.shape[1], image.shape[0])
    with pytest.raises(InputError, match="differs"):
        exports.save_overlay(image, mask[:-1], tmp_path / "bad.jpg")


def test_davis_palette_matches_the_voc_colour_map():
    palette = exports.davis_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    expected = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128],
                [0, 128, 128], [128, 128, 128], [64, 0, 0], [192, 0, 0]]
    np.testing.assert_array_equal(palette[:10], expected)
    assert len({tuple(c) for c in palette}) == 256


def test_palette_png_keeps_object_ids(tmp_path):
    labels = np.zeros((5, 7), np.int64)
    labels[1:3, 1:3] = 1
    labels[3:, 4:] = 2
    path = exports.save_palette_png(labels, tmp_path / "ids.png")
    image = Image.open(path)
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), labels)
    assert image.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    with pytest.raises(InputError, match="0..255"):
        exports.save_palette_png(np.full((2, 2), 300), tmp_path / "bad.png")
    with pytest.raises(InputError, match="integer"):
        exports.save_palette_png(np.zeros((2, 2), np.float32), tmp_path / "bad.png")


def test_save_json_is_atomic_utf8(tmp_path):
    path = exports.save_json([{"file_name": "café.jpg"}], tmp_path / "r.json")
    assert json.loads(path.read_text("utf-8")) == [{"file_name": "café.jpg"}]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
