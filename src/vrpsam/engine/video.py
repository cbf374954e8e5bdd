"""Segment every frame of a video from one annotated frame; DAVIS-format masks, an overlay video, J&F.

The one call behind ``vrpsam video``, and the same call from Python::

    predictor = VRPPredictor(build_model("tiny-random"))
    result = segment_video(predictor, "bear/", "out", reference_frame=0, mask="bear_gt/00000.png",
                           ground_truth="bear_gt")
    print(format_scores(result.scores))

VRP-SAM is an image model: each frame is segmented on its own against the one annotated reference
frame (no memory or propagation between frames). The reference frame is segmented like any other, so
its output is the model's mask, not a copy of the annotation.

What lands in ``out_dir`` (frames named as in :mod:`vrpsam.io.video`: file stems, or ``00000``... for
a video file):

- ``<frame>.png`` for every frame: the DAVIS results format, a palette PNG (mode ``P``, the DAVIS
  palette) of the frame's size with 0 = background and the object id (1 unless ``object_id`` is given
  or the ground truth names another) on the object;
- ``overlay.mp4`` (H.264, needs PyAV) or, without PyAV, ``overlay.avi`` (Motion-JPEG): the frames with
  the mask tinted and outlined (``overlay=True``), at the video's frame rate or 24 fps for a folder;
- ``scores.json`` with ``ground_truth``: J, F and J&F (:mod:`vrpsam.engine.davis_metrics`).

Ground truth: a folder of PNGs named like the frames (``<frame>.png``), read as DAVIS annotations: a
palette PNG holds object ids (1..254, 0 background, 255 void, not scored); any other PNG is a binary
mask of object 1. Frames without a PNG are not scored; a PNG that names no frame is an error. The
scored frames follow the DAVIS semi-supervised protocol: every frame with ground truth except the
annotated reference frame and the sequence's last frame (``score_last_frame=True`` keeps the last).
The object scored is ``object_id``; without it the ground truth must show a single object id.

Safety rules, as for :mod:`vrpsam.engine.segment`: everything (frames, reference annotation, ground
truth, output paths) is checked by :func:`plan_video` before the output folder is created; an existing
output is an error unless ``overwrite=True``; an output that would replace an input (a frame, a
ground-truth or annotation file) is always an error; each file is written atomically.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.base import IGNORE, binary_foreground
from ..errors import InputError
from ..io import exports
from ..io.images import load_mask
from ..io.video import DEFAULT_FPS, Frames, open_frames, overlay_suffix, video_writer
from ..vrp.annotations import Annotation
from ..vrp.predictor import make_annotation
from . import davis_metrics
from .segment import Outputs, Segmenter, _writing, check_outputs, prefetched

PathLike = str | os.PathLike

SCORES_NAME = "scores.json"
OVERLAY_STEM = "overlay"
PROTOCOL = "DAVIS semi-supervised: frames with ground truth except the reference frame and the last frame"
PROTOCOL_WITH_LAST = "frames with ground truth except the reference frame (the DAVIS protocol also skips the last)"


@dataclass(frozen=True)
class GroundTruth:
    """Ground-truth PNG per frame index (``files``) and the frame indices that are scored, in order."""

    folder: Path
    files: dict[int, Path]
    scored: tuple[int, ...]
    protocol: str


@dataclass(frozen=True)
class VideoPlan:
    """Everything :func:`run_video` needs, checked: frames, reference, outputs, ground truth."""

    frames: Frames
    reference_frame: int
    annotation: Annotation
    object_id: int
    out_dir: Path
    masks: tuple[Path, ...]
    overlay: Path | None
    scores: Path | None
    truth: GroundTruth | None
    bound_th: float

    def paths(self) -> list[Path]:
        return [*self.masks, *(p for p in (self.overlay, self.scores) if p is not None)]


@dataclass(frozen=True)
class VideoResult:
    """The files written, in order, and the scores (the content of ``scores.json``) or None."""

    written: list[Path]
    scores: dict[str, Any] | None


# --- planning ------------------------------------------------------------------------------------

def plan_video(
    frames: PathLike | Frames,
    out_dir: PathLike,
    *,
    reference_frame: int = 0,
    mask=None,
    points=None,
    box=None,
    scribble=None,
    ground_truth: PathLike | None = None,
    object_id: int | None = None,
    overwrite: bool = False,
    overlay: bool = True,
    score_last_frame: bool = False,
    bound_th: float = davis_metrics.BOUND_TH,
) -> VideoPlan:
    """Check every input and output of a video run (module docstring) without writing anything."""
    frames = frames if isinstance(frames, Frames) else open_frames(frames)
    count = len(frames)
    if isinstance(reference_frame, bool) or not isinstance(reference_frame, (int, np.integer)) \
            or not 0 <= reference_frame < count:
        raise InputError(f"reference frame {reference_frame!r}: out of range; {frames.source} has {count} "
                         f"frame(s), numbered 0..{count - 1}")
    reference_frame = int(reference_frame)
    if object_id is not None and (isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer))
                                  or not 1 <= object_id < IGNORE):
        raise InputError(f"object id {object_id!r}: expected an integer in 1..{IGNORE - 1}")
    davis_metrics.tolerance_pixels(frames.size, bound_th)  # a bad bound_th fails here, not after the run
    annotation = _reference_annotation(frames, reference_frame, object_id, mask=mask, points=points, box=box,
                                       scribble=scribble)
    truth, object_id = (None, object_id or 1) if ground_truth is None else \
        _match_ground_truth(frames, Path(os.path.expanduser(str(ground_truth))), reference_frame, object_id,
                            score_last_frame)

    out_dir = Path(os.path.expanduser(str(out_dir)))
    plan = VideoPlan(
        frames=frames, reference_frame=reference_frame, annotation=annotation, object_id=int(object_id),
        out_dir=out_dir, masks=tuple(out_dir / f"{name}.png" for name in frames.names),
        overlay=out_dir / f"{OVERLAY_STEM}{overlay_suffix()}" if overlay else None,
        scores=out_dir / SCORES_NAME if truth is not None else None, truth=truth, bound_th=bound_th,
    )
    inputs = [*frames.input_files, *(truth.files.values() if truth else ())]
    inputs += [Path(file) for file in (mask, scribble) if isinstance(file, (str, os.PathLike))]
    _check_inputs_kept(plan.paths(), inputs)
    # check_outputs only looks at Outputs.paths(): every file this run writes goes in as a "mask"
    check_outputs(Outputs(out_dir, masks=tuple(plan.paths()), overlays=(), coco_json=None), frames.input_files,
                  overwrite=overwrite)
    return plan


def _reference_annotation(frames: Frames, index: int, object_id: int | None, **given) -> Annotation:
    """The one annotation in ``given`` (mask=, points=, box=, scribble=), checked against the reference frame's
    size; ``object_id`` picks one object of a (palette) mask."""
    named = [kind for kind, value in given.items() if value is not None]
    where = f"reference frame {index} ({frames.names[index]})"
    if len(named) == 1:
        where += f" --{named[0]}"
        if isinstance(given[named[0]], (str, os.PathLike)):
            where += f" {given[named[0]]}"
    mask = given.get("mask")
    try:
        if mask is not None and object_id is not None and not isinstance(mask, Annotation):
            ids = load_mask(mask) if isinstance(mask, (str, os.PathLike)) else np.asarray(mask)
            if not (ids == object_id).any():
                present = ", ".join(str(v) for v in np.unique(ids) if v not in (0, IGNORE)) or "none"
                raise InputError(f"no pixel has object id {object_id} (ids present: {present})")
            given["mask"] = ids == object_id
        annotation = make_annotation(**given)
        annotation.validate(frames.size)
    except InputError as exc:
        hint = "; to take one object of a palette mask pass --object-id (object_id=)" \
            if mask is not None and object_id is None and "must be binary" in str(exc) else ""
        raise InputError(f"{where}: {exc}{hint}") from None
    return annotation


def object_ids(path: Path) -> np.ndarray:
    """(H, W) uint8 of a DAVIS annotation: palette PNG = object ids (255 void); other PNG = binary, id 1."""
    values = load_mask(path)
    with Image.open(path) as image:
        palette = image.mode == "P"
    return values.astype(np.uint8) if palette else binary_foreground(values)


def _match_ground_truth(frames: Frames, folder: Path, reference: int, object_id: int | None,
                        score_last: bool) -> tuple[GroundTruth, int]:
    """Ground-truth files per frame, checked (names, sizes, object ids), and the object id to score."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such ground-truth folder")
    pngs = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if not pngs:
        raise InputError(f"{folder}: no ground-truth PNGs; name them like the frames (e.g. {frames.names[0]}.png)")
    index_of = {name.casefold(): i for i, name in enumerate(frames.names)}
    files: dict[int, Path] = {}
    found: set[int] = set()
    for png in pngs:
        index = index_of.get(png.stem.casefold())
        if index is None:
            raise InputError(f"{png}: names no frame of {frames.source}; ground-truth PNGs are named like the frames "
                             f"(e.g. {frames.names[0]}.png)")
        if index in files:
            raise InputError(f"{folder}: {files[index].name} and {png.name} both name frame {frames.names[index]}")
        ids = object_ids(png)
        if ids.shape != frames.size:
            raise InputError(f"{png}: size {ids.shape[1]}x{ids.shape[0]} differs from the frames' "
                             f"{frames.size[1]}x{frames.size[0]}")
        files[index] = png
        found.update(int(v) for v in np.unique(ids) if v not in (0, IGNORE))
    shown = ", ".join(map(str, sorted(found))) or "none"
    if object_id is None:
        if len(found) > 1:
            raise InputError(f"{folder}: ground truth holds several objects (ids {shown}); pick the one the reference "
                             "shows with --object-id (object_id=)")
        object_id = found.pop() if found else 1
    elif object_id not in found:
        raise InputError(f"object id {object_id}: appears in no ground-truth frame of {folder} (ids present: {shown})")
    last = len(frames) - 1
    scored = tuple(sorted(i for i in files if i != reference and (score_last or i != last)))
    if not scored:
        raise InputError(f"{folder}: no frame to score; ground truth covers only the reference frame"
                         + ("" if score_last else " and the last frame (the DAVIS protocol skips both)"))
    return GroundTruth(folder, files, scored, PROTOCOL_WITH_LAST if score_last else PROTOCOL), object_id


