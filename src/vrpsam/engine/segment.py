"""Segment many target images with a reference-prompted predictor and write the results to a folder.

This is the one call behind ``vrpsam segment`` and the same call from Python::

    predictor = VRPPredictor(build_model("tiny-random"))
    predictor.set_reference("cat_00.jpg", mask="cat_00.png")
    segment_targets(predictor, find_targets(["photos/"]), Path("out"))

What lands in ``out_dir`` for a target ``T.jpg`` (see :func:`plan_outputs`):

- ``T.png``: the binary mask, single channel, 0/255, the target's own size;
- ``overlays/T.jpg``: the target with the mask tinted and outlined (``overlays=True``);
- ``results.coco.json``: a COCO results list, one entry per target in target order, ``image_id`` =
  1-based position in the target list, RLE from ``pycocotools`` (``coco_json=True``).

Safety rules: every output path is checked before anything is written; an existing file is an error
unless ``overwrite=True``; two targets with the same file stem (``a/x.jpg``, ``b/x.png``) are an error
because their masks would collide; an output that would replace a target image is always an error.
Each file is written atomically (:func:`vrpsam.io.exports.atomic_file`).

Targets are decoded in a background thread a few images ahead of the model (``prefetch``), so disk
reads and JPEG decoding overlap with the forward passes.

Sharding: with ``shard=(rank, world)`` (default: from :mod:`vrpsam.engine.distributed`, i.e. torchrun)
a process segments targets ``rank::world`` and writes their masks and overlays; the COCO entries are
gathered on rank 0, which writes the single merged JSON.
"""

from __future__ import annotations

import glob
import os
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import InputError
from ..io import exports
from ..io.images import IMAGE_SUFFIXES, load_image
from . import distributed

PathLike = str | os.PathLike
T = TypeVar("T")

COCO_JSON_NAME = "results.coco.json"
OVERLAY_DIR = "overlays"
_GLOB_CHARS = set("*?[")


class Segmenter(Protocol):
    """Anything with ``predict(image) -> Prediction`` (``mask`` (H, W) bool and ``score``)."""

    def predict(self, image: np.ndarray): ...


# --- targets -------------------------------------------------------------------------------------

def find_targets(specs: Iterable[PathLike]) -> list[Path]:
    """Target image paths from files, folders and glob patterns, in the order given.

    A folder contributes its image files (suffixes in ``IMAGE_SUFFIXES``) sorted by name, not those in
    subfolders; a pattern (``*``, ``?``, ``[``; ``**`` recurses) contributes its matching image files,
    sorted. A file named twice is kept once. Every argument must yield at least one image, and each
    image's header must be readable, so a typo or a stray file fails before anything is written.
    """
    found: list[Path] = []
    for spec in specs:
        text = os.path.expanduser(str(spec))
        path = Path(text)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise InputError(f"{path}: folder has no images ({', '.join(IMAGE_SUFFIXES)}; subfolders are not searched)")
        elif path.is_file():
            images = [path]
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            images = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                raise InputError(f"{text}: pattern matches no image file")
        else:
            raise InputError(f"{path}: no such target file or folder")
        found.extend(images)
    if not found:
        raise InputError("targets: none given")
    unique, seen = [], set()
    for path in found:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
            _check_header(path)
    return unique


def _check_header(path: Path) -> None:
    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


# --- outputs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outputs:
    """Where each target's files go: ``masks[i]`` and ``overlays[i]`` (or None) for ``targets[i]``."""

    out_dir: Path
    masks: tuple[Path, ...]
    overlays: tuple[Path | None, ...]
    coco_json: Path | None

    def paths(self) -> list[Path]:
        extra = [self.coco_json] if self.coco_json is not None else []
        return [*self.masks, *(p for p in self.overlays if p is not None), *extra]


def plan_outputs(targets: Sequence[PathLike], out_dir: PathLike, *, overlays: bool = True, coco_json: bool = True) -> Outputs:
    """The output paths for ``targets``; raises if two targets would write the same mask."""
    out_dir = Path(out_dir)
    seen: dict[str, Path] = {}
    for target in map(Path, targets):
        key = target.stem.casefold()  # case-insensitive file systems would merge x.png and X.png
        if key in seen:
            raise InputError(
                f"targets {seen[key]} and {target} would both write {out_dir / (target.stem + '.png')}; "
                "rename one or segment them in separate runs"
            )
        seen[key] = target
    stems = [Path(t).stem for t in targets]
    return Outputs(
        out_dir=out_dir,
        masks=tuple(out_dir / f"{s}.png" for s in stems),
        overlays=tuple((out_dir / OVERLAY_DIR / f"{s}.jpg") if overlays else None for s in stems),
        coco_json=out_dir / COCO_JSON_NAME if coco_json else None,
    )


