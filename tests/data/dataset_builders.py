"""Tiny on-disk datasets in every supported layout, built in tmp_path (images are 32x48 unless noted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

H, W = 32, 48


def write_image(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """A random RGB image (JPEG or PNG by suffix); returns the pixels as they were generated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def write_mask(path: Path, values: np.ndarray, mode: str = "L") -> None:
    """A mask PNG: grey ('L') or palette ('P', with a VOC-like palette)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.ascontiguousarray(values, dtype=np.uint8)
    image = Image.frombytes(mode, (values.shape[1], values.shape[0]), values.tobytes())
    if mode == "P":
        palette = np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8)
        palette[:3] = 0
        image.putpalette(palette.tolist())
    image.save(path)


def rect(rows: tuple[int, int], cols: tuple[int, int], value: int = 1, size=(H, W), base=None) -> np.ndarray:
    out = np.zeros(size, np.uint8) if base is None else base.copy()
    out[rows[0]:rows[1], cols[0]:cols[1]] = value
    return out


# ---------------------------------------------------------------- PASCAL-5i
def pascal_labels() -> dict[str, np.ndarray]:
    t1 = rect((0, 8), (0, 8), 1)
    t1[8, 0:9] = 255  # boundary under the object
    t1[:, 8] = np.where(np.arange(H) < 9, 255, t1[:, 8])
    t1 = rect((16, 32), (24, 48), 6, base=t1)
    return {
        "t1": t1,
        "t2": rect((4, 20), (4, 20), 1),
        "t3": rect((16, 32), (0, 48), 6),
        "v1": rect((0, 10), (30, 40), 2, base=rect((20, 30), (0, 10), 1)),
        "v2": rect((5, 25), (5, 25), 2),
        "empty": np.zeros((H, W), np.uint8),
    }


@pytest.fixture
def pascal_root(tmp_path) -> Path:
    """DATA/VOC2012 with 4 training ids (one without any class) and 2 val ids; palette masks."""
    voc = tmp_path / "pascal" / "VOC2012"
    for i, (name, labels) in enumerate(pascal_labels().items()):
        write_image(voc / "JPEGImages" / f"{name}.jpg", i)
        write_mask(voc / "SegmentationClassAug" / f"{name}.png", labels, mode="P")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("v1\nv2\n")
    return tmp_path / "pascal"


# ---------------------------------------------------------------- COCO (HSNet PNGs)
@pytest.fixture
def coco_png_root(tmp_path) -> Path:
    base = tmp_path / "coco" / "MSCOCO14"
    labels = {
        ("val2014", "COCO_val2014_1"): rect((0, 16), (0, 16), 80, base=rect((16, 32), (0, 48), 2)),
        ("val2014", "COCO_val2014_2"): rect((0, 32), (0, 24), 2),
        ("train2014", "COCO_train2014_1"): rect((0, 32), (0, 24), 1),
    }
    for i, ((split, name), values) in enumerate(labels.items()):
        write_image(base / split / f"{name}.jpg", i)
        write_mask(base / "annotations" / split / f"{name}.png", values)
    return tmp_path / "coco"


# ---------------------------------------------------------------- COCO JSON
def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of zeros."""
    flat = mask.ravel(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def polygon(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def ann(ann_id, image_id, category_id, segmentation, area=None, iscrowd=0) -> dict:
    """A COCO annotation; without ``area`` the key is left out (the source then decodes the mask)."""
    out = {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation,
           "iscrowd": iscrowd}
    return out if area is None else {**out, "area": area}


@pytest.fixture
def coco_json_path(tmp_path) -> Path:
    """annotations/instances_val2017.json with images in val2017/; categories 1, 3, 90 (-> classes 1, 2, 3)."""
    root = tmp_path / "cocojson"
    for i, name in enumerate(("000001", "000002", "000003")):
        write_image(root / "val2017" / f"{name}.jpg", 10 + i)
    crowd = rect((10, 20), (10, 20))
    data = {
        "images": [{"id": 1, "file_name": "000001.jpg", "height": H, "width": W},
                   {"id": 2, "file_name": "000002.jpg", "height": H, "width": W},
                   {"id": 7, "file_name": "000003.jpg", "height": H, "width": W}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            # two person instances in image 1: the class mask is their union
            ann(1, 1, 1, [polygon(2, 1, 6, 4)], area=12),
            ann(2, 1, 1, [polygon(30, 20, 40, 30)]),
            # a car instance inside a crowd region of cars
            ann(3, 1, 3, [polygon(12, 12, 16, 16)], area=16),
            ann(4, 1, 3, uncompressed_rle(crowd), area=100, iscrowd=1),
            ann(5, 2, 1, [polygon(0, 0, 48, 32)], area=1536),
            ann(6, 7, 90, [polygon(0, 0, 10, 10)], area=100),
        ],
    }
    path = root / "annotations" / "instances_val2017.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------- FSS-1000
@pytest.fixture
def fss_root(tmp_path) -> Path:
    root = tmp_path / "fss"
    for c, name in enumerate(("zebra", "apple")):
        for n in (1, 2, 3):
            write_image(root / name / f"{n}.jpg", 20 + 3 * c + n)
            write_mask(root / name / f"{n}.png", rect((0, 4 * n), (0, 10), 255))
    return root


# ---------------------------------------------------------------- DAVIS
def davis_objects() -> dict[tuple[str, str], tuple[np.ndarray, str]]:
    """(seq, frame) -> (values, PIL mode): seqA is a 2017-style palette sequence, seqB a 2016 binary one."""
    frames = {}
    for f in range(3):
        a = rect((0, 10), (0, 10 + 5 * f), 1)
        if f >= 1:
            a = rect((20, 30), (30, 40), 2, base=a)  # object 2 enters at frame 1
        a[31, 47] = 255  # void
        frames[("seqA", f"{f:05d}")] = (a, "P")
        frames[("seqB", f"{f:05d}")] = (rect((10, 20), (10 + f, 30), 255), "L")
    return frames


@pytest.fixture
def davis_root(tmp_path) -> Path:
    root = tmp_path / "davis"
    for i, ((seq, frame), (values, mode)) in enumerate(davis_objects().items()):
        write_image(root / "JPEGImages" / "480p" / seq / f"{frame}.jpg", 40 + i)
        write_mask(root / "Annotations" / "480p" / seq / f"{frame}.png", values, mode)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("seqA\n")
    return root


# ---------------------------------------------------------------- generic folders
@pytest.fixture
def folder_root(tmp_path) -> Path:
    root = tmp_path / "mine"
    for c, name in enumerate(("dog", "cat")):
        for n, stem in enumerate(("a", "b", "c")):
            write_image(root / name / "images" / f"{stem}.png", 60 + 3 * c + n)
            write_mask(root / name / "masks" / f"{stem}.png", rect((n, 10 + n), (5, 25), 1))
    return root


# ---------------------------------------------------------------- YOLO-seg
def yolo_line(class_index: int, x0, y0, x1, y1) -> str:
    return f"{class_index} {x0} {y0} {x1} {y0} {x1} {y1} {x0} {y1}"


@pytest.fixture
def yolo_root(tmp_path) -> Path:
    """images/train/{a,b,c,d}.jpg; d has no label file; an orphan label file without image."""
    root = tmp_path / "yolo"
    for i, stem in enumerate("abcd"):
        write_image(root / "images" / "train" / f"{stem}.jpg", 80 + i)
    labels = root / "labels" / "train"
    labels.mkdir(parents=True)
    # x 0.25..0.5 of 48 px -> columns 12..24, y 0.25..0.5 of 32 px -> rows 8..16 (boundary included)
    (labels / "a.txt").write_text(yolo_line(0, 0.25, 0.25, 0.5, 0.5) + "\n" + yolo_line(0, 0.75, 0.75, 1.0, 1.0)
                                  + "\n" + yolo_line(2, 0.0, 0.0, 0.125, 0.125) + "\n")
    (labels / "b.txt").write_text(yolo_line(0, 0.0, 0.0, 0.5, 0.5) + "\n\n")
    (labels / "c.txt").write_text(yolo_line(2, 0.5, 0.5, 1.0, 1.0) + "\n")
    (labels / "orphan.txt").write_text(yolo_line(1, 0.0, 0.0, 1.0, 1.0) + "\n")
    (root / "data.yaml").write_text("path: ../yolo  # root\ntrain: images/train\nnames:\n  0: person\n"
                                    "  1: 'traffic light'\n  2: dog # a comment\n")
    return root
