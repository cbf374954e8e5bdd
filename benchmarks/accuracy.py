"""One-shot accuracy of ``lite`` next to two training-free baselines, on the same episodes.

    python benchmarks/accuracy.py [--dataset KIND:PATH] [--annotation A] [--json OUT.json]

For each dataset and reference annotation type (point, box, scribble, mask) it prints, side by side:

- ``copy``: the reference's annotation map (mask; filled box; the simulated clicks or scribble
  strokes) resized onto the target (nearest): what a method gets for free when the object sits in
  the same place in both images;
- ``proto``: training-free prototype matching (:mod:`vrpsam.vrp.proto`, the plain rule without the
  self-support lite's prior adds) on the same frozen MobileNetV2 features lite reads, with the same
  annotation map (so a box's prototype is the box);
- ``lite``: the trained ``lite`` model (``build_model("lite")``, or ``--model CHECKPOINT``).

Numbers are mIoU (foreground IoU accumulated per class over its episodes, averaged over classes,
HSNet/VRP-SAM protocol) and the mean of the per-episode IoU, in percent, at the target's original
resolution. Annotations are simulated from the reference mask with the evaluation rules and
``--seed`` (:mod:`vrpsam.data.simulate`); images enter at lite's 512² input (squashed, as in training).

Datasets (``--dataset``, repeatable; default: the three below, from ``../shared/assets/data``):

- ``persam:PATH``: ``NAME_00.jpg/.png`` is the reference, every other ``NAME_NN`` of it a target
  (the persam-examples layout; masks are palette or grey PNGs, foreground = non-zero label 1/255);
- ``davis:PATH``: per object, its first annotated frame is the reference, every later annotated frame
  a target (:func:`vrpsam.data.episodes.video_episodes`);
- any other ``KIND:PATH`` of :func:`vrpsam.data.open_source`: within each class, every image is the
  reference for every other one when that gives at most ``--episodes`` episodes (e.g. the FSS-1000
  example: 5 images -> 20), else ``--episodes`` seeded episodes. On the data lite was trained on
  (same kind and folder name as recorded in its checkpoint, e.g. ``yolo:.../coco128-seg``), only
  classes it never trained on are used: ``--classes test`` (default) the fold's test classes, which
  played no part in training or in any choice made from validation (lite's prior weight is chosen on
  the validation classes, see ``vrpsam.engine.calibrate``); ``heldout`` adds the validation classes
  (none for a model trained with ``--train-on-all-classes``); ``all`` takes every class.

Next to them, lite − proto with its 95% interval over classes (:func:`vrpsam.engine.metrics.class_bootstrap_interval`:
the classes resampled with replacement, the episodes kept): how much the margin could move with another
draw of as many held-out classes. A dataset of one class has none.

``--json OUT.json``: ``{"results": {"copy": {A: miou}, "proto": {A: miou}, "lite": {A: miou}},
"episodes": N, ...}`` for one dataset. With several datasets, "results" and "episodes" hold the first
dataset's and "datasets" holds every dataset's (with per-episode means, per-class IoUs and
``lite_minus_proto``: ``{A: {"miou": difference, "ci95": [low, high] or null}}``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vrpsam.data import EpisodeDataset, collate_episodes, open_source, split_fold, validation_split, video_episodes
from vrpsam.data.base import SegmentationSource, binary_foreground, read_mask
from vrpsam.data.episodes import Episode
from vrpsam.engine.config import TrainConfig
from vrpsam.engine.evaluate import build_episodes
from vrpsam.engine.metrics import IoUAccumulator, class_bootstrap_interval, episode_areas
from vrpsam.engine.train import VALIDATION_FRACTION
from vrpsam.errors import DataError, InputError
from vrpsam.vrp.build import LITE_WEIGHTS, build_model
from vrpsam.vrp.checkpoint import load_vrp_checkpoint

CONDITIONS = ("point", "box", "scribble", "mask")
METHODS = ("copy", "proto", "lite")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "assets" / "data"
DEFAULT_DATASETS = (
    f"persam:{SHARED / 'persam-examples'}",
    f"fss:{SHARED / 'fss1000-example'}",
    f"yolo:{SHARED / 'coco128-seg'}",
)


class PairedFramesSource(SegmentationSource):
    """``NAME_NN.jpg`` + ``NAME_NN.png`` pairs in one folder; each NAME is a class (persam-examples)."""

    kind = "persam"
    _PATTERN = re.compile(r"^(?P<name>.+)_(?P<index>\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._images: dict[str, Path] = {}
        for path in sorted(self.root.iterdir()):
            match = self._PATTERN.match(path.name)
            if match and path.suffix.lower() in (".jpg", ".jpeg") and path.with_suffix(".png").is_file():
                self._images[path.stem] = path
        if not self._images:
            raise DataError(f"{self.root}: persam layout expects NAME_00.jpg + NAME_00.png pairs")
        names = sorted({self._PATTERN.match(p.name)["name"] for p in self._images.values()})
        self._classes = {i + 1: name for i, name in enumerate(names)}

    @property
    def name(self) -> str:
        return f"persam:{self.root}"

    @property
    def classes(self) -> dict[int, str]:
        return dict(self._classes)

    def items(self, class_id: int) -> list[str]:
        prefix = self._classes[class_id] + "_"
        return [item for item in sorted(self._images) if item.startswith(prefix) and item[len(prefix):].isdigit()]

    def image_file(self, item: str) -> Path:
        return self._images[item]

    def mask_file(self, item: str) -> Path:
        return self._images[item].with_suffix(".png")

    def mask(self, item: str, class_id: int) -> np.ndarray:
        return binary_foreground(read_mask(self.mask_file(item)))

    def episodes(self) -> list[Episode]:
        """Per object: ``_00`` (the first item) is the reference of every later one."""
        episodes = []
        for class_id in self._classes:
            first, *targets = self.items(class_id)
            episodes += [Episode(len(episodes) + i, class_id, target, (first,)) for i, target in enumerate(targets)]
        return episodes


def all_pairs(source: SegmentationSource, classes: list[int]) -> list[Episode]:
    episodes = []
    for class_id in classes:
        items = source.items(class_id)
        for reference in items:
            for target in items:
                if target != reference:
                    episodes.append(Episode(len(episodes), class_id, target, (reference,)))
    return episodes


def trained_on(model_path: Path) -> dict:
    """The training config recorded in a lite checkpoint ({} when there is none)."""
    if not model_path.is_file():
        return {}
    return load_vrp_checkpoint(model_path)[1].get("training_config") or {}


def held_out_classes(source: SegmentationSource, training: dict, which: str) -> list[int]:
    """Classes lite never trained on: the fold's test classes (``test``), plus the validation classes
    (``heldout``) of a run that held them out; ``training``: its recorded TrainConfig."""
    config = TrainConfig.from_dict(training, source="the checkpoint's training_config")
    fold = split_fold(source, config.fold)
    if which == "test" or config.select_on != "val":  # otherwise every training class trained
        return sorted(fold.test)
    _, validation = validation_split(source, fold.train, fraction=VALIDATION_FRACTION, seed=config.split_seed())
    return sorted(set(fold.test) | set(validation.classes))


def open_dataset(spec: str, *, episodes: int, seed: int, classes: str, training: dict) -> tuple[SegmentationSource, list[Episode], str]:
    """(source, episodes, description) for one ``KIND:PATH``."""
    kind, _, path = spec.partition(":")
    if kind == "persam":
        source = PairedFramesSource(path)
        return source, source.episodes(), "reference NAME_00, targets NAME_01.."
    source = open_source(spec)
    if kind == "davis":
        return source, video_episodes(source), "first annotated frame -> every later annotated frame"
    chosen, note = list(source.classes), "all classes"
    trained_kind, _, trained_path = str(training.get("dataset", "")).partition(":")
    # The same data wherever it lives: same kind and same folder name (e.g. yolo .../coco128-seg).
    if classes != "all" and trained_path and (trained_kind, Path(trained_path).name) == (kind, Path(path).name):
        chosen = held_out_classes(source, training, classes)
        note = "the fold's test classes" if classes == "test" else "test + validation classes (held out from training)"
    pairs = all_pairs(source, chosen)
    if len(pairs) <= episodes:
        return source, pairs, f"{note}; every image the reference of every other one"
    return source, build_episodes(source, chosen, episodes, seed=seed), f"{note}; {episodes} seeded episodes"


@torch.inference_mode()
def predict(model, batch: dict) -> dict[str, torch.Tensor]:
    """Logits or scores (B, 1, S, S), positive = foreground, of each method for a batch of 1-shot episodes."""
    query, supports, annotations = batch["query_img"], batch["support_imgs"], batch["support_annotations"]
    encoder = model.encoder
    features = encoder.encode_target(query)
    reference = encoder.encode_reference(supports[:, 0], annotations[:, 0])
    size = query.shape[-2:]
    proto = model.prior.rule_scores(features, [reference])
    return {
        "copy": annotations[:, :1] - 0.5,
        "proto": F.interpolate(proto, size=size, mode="bilinear", align_corners=False),
        "lite": model.forward_shots(query, supports, annotations),
    }


def to_original(scores: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """(1, S, S) scores -> (H, W) boolean at the original size (maps nearest, scores bilinear)."""
    if method == "copy":
        return F.interpolate(scores[None], size=size, mode="nearest")[0, 0] > 0
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0, 0] > 0


def run_dataset(model, source, episodes, annotation: str, seed: int, batch_size: int) -> dict[str, dict]:
    """{method: {"miou": .., "episode_iou": .., "class_iou": {class id: IoU}}} for one annotation type."""
    classes = sorted({e.class_id for e in episodes})
    accumulators = {m: IoUAccumulator(classes) for m in METHODS}
    per_episode: dict[str, list[float]] = {m: [] for m in METHODS}
    dataset = EpisodeDataset(source, episodes, size=model.input_size, annotation=annotation, training=False, seed=seed,
                             original_masks=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_episodes)
    for batch in loader:
        outputs = predict(model, batch)
        for i, class_id in enumerate(batch["class_id"].tolist()):
            gt = batch["query_mask_original"][i]
            for method in METHODS:
                pred = to_original(outputs[method][i], tuple(gt.shape), method)
                accumulators[method].update(pred, gt, class_id)
                areas = episode_areas(pred, gt)
                per_episode[method].append(float(areas[1] / areas[3].clamp(min=1.0)) * 100.0 if areas[3] > 0 else 100.0)
    return {m: {"miou": accumulators[m].miou(), "episode_iou": float(np.mean(per_episode[m])),
                "class_iou": accumulators[m].per_class()} for m in METHODS}


def margin(results: dict[str, dict]) -> dict:
    """lite − proto mIoU and its 95% class-bootstrap interval (None with one class)."""
    lite, proto = results["lite"]["class_iou"], results["proto"]["class_iou"]
    classes = sorted(lite)
    interval = None
    if len(classes) >= 2:
        interval = class_bootstrap_interval([lite[c] for c in classes], [proto[c] for c in classes])
    return {"miou": results["lite"]["miou"] - results["proto"]["miou"], "ci95": interval}


def show_margin(value: dict) -> str:
    interval = value["ci95"]
    spread = f"[{interval[0]:+5.1f}, {interval[1]:+5.1f}]" if interval is not None else "(one class)"
    return f"   {value['miou']:+5.1f} {spread}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", metavar="KIND:PATH", help="repeatable; default: persam-examples, fss1000-example, coco128-seg held-out classes")
    parser.add_argument("--annotation", choices=CONDITIONS + ("all",), default="all")
    parser.add_argument("--json", metavar="OUT.json")
    parser.add_argument("--model", default="lite", help="lite (default) or a lite checkpoint path")
    parser.add_argument("--episodes", type=int, default=200, help="episodes of a sampled dataset (default 200)")
    parser.add_argument("--classes", choices=("test", "heldout", "all"), default="test",
                        help="on lite's training data: test (default), heldout (test + validation) or all classes")
    parser.add_argument("--seed", type=int, default=321, help="episodes and simulated annotations (default 321)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model_path = LITE_WEIGHTS if args.model == "lite" else Path(args.model)
    training = trained_on(model_path)
    model = build_model(args.model).eval()
    annotations = CONDITIONS if args.annotation == "all" else (args.annotation,)
    specs = args.dataset or list(DEFAULT_DATASETS)
    print(f"model: {args.model} ({model_path}); torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)

    report: dict = {"datasets": {}}
    for spec in specs:
        start = time.monotonic()
        source, episodes, note = open_dataset(spec, episodes=args.episodes, seed=args.seed, classes=args.classes, training=training)
        if not episodes:
            raise InputError(f"{spec}: no episodes (each class needs at least two images)")
        results = {a: run_dataset(model, source, episodes, a, args.seed, args.batch_size) for a in annotations}
        seconds = time.monotonic() - start
        classes = len({e.class_id for e in episodes})
        print(f"\n{spec}\n  {len(episodes)} episodes, {classes} classes ({note}); {seconds:.0f} s")
        margins = {a: margin(results[a]) for a in annotations}
        print("  annotation |" + "".join(f" {m:>14}" for m in METHODS) + "   lite - proto [95% over classes]"
              "   (mIoU / mean episode IoU, %)")
        for a in annotations:
            print(f"  {a:10} |" + "".join(f"   {results[a][m]['miou']:5.1f} / {results[a][m]['episode_iou']:5.1f}" for m in METHODS)
                  + show_margin(margins[a]))
        report["datasets"][spec] = {
            "results": {m: {a: round(results[a][m]["miou"], 2) for a in annotations} for m in METHODS},
            "episode_iou": {m: {a: round(results[a][m]["episode_iou"], 2) for a in annotations} for m in METHODS},
            "class_iou": {m: {a: {str(c): round(v, 2) for c, v in results[a][m]["class_iou"].items()} for a in annotations}
                          for m in METHODS},
            "lite_minus_proto": {a: {"miou": round(v["miou"], 2), "ci95": None if v["ci95"] is None else [round(x, 2) for x in v["ci95"]]}
                                 for a, v in margins.items()},
            "episodes": len(episodes),
            "classes": classes,
            "episode_rule": note,
            "seconds": round(seconds, 1),
        }
    first = report["datasets"][specs[0]]
    report = {"results": first["results"], "episodes": first["episodes"], **report}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