def _check_inputs_kept(outputs: list[Path], inputs: list[Path]) -> None:
    protected = {path.resolve() for path in inputs}
    for path in outputs:
        if path.resolve() in protected:
            raise InputError(f"{path}: output would replace an input file (frame, ground truth or annotation); "
                             "choose another --out folder")


# --- running -------------------------------------------------------------------------------------

def run_video(predictor: Segmenter, plan: VideoPlan, *, fps: float | None = None, progress: bool = True,
              prefetch: int = 2) -> VideoResult:
    """Set the reference, segment every frame and write the files of ``plan``; see the module docstring."""
    frames, truth = plan.frames, plan.truth
    predictor.set_reference(frames.read(plan.reference_frame), **{plan.annotation.kind: plan.annotation})
    try:
        plan.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{plan.out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    rate = fps if fps is not None else frames.fps or DEFAULT_FPS
    written: list[Path] = []
    per_frame: list[dict[str, Any]] = []
    scored = set(truth.scored) if truth else set()
    bar = tqdm(total=len(frames), unit="frame", desc="video", disable=not progress, file=sys.stderr)
    with frames, bar, _overlay_writer(plan, rate) as writer:
        for index, image in prefetched(range(len(frames)), frames.read, depth=prefetch):
            mask = predictor.predict(image).mask
            labels = mask.astype(np.uint8) * np.uint8(plan.object_id)
            written.append(_writing(exports.save_palette_png, labels, plan.masks[index]))
            if writer is not None:
                writer.write(exports.overlay(image, mask))
            if index in scored:
                per_frame.append(_frame_scores(frames.names[index], mask, truth.files[index], plan))
            bar.update()
    if plan.overlay is not None:
        written.append(plan.overlay)
    scores = None
    if truth is not None:
        scores = _summary(plan, per_frame)
        written.append(_writing(exports.save_json, scores, plan.scores))
    return VideoResult(written, scores)


@contextlib.contextmanager
def _overlay_writer(plan: VideoPlan, rate):
    if plan.overlay is None:
        yield None
        return
    try:
        with video_writer(plan.overlay, plan.frames.size, rate) as writer:
            yield writer
    except OSError as exc:
        raise InputError(f"{plan.overlay}: cannot write ({exc.strerror or exc})") from None


def _frame_scores(name: str, mask: np.ndarray, truth_file: Path, plan: VideoPlan) -> dict[str, Any]:
    ids = object_ids(truth_file)
    truth, void = ids == plan.object_id, ids == IGNORE
    boundary = davis_metrics.f_measure(mask, truth, void, bound_th=plan.bound_th)
    return {"frame": name, "J": davis_metrics.jaccard(mask, truth, void), "F": boundary.f,
            "F_precision": boundary.precision, "F_recall": boundary.recall}


def _summary(plan: VideoPlan, per_frame: list[dict[str, Any]]) -> dict[str, Any]:
    stats = davis_metrics.j_and_f([f["J"] for f in per_frame], [f["F"] for f in per_frame])
    return {
        "sequence": str(plan.frames.source),
        "ground_truth": str(plan.truth.folder),
        "reference_frame": plan.frames.names[plan.reference_frame],
        "object_id": plan.object_id,
        "protocol": plan.truth.protocol,
        "boundary_tolerance_px": davis_metrics.tolerance_pixels(plan.frames.size, plan.bound_th),
        "frames_scored": len(per_frame),
        "J": stats["J"].to_json(),
        "F": stats["F"].to_json(),
        "J&F": stats["J&F"],
        "per_frame": per_frame,
    }


def format_scores(scores: dict[str, Any]) -> str:
    """A small table of J, F and J&F (mean, recall, decay) from :func:`run_video`'s scores."""
    j, f = scores["J"], scores["F"]
    rows = [f"{'':8}{'J':>8}{'F':>8}{'J&F':>8}",
            f"{'mean':8}{j['mean']:8.3f}{f['mean']:8.3f}{scores['J&F']:8.3f}",
            f"{'recall':8}{j['recall']:8.3f}{f['recall']:8.3f}",
            f"{'decay':8}{j['decay']:8.3f}{f['decay']:8.3f}"]
    return "\n".join(rows)


def segment_video(predictor: Segmenter, frames: PathLike | Frames, out_dir: PathLike, *, fps: float | None = None,
                  progress: bool = True, prefetch: int = 2, **options) -> VideoResult:
    """:func:`plan_video` with ``options`` (reference_frame, mask/points/box/scribble, ground_truth, ...),
    then :func:`run_video`: the whole job in one call."""
    return run_video(predictor, plan_video(frames, out_dir, **options), fps=fps, progress=progress, prefetch=prefetch)
