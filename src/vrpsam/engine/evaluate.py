"""Few-shot evaluation with the VRP-SAM / HSNet protocol, on one process or many (``torchrun``).

Protocol (official §4, with the episode fixes of §9 row 9):

* the episodes are a fixed list, a pure function of ``(seed, index)`` (:mod:`vrpsam.data.episodes`),
  or a list replayed from a file; each DDP rank evaluates its :func:`~vrpsam.data.shard` and the
  per-class sums are all-reduced, so every episode is counted exactly once and the metrics are the
  same for any number of DataLoader workers or processes;
* the support annotation is simulated from the support mask with the evaluation rules, seeded per
  episode (:class:`~vrpsam.data.EpisodeDataset`); k shots give k prompt sets, concatenated (the
  official n-shot rule) before one SAM decoding;
* prediction is ``logit > 0`` (``sigmoid > 0.5``); metrics are :class:`IoUAccumulator`'s class-wise
  accumulated mIoU and FB-IoU over the evaluated classes (255 = ignore);
* ``resolution="input"`` (paper parity) compares at the model's square input (512² officially): the
  query mask is nearest-resized to it. ``resolution="original"`` (HSNet's test mode, §9 row 10)
  resizes the logits bilinearly (``align_corners=True``, as :class:`~vrpsam.vrp.VRPPredictor` does)
  to the query's original height and width and compares with the original mask.

The evaluated classes are the fold's test classes (all classes without a fold) that have the
``shots + 1`` images an episode needs; classes without enough images are listed in the settings as
``skipped_classes``. A class that is evaluated but drew no episode counts as 0 in the mIoU, as in
the official code; ``episodes_per_class`` shows how often each was drawn.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import Episode, EpisodeDataset, SegmentationSource, collate_episodes, make_episodes, shard, split_fold
from ..data.episodes import EpisodeSampler
from ..errors import InputError
from ..vrp.model import VRPSAM
from ..vrp.preprocess import Frame, logits_to_original
from . import distributed
from .metrics import IoUAccumulator

RESOLUTIONS = ("input", "original")
DEFAULT_SEED = 321
# (model, query, supports, annotations) -> {variant: logits (B, 1, S, S)}; see evaluate_variants.
Predict = Callable[[VRPSAM, torch.Tensor, torch.Tensor, torch.Tensor], Mapping[Hashable, torch.Tensor]]


@dataclass
class EvalResult:
    """Metrics of one evaluation run (× 100) and the settings that define it.

    ``per_class`` and ``episodes_per_class`` are keyed by class name (``"<id> <name>"`` where names
    repeat); ``settings`` holds only what determines the numbers (not workers or world size).
    """

    miou: float
    fbiou: float
    per_class: dict[str, float]
    episodes: int
    settings: dict[str, Any]
    episodes_per_class: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EvalResult":
        return cls(**{key: data[key] for key in ("miou", "fbiou", "per_class", "episodes", "settings")},
                   episodes_per_class=data.get("episodes_per_class", {}))

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path


def evaluation_classes(source: SegmentationSource, fold: int | None = None, num_folds: int = 4) -> list[int]:
    """The fold's test classes under the source's fold rule, or every class when ``fold`` is None."""
    if fold is None:
        return list(source.classes)
    return list(split_fold(source, fold, num_folds).test)


def build_episodes(source: SegmentationSource, classes: Iterable[int], episodes: int, *, seed: int = DEFAULT_SEED,
                   shots: int = 1) -> list[Episode]:
    """The deterministic evaluation list: episode ``i`` depends only on ``(seed, i)``."""
    if episodes < 1:
        raise InputError(f"episodes: expected a positive number, got {episodes}")
    return make_episodes(source, classes, episodes, seed=seed, shots=shots)


def episode_logits(model: VRPSAM, query: torch.Tensor, supports: torch.Tensor, annotations: torch.Tensor) -> torch.Tensor:
    """Query (B, 3, S, S), supports (B, K, 3, S, S), annotations (B, K, S, S) -> logits (B, 1, S, S).

    Each shot's prompt tokens are computed against the same target features and concatenated to
    (B, K·Q, 256) for a single decoding (official ``predict_mask_nshot``); for K = 1 this is
    ``model(query, supports[:, 0], annotations[:, 0])``.
    """
    return model.forward_shots(query, supports, annotations)


def _class_keys(source: SegmentationSource, class_ids: Sequence[int]) -> dict[int, str]:
    names = source.classes
    plain = [str(names[c]) for c in class_ids]
    unique = len(set(plain)) == len(plain)
    return {c: (str(names[c]) if unique else f"{c} {names[c]}") for c in class_ids}


_OWN = "model"


def _own_logits(model: VRPSAM, query: torch.Tensor, supports: torch.Tensor,
                annotations: torch.Tensor) -> dict[str, torch.Tensor]:
    return {_OWN: episode_logits(model, query, supports, annotations)}


def evaluate(model: VRPSAM, source: SegmentationSource, **options: Any) -> EvalResult:
    """Evaluate ``model`` on few-shot episodes of ``source`` (see the module docstring for the protocol).

    ``options``: those of :func:`evaluate_variants` (``fold``, ``annotation``, ``episodes``, ...).
    """
    return evaluate_variants(model, source, _own_logits, (_OWN,), **options)[_OWN]


def evaluate_variants(
    model: VRPSAM,
    source: SegmentationSource,
    predict: Predict,
    variants: Sequence[Hashable],
    *,
    fold: int | None = None,
    annotation: str = "mask",
    shots: int = 1,
    episodes: int = 1000,
    seed: int = DEFAULT_SEED,
    workers: int = 0,
    resolution: str = "input",
    device: str | torch.device = "cpu",
    progress: bool = True,
    batch_size: int = 1,
    num_folds: int = 4,
    episode_list: Sequence[Episode] | None = None,
    classes: Sequence[int] | None = None,
) -> dict[Hashable, EvalResult]:
    """Score several variants of a model on the same episodes, each episode loaded once.

    ``predict(model, query, supports, annotations)`` returns ``{variant: logits (B, 1, S, S)}`` for
    each of ``variants`` (e.g. one encoding decoded under several prior settings,
    :mod:`vrpsam.engine.calibrate`). Returns one result per variant.

    ``fold``: evaluate its test classes (None: all classes; ``classes`` overrides both).
    ``episode_list``: replay these episodes instead of drawing ``episodes`` with ``seed`` (``seed``
    still seeds the simulated annotations; ``shots`` must match the list). Under ``torchrun`` with
    a process group up (:func:`vrpsam.engine.distributed.init_from_env`), each rank evaluates its
    share and all ranks return the same, all-reduced result.
    """
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution: expected one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    if workers < 0 or batch_size < 1 or shots < 1:
        raise InputError(f"workers >= 0, batch_size >= 1 and shots >= 1 expected, got {workers}, {batch_size}, {shots}")
    requested = list(classes) if classes is not None else evaluation_classes(source, fold, num_folds)
    evaluated = EpisodeSampler(source, requested, shots).classes
    if episode_list is None:
        episode_list = build_episodes(source, requested, episodes, seed=seed, shots=shots)
    else:
        _check_replay(episode_list, evaluated, shots)
    device = distributed.process_device(device)
    model = model.to(device).eval()

    # Made up front, so that every rank all-reduces the same accumulators even with no episode of its own.
    accumulators = {variant: IoUAccumulator(evaluated, device=device) for variant in variants}
    mine = shard(episode_list, distributed.rank(), distributed.world_size())
    dataset = EpisodeDataset(source, mine, size=model.input_size, annotation=annotation, training=False, seed=seed,
                             original_masks=resolution == "original")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_episodes, pin_memory=device.type == "cuda")
    bar = tqdm(total=len(mine), desc="eval", unit="ep", file=sys.stderr, dynamic_ncols=True,
               disable=not (progress and distributed.is_main()))
    with torch.inference_mode(), bar:
        for batch in loader:
            predicted = _predict_batch(model, predict, batch, device)
            if set(predicted) != set(accumulators):
                raise RuntimeError(f"predict returned variants {sorted(map(str, predicted))}, expected {sorted(map(str, variants))}")
            for variant, accumulator in accumulators.items():
                _score_batch(model, predicted[variant], batch, accumulator, resolution, device)
            bar.update(len(batch["index"]))
    for accumulator in accumulators.values():
        accumulator.load_state(distributed.all_reduce_sum(accumulator.state()))
        if accumulator.episodes != len(episode_list):
            raise RuntimeError(f"counted {accumulator.episodes} episodes, expected {len(episode_list)}: ranks disagree on the list")

    keys = _class_keys(source, evaluated)
    settings = {
        "dataset": source.name,
        "fold": fold,
        "num_folds": num_folds if fold is not None else None,
        "classes": list(evaluated),
        "skipped_classes": [c for c in requested if c not in set(evaluated)],
        "annotation": annotation,
        "shots": shots,
        "episodes": len(episode_list),
        "seed": seed,
        "resolution": resolution,
        "input_size": model.input_size,
        "preprocessing": model.preprocessing,
    }
    return {
        variant: EvalResult(
            miou=accumulator.miou(),
            fbiou=accumulator.fbiou(),
            per_class={keys[c]: iou for c, iou in accumulator.per_class().items()},
            episodes=accumulator.episodes,
            settings=settings,
            episodes_per_class={keys[c]: n for c, n in accumulator.episodes_per_class().items()},
        )
        for variant, accumulator in accumulators.items()
    }


def _check_replay(episode_list: Sequence[Episode], classes: Sequence[int], shots: int) -> None:
    if not episode_list:
        raise InputError("episode list: empty")
    allowed = set(classes)
    for episode in episode_list:
        if episode.class_id not in allowed:
            raise InputError(f"episode {episode.index}: class {episode.class_id} is not among the evaluated classes")
        if len(episode.supports) != shots:
            raise InputError(f"episode {episode.index}: {len(episode.supports)} supports, but shots is {shots}")


def _predict_batch(model: VRPSAM, predict: Predict, batch: dict[str, Any],
                   device: torch.device) -> Mapping[Hashable, torch.Tensor]:
    return predict(
        model,
        batch["query_img"].to(device),
        batch["support_imgs"].to(device),
        batch["support_annotations"].to(device),
    )


def _score_batch(model: VRPSAM, logits: torch.Tensor, batch: dict[str, Any], accumulator: IoUAccumulator,
                 resolution: str, device: torch.device) -> None:
    """Add each episode of a batch, predicted as ``logits`` (B, 1, S, S), to the accumulator."""
    for i, class_id in enumerate(batch["class_id"].tolist()):
        if resolution == "original":
            gt = batch["query_mask_original"][i]
            frame = Frame.for_image(tuple(gt.shape), model.input_size, "official")
            pred = logits_to_original(logits[i : i + 1], frame, "official")[0, 0] > 0
        else:
            gt = batch["query_mask"][i]
            pred = logits[i, 0] > 0
        accumulator.update(pred, gt.to(device), class_id)


def markdown_table(results: Sequence[EvalResult], digits: int = 1) -> str:
    """Results as the paper lays them out: one row per setting and metric, folds as columns, mean last.

    Results that differ only in the fold share a row; a run without a fold sits in the column ``all``.
    The mean is over the row's folds present.
    """
    if not results:
        raise InputError("markdown_table: no results")
    folds = sorted({r.settings.get("fold") for r in results}, key=lambda f: (f is None, f if f is not None else 0))
    fold_names = ["all" if f is None else f"Fold {f}" for f in folds]
    row_keys: list[tuple] = []
    cells: dict[tuple, dict[Any, EvalResult]] = {}
    for r in results:
        s = r.settings
        key = (s.get("model", "?"), s.get("dataset", "?"), s.get("annotation", "?"), s.get("shots", "?"), s.get("resolution", "?"))
        if key not in cells:
            row_keys.append(key)
            cells[key] = {}
        cells[key][s.get("fold")] = r
    header = ["Model", "Dataset", "Annotation", "Shots", "Resolution", "Metric", *fold_names, "Mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in row_keys:
        for metric, label in (("miou", "mIoU"), ("fbiou", "FB-IoU")):
            values = [getattr(cells[key][f], metric) if f in cells[key] else None for f in folds]
            present = [v for v in values if v is not None]
            shown = [f"{v:.{digits}f}" if v is not None else "–" for v in values]
            mean = f"{sum(present) / len(present):.{digits}f}"
            lines.append("| " + " | ".join([*(str(k) for k in key), label, *shown, mean]) + " |")
    return "\n".join(lines) + "\n"


def write_results_json(path: str | os.PathLike, results: Sequence[EvalResult]) -> Path:
    """Several results as one JSON list (one object per fold / setting)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_json() for r in results], indent=2) + "\n", encoding="utf-8")
    return path
