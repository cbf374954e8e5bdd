"""The real datasets in ../shared: COCO128-seg (YOLO polygons) and the FSS-1000 example class."""

from __future__ import annotations

import numpy as np
import torch

from vrpsam.data import (
    COCO_CLASSES,
    EpisodeDataset,
    collate_episodes,
    make_episodes,
    open_source,
    split_fold,
)


def test_coco128_seg_as_a_dataset(shared):
    root = shared("assets/data/coco128-seg")
    source = open_source(f"yolo:{root}")
    # Facts from the asset's SOURCE.txt: 128 images, 71 of the 80 COCO classes, 64 of them in >= 2 images,
    # two background images without a label file, two label files without an image.
    assert source.split == "train2017" and len(source.all_items()) == 128
    assert list(source.classes.values()) == list(COCO_CLASSES) and source.fold_rule == "interleave"
    assert sum(1 for c in source.classes if source.items(c)) == 71
    assert sum(1 for c in source.classes if len(source.items(c)) >= 2) == 64
    assert source.index()["000000000250"] == {} and source.index()["000000000508"] == {}
    assert "000000000656" not in source.index()

    # every image lists exactly the classes of its label file (ids = YOLO index + 1)
    for item in ("000000000009", "000000000025", "000000000030"):
        lines = (root / "labels" / "train2017" / f"{item}.txt").read_text().split("\n")
        classes = {int(line.split()[0]) + 1 for line in lines if line.strip()}
        assert set(source.index()[item]) == classes
        for class_id in classes:
            image, mask = source.load(item, class_id)
            assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 1} and mask.sum() > 0

    # a class with one polygon: the mask spans the polygon's truncated pixel extent exactly, and its
    # area is the polygon's (shoelace) area plus at most one perimeter of boundary pixels
    lines = [line.split() for line in (root / "labels" / "train2017" / "000000000030.txt").read_text().split("\n")]
    for fields in [f for f in lines if f and f[0] in ("58", "75")]:
        mask = source.mask("000000000030", int(fields[0]) + 1)
        h, w = mask.shape
        xy = np.array(fields[1:], dtype=float).reshape(-1, 2) * [w, h]
        rows, cols = np.nonzero(mask)
        assert (cols.min(), cols.max()) == tuple(xy[:, 0].astype(int)[[xy[:, 0].argmin(), xy[:, 0].argmax()]])
        assert (rows.min(), rows.max()) == tuple(xy[:, 1].astype(int)[[xy[:, 1].argmin(), xy[:, 1].argmax()]])
        area = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1)))
        perimeter = np.hypot(*(xy - np.roll(xy, 1, axis=0)).T).sum()
        assert area <= mask.sum() <= area + perimeter


def test_coco128_episodes_and_tensors(shared):
    source = open_source(f"yolo:{shared('assets/data/coco128-seg')}")
    fold = split_fold(source, 1)
    assert fold.test == tuple(range(2, 80, 4))
    episodes = make_episodes(source, fold.test, 20)
    assert episodes == make_episodes(source, fold.test, 20)
    assert all(len(source.items(e.class_id)) >= 2 and e.query != e.supports[0] for e in episodes)
    dataset = EpisodeDataset(source, episodes[:2], size=64, annotation="scribble", original_masks=True)
    batch = collate_episodes([dataset[0], dataset[1]])
    assert batch["query_img"].shape == (2, 3, 64, 64) and batch["support_masks"].shape == (2, 1, 64, 64)
    assert torch.all(batch["support_annotations"] <= batch["support_masks"])
    assert [tuple(m.shape) for m in batch["query_mask_original"]] == [tuple(s) for s in batch["query_size"].tolist()]


def test_fss1000_example_class(shared):
    root = shared("assets/data/fss1000-example")
    source = open_source(f"fss:{root}")
    assert source.classes == {1: "fss1000-example"}
    assert source.items(1) == [f"fss1000-example/{n}" for n in range(1, 6)]
    for n in range(1, 6):
        image, mask = source.load(f"fss1000-example/{n}", 1)
        assert image.shape == (224, 224, 3) and set(np.unique(mask)) == {0, 1}
        assert 0.005 < mask.mean() < 0.5  # an object, neither empty nor everything
    episodes = make_episodes(source, [1], 5, shots=4)
    assert all(len({e.query, *e.supports}) == 5 for e in episodes)
