"""Fold rules (PASCAL blocks, COCO interleaving) and the held-out validation split."""

from __future__ import annotations

import pytest

from vrpsam.data import fold_classes, fold_test_classes, open_source, split_fold, validation_split
from vrpsam.errors import InputError


def test_pascal_folds_are_blocks_of_five():
    for fold in range(4):
        assert fold_classes("pascal", fold) == [5 * fold + k for k in range(1, 6)]


def test_coco_folds_interleave():
    assert fold_classes("coco", 1) == list(range(2, 80, 4))
    assert fold_classes("coco", 1)[:3] == [2, 6, 10] and fold_classes("coco", 1)[-1] == 78
    folds = [fold_classes("coco-json", f) for f in range(4)]
    assert all(len(f) == 20 for f in folds) and sorted(sum(folds, [])) == list(range(1, 81))
    for fold, classes in enumerate(folds):
        assert classes == [fold + 4 * v + 1 for v in range(20)]


def test_generic_rules_and_errors():
    assert fold_test_classes([7, 3, 5, 9, 11], 0, 2) == [3, 5, 7]  # numpy.array_split: 3 + 2
    assert fold_test_classes([7, 3, 5, 9, 11], 1, 2, rule="interleave") == [5, 9]
    for bad in [dict(fold=4), dict(fold=-1)]:
        with pytest.raises(InputError):
            fold_classes("pascal", **bad)
    with pytest.raises(InputError):
        fold_classes("fss", 0)
    with pytest.raises(InputError):
        fold_test_classes([1, 2], 0, 3)
    with pytest.raises(InputError):
        fold_test_classes([1, 2, 3, 4], 0, 2, rule="random")


def test_split_fold_on_a_source(pascal_root, yolo_root):
    pascal = open_source(f"pascal:{pascal_root}", split="train")
    fold = split_fold(pascal, 2)
    assert fold.test == (11, 12, 13, 14, 15)
    assert fold.train == tuple(c for c in range(1, 21) if not 11 <= c <= 15)
    yolo = open_source(f"yolo:{yolo_root}")  # 3 named classes: block rule
    assert split_fold(yolo, 0, num_folds=3).test == (1,) and split_fold(yolo, 2, 3).train == (1, 2)


def test_validation_split_by_classes_is_deterministic(pascal_root):
    source = open_source(f"pascal:{pascal_root}", split="train", min_pixels=1)
    train_classes = split_fold(source, 0).train
    train, val = validation_split(source, train_classes, fraction=0.2, seed=5)
    again_train, again_val = validation_split(source, train_classes, fraction=0.2, seed=5)
    assert list(val.classes) == list(again_val.classes) and list(train.classes) == list(again_train.classes)
    assert len(val.classes) == 3 and len(train.classes) == 12  # round(0.2 * 15)
    assert set(val.classes).isdisjoint(train.classes)
    assert set(val.classes) | set(train.classes) == set(train_classes)
    other = {tuple(validation_split(source, train_classes, seed=s)[1].classes) for s in range(8)}
    assert len(other) > 1  # the seed matters


def test_validation_split_by_images_partitions_items(yolo_root):
    source = open_source(f"yolo:{yolo_root}")
    train, val = validation_split(source, fraction=0.5, seed=1, by="images")
    for class_id in source.classes:
        both = train.items(class_id) + val.items(class_id)
        assert sorted(both) == source.items(class_id)
        assert set(train.items(class_id)).isdisjoint(val.items(class_id))
    assert train.classes == val.classes == source.classes
    with pytest.raises(InputError):
        validation_split(source, fraction=1.0)
    with pytest.raises(InputError):
        validation_split(source, by="episodes")