def check_outputs(outputs: Outputs, targets: Sequence[PathLike], *, overwrite: bool = False) -> None:
    """Raise unless every output can be written: no existing file without ``overwrite``, no target replaced."""
    for folder in (outputs.out_dir, outputs.out_dir / OVERLAY_DIR):
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder")
    inputs = {Path(t).resolve() for t in targets}
    clobbered = [p for p in outputs.paths() if p.resolve() in inputs]
    if clobbered:
        raise InputError(f"{clobbered[0]}: output would replace a target image; choose another --out folder")
    if overwrite:
        return
    existing = [p for p in outputs.paths() if p.exists()]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise InputError(f"{existing[0]}{more} already exist; pass --overwrite (overwrite=True) to replace them")


# --- running -------------------------------------------------------------------------------------

def prefetched(items: Sequence[T], load: Callable[[T], object], depth: int = 2) -> Iterator[tuple[T, object]]:
    """Yield ``(item, load(item))`` in order while a background thread loads up to ``depth`` items ahead.

    An exception raised by ``load`` is re-raised here, at its item. Leaving the loop early stops the thread.
    """
    if depth < 1:
        raise InputError(f"prefetch: expected a positive depth, got {depth}")
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                buffer.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        for item in items:
            try:
                value = (item, load(item), None)
            except Exception as exc:  # handed to the consumer, which raises it in its own thread
                value = (item, None, exc)
            if not put(value) or value[2] is not None:
                return
        put(done)

    thread = threading.Thread(target=work, name="vrpsam-prefetch", daemon=True)
    thread.start()
    try:
        while (got := buffer.get()) is not done:
            item, value, error = got
            if error is not None:
                raise error
            yield item, value
    finally:
        stop.set()
        thread.join()


def _resolve_shard(shard: tuple[int, int] | None, coco_json: bool) -> tuple[int, int]:
    rank, world = shard if shard is not None else (distributed.rank(), distributed.world_size())
    if not (isinstance(rank, int) and isinstance(world, int) and world >= 1 and 0 <= rank < world):
        raise InputError(f"shard: expected (rank, world) with 0 <= rank < world, got {shard}")
    if world > 1 and coco_json and not distributed.is_distributed():
        raise InputError("shard: merging the COCO JSON of several shards needs a torch.distributed process group "
                         "(launch with torchrun), or pass coco_json=False")
    return rank, world


def _writing(save: Callable[..., Path], *args) -> Path:
    try:
        return save(*args)
    except OSError as exc:
        raise InputError(f"{args[-1]}: cannot write ({exc.strerror or exc})") from None


def _gather_on_main(entries: list[dict]) -> list[dict] | None:
    """All processes' entries on rank 0 (None elsewhere); the entries themselves without a process group."""
    if not distributed.is_distributed():
        return entries
    import torch.distributed as dist

    gathered: list | None = [None] * distributed.world_size() if distributed.is_main() else None
    dist.gather_object(entries, gathered, dst=0)
    return [entry for part in gathered for entry in part] if gathered is not None else None


def segment_targets(
    predictor: Segmenter,
    targets: Sequence[PathLike],
    out_dir: PathLike,
    *,
    overwrite: bool = False,
    overlays: bool = True,
    coco_json: bool = True,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    category_id: int = 1,
    prefetch: int = 2,
) -> list[Path]:
    """Segment ``targets`` with ``predictor`` (references already set) and write the files to ``out_dir``.

    Returns the paths this process wrote, in the order written. See the module docstring for the
    layout, the overwrite rules and sharding. ``progress`` shows a tqdm bar on stderr (rank 0 only).
    """
    targets = [Path(t) for t in targets]
    if not targets:
        raise InputError("targets: none given")
    rank, world = _resolve_shard(shard, coco_json)
    for target in targets:  # a missing or non-image target fails now, not after other files were written
        _check_header(target)
    outputs = plan_outputs(targets, out_dir, overlays=overlays, coco_json=coco_json)
    check_outputs(outputs, targets, overwrite=overwrite)
    distributed.barrier()  # every rank checked before any rank writes, so no one sees another's new files
    for folder in (outputs.out_dir, outputs.out_dir / OVERLAY_DIR) if overlays else (outputs.out_dir,):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None

    mine = list(range(rank, len(targets), world))
    written: list[Path] = []
    entries: list[dict] = []
    bar = tqdm(total=len(mine), unit="img", desc="segment", disable=not progress or rank != 0, file=sys.stderr)
    with bar:
        for index, image in prefetched(mine, lambda i: load_image(targets[i]), depth=prefetch):
            prediction = predictor.predict(image)
            written.append(_writing(exports.save_mask_png, prediction.mask, outputs.masks[index]))
            if overlays:
                written.append(_writing(exports.save_overlay, image, prediction.mask, outputs.overlays[index]))
            if coco_json:
                entries.append(exports.coco_result(
                    prediction.mask, image_id=index + 1, score=prediction.score, category_id=category_id,
                    file_name=str(targets[index]), mask_file=outputs.masks[index].name,
                ))
            bar.update()
    if coco_json:
        merged = _gather_on_main(entries)
        if merged is not None:
            merged.sort(key=lambda entry: entry["image_id"])
            written.append(_writing(exports.save_json, merged, outputs.coco_json))
    return written
