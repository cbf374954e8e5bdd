"""``benchmarks/accuracy.py``: its command line and JSON are a contract that outside checks call.

Run as a user would (a subprocess), on a DAVIS-format folder made of the real persam cat photos: the
first frame annotated, every later annotated frame a target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"


def davis_sequence(root, photos):
    """DATA/JPEGImages/480p/cat/0000N.jpg + DATA/Annotations/480p/cat/0000N.png (palette, object id 1)."""
    for n, stem in enumerate(("cat_00", "cat_01", "cat_02")):
        frames, labels = root / "JPEGImages" / "480p" / "cat", root / "Annotations" / "480p" / "cat"
        frames.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        Image.open(photos / f"{stem}.jpg").save(frames / f"{n:05d}.jpg")
        ids = (np.asarray(Image.open(photos / f"{stem}.png")) > 0).astype(np.uint8)
        mask = Image.fromarray(ids, mode="P")
        mask.putpalette([0, 0, 0, 128, 0, 0] + [0] * (256 - 2) * 3)
        mask.save(labels / f"{n:05d}.png")


def test_contract_json_on_a_davis_folder(shared, tmp_path):
    weights = shared("assets/weights/mobilenet_v2")
    davis_sequence(tmp_path / "davis", shared("assets/data/persam-examples"))
    out = tmp_path / "out.json"
    env = {**os.environ, "VRPSAM_WEIGHTS": str(weights), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--dataset", f"davis:{tmp_path / 'davis'}", "--annotation", "box", "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    report = json.loads(out.read_text())
    assert report["episodes"] == 2  # frame 0 -> frames 1 and 2
    assert set(report["results"]) == {"copy", "proto", "lite"}
    scores = {method: report["results"][method]["box"] for method in ("copy", "proto", "lite")}
    assert all(0.0 <= value <= 100.0 for value in scores.values())
    # The cat fills much of every frame: both matching methods find most of it from a box.
    assert scores["proto"] > 30 and scores["lite"] > 30, scores
    assert "first annotated frame" in done.stdout
    # One object is one class: its margin over proto has no interval over classes.
    (dataset,) = report["datasets"].values()
    assert dataset["lite_minus_proto"]["box"]["ci95"] is None
    assert dataset["lite_minus_proto"]["box"]["miou"] == pytest.approx(scores["lite"] - scores["proto"], abs=0.011)
    assert "(one class)" in done.stdout


def test_margin_over_proto_has_an_interval_over_classes(shared, tmp_path):
    weights, photos = shared("assets/weights/mobilenet_v2"), shared("assets/data/persam-examples")
    out = tmp_path / "out.json"
    env = {**os.environ, "VRPSAM_WEIGHTS": str(weights), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--dataset", f"persam:{photos}", "--annotation", "mask", "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    (dataset,) = json.loads(out.read_text())["datasets"].values()
    assert dataset["classes"] == 3
    margin = dataset["lite_minus_proto"]["mask"]
    low, high = margin["ci95"]
    assert low <= margin["miou"] <= high
    # The interval is over the three classes' own differences, which it cannot leave.
    differences = [dataset["class_iou"]["lite"]["mask"][c] - dataset["class_iou"]["proto"]["mask"][c]
                   for c in dataset["class_iou"]["lite"]["mask"]]
    assert min(differences) - 0.02 <= low and high <= max(differences) + 0.02


def test_held_out_classes_follow_what_the_model_held_out(shared):
    # A model refitted on every training class (--train-on-all-classes) never saw only the test fold;
    # a run with its own --validation-seed held out that seed's classes.
    import importlib.util

    from vrpsam.data import open_source, split_fold, validation_split
    from vrpsam.engine.config import TrainConfig

    spec = importlib.util.spec_from_file_location("accuracy_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    dataset = f"yolo:{shared('assets/data/coco128-seg')}"
    source = open_source(dataset)
    fold = split_fold(source, 0)

    def held_out(which, **settings):
        training = TrainConfig.with_preset("lite", dataset=dataset, seed=321, **settings).to_dict()
        return script.held_out_classes(source, training, which)

    def validation(seed):
        return set(validation_split(source, fold.train, fraction=0.2, seed=seed)[1].classes)

    assert held_out("test") == sorted(fold.test)
    assert held_out("heldout") == sorted(set(fold.test) | validation(321))
    assert held_out("heldout", validation_seed=5) == sorted(set(fold.test) | validation(5)) != held_out("heldout")
    assert held_out("heldout", select_on="none", validate_every=0) == sorted(fold.test)
