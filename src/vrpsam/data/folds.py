"""Class folds (train classes vs test classes) and the validation set held out for model selection.

Fold rules, over the source's class ids in increasing order, for fold ``f`` of ``n``:

- ``block`` (PASCAL-5i and every source without a standard): the ``f``-th of ``n`` consecutive,
  near-equal blocks (``numpy.array_split``). PASCAL fold f tests classes 5f+1..5f+5.
- ``interleave`` (COCO-20i, and YOLO data with the 80 COCO names): every ``n``-th class starting at
  the ``f``-th. COCO fold f tests classes {f + 4v + 1 : v = 0..19}.

A fold's training classes are all the others. The official code selects the best epoch on the test
fold; :func:`validation_split` instead holds out part of the *training* data, deterministically:

- ``by="classes"`` (default): ``round(fraction * n)`` of the ``n`` training classes (at least 1, at
  most n - 1), chosen by ``numpy.random.default_rng(seed).permutation``; validation then measures
  generalisation to unseen classes, as the test fold does;
- ``by="images"``: every image whose hash ``sha256(f"{seed}/{item}")`` falls below ``fraction``;
  all training classes stay in training, and an image's side never changes when others are added.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import InputError
from .base import SegmentationSource, SourceView

FOLD_RULES = ("block", "interleave")
# The benchmarks' class ids and fold rules, for use without opening the data.
BENCHMARK_CLASSES = {"pascal": ("block", range(1, 21)), "coco": ("interleave", range(1, 81)),
                     "coco-json": ("interleave", range(1, 81))}


@dataclass(frozen=True)
class Fold:
    """The classes of one fold: ``test`` are held out, ``train`` are all the others."""

    fold: int
    num_folds: int
    train: tuple[int, ...]
    test: tuple[int, ...]


def fold_test_classes(class_ids: Iterable[int], fold: int, num_folds: int = 4, rule: str = "block") -> list[int]:
    """The test classes of ``fold`` under ``rule`` (see the module docstring)."""
    ids = sorted(set(int(c) for c in class_ids))
    if rule not in FOLD_RULES:
        raise InputError(f"fold rule {rule!r}: expected one of {', '.join(FOLD_RULES)}")
    if num_folds < 1 or len(ids) < num_folds:
        raise InputError(f"num_folds {num_folds}: need 1 <= num_folds <= number of classes ({len(ids)})")
    if not 0 <= fold < num_folds:
        raise InputError(f"fold {fold}: expected 0..{num_folds - 1}")
    if rule == "interleave":
        return ids[fold::num_folds]
    return [int(c) for c in np.array_split(np.array(ids), num_folds)[fold]]


def fold_classes(kind: str, fold: int, num_folds: int = 4) -> list[int]:
    """Test classes of a benchmark's fold without opening the data: ``pascal``, ``coco`` or ``coco-json``."""
    if kind not in BENCHMARK_CLASSES:
        raise InputError(f"fold_classes: {kind!r} has no standard classes ({', '.join(BENCHMARK_CLASSES)}); "
                         f"use split_fold(source, fold)")
    rule, ids = BENCHMARK_CLASSES[kind]
    return fold_test_classes(ids, fold, num_folds, rule)


def split_fold(source: SegmentationSource, fold: int, num_folds: int = 4) -> Fold:
    """The train/test classes of ``fold`` over all of ``source``'s classes, by its ``fold_rule``."""
    test = fold_test_classes(source.classes, fold, num_folds, source.fold_rule)
    train = [c for c in source.classes if c not in set(test)]
    return Fold(fold, num_folds, tuple(train), tuple(test))


def _unit_hash(seed: int, item: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, item)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{item}".encode()).digest()[:8], "big") / 2**64


def validation_split(source: SegmentationSource, classes: Iterable[int] | None = None, *, fraction: float = 0.2,
                     seed: int = 0, by: str = "classes") -> tuple[SourceView, SourceView]:
    """(train view, validation view) of ``classes`` of ``source`` (default: all), held out as documented."""
    if not 0 < fraction < 1:
        raise InputError(f"fraction {fraction}: expected a number strictly between 0 and 1")
    ids = sorted(set(int(c) for c in (source.classes if classes is None else classes)))
    if by == "classes":
        if len(ids) < 2:
            raise InputError(f"validation_split by classes needs >= 2 classes, got {len(ids)}")
        count = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
        order = np.random.default_rng(seed).permutation(len(ids))
        held = sorted(ids[i] for i in order[:count])
        kept = [c for c in ids if c not in held]
        return (source.restrict(kept, label=f"training classes, seed {seed}"),
                source.restrict(held, label=f"validation classes, seed {seed}"))
    if by == "images":
        items = {item for c in ids for item in source.items(c)}
        held_items = {item for item in items if _unit_hash(seed, item) < fraction}
        return (source.restrict(ids, items - held_items, label=f"training images, seed {seed}"),
                source.restrict(ids, held_items, label=f"validation images, seed {seed}"))
    raise InputError(f"validation_split by {by!r}: expected 'classes' or 'images'")
