"""``vrpsam video``: annotate one frame of a video, segment every frame, write DAVIS masks, an overlay video, J&F.

    vrpsam video --frames DIR_OR_VIDEO [--reference-frame N] (--mask M.png | --points "x,y;x,y" |
                 --box x1,y1,x2,y2 | --scribble S.png) --out DIR [--model NAME_OR_CHECKPOINT]
                 [--method learned|training-free] [--ground-truth DIR] [--object-id K] [--overwrite]

The annotation is in the pixels of frame N (default 0). Outputs: ``OUT/<frame>.png`` (DAVIS palette
PNGs), ``OUT/overlay.mp4`` (``overlay.avi`` without PyAV), and with ``--ground-truth`` ``OUT/scores.json``
plus a J / F / J&F table on stdout (see :mod:`vrpsam.engine.video` for the formats and the protocol).
Everything the user gave is checked before the output folder is created: frames, annotation, ground
truth, output files, model flags; the model is built last.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .model_options import add_model_arguments, build_predictor, choose_method, read_annotation

ANNOTATION_KINDS = ("mask", "points", "box", "scribble")


def _frame_index(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame number (0 = first), got {text!r}") from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", required=True, metavar="DIR_OR_VIDEO",
                        help="a folder of frame images (natural order) or a video file (.mp4, .mov, ...; needs PyAV)")
    parser.add_argument("--reference-frame", type=_frame_index, default=0, metavar="N",
                        help="the annotated frame, 0 = first (default 0)")
    shot = parser.add_argument_group("annotation of the reference frame (exactly one)").add_mutually_exclusive_group(required=True)
    shot.add_argument("--mask", metavar="PNG", help="mask of the object, the frame's size (binary, or a palette PNG with --object-id)")
    shot.add_argument("--points", metavar="'x,y;x,y'", help="clicks on the object, in frame pixels")
    shot.add_argument("--box", metavar="x1,y1,x2,y2", help="box around the object, in frame pixels")
    shot.add_argument("--scribble", metavar="PNG", help="binary image of strokes on the object")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder: OUT/<frame>.png, overlay video, scores.json")
    parser.add_argument("--ground-truth", metavar="DIR", help="PNGs named like the frames (DAVIS Annotations): writes J, F, J&F")
    parser.add_argument("--object-id", type=int, metavar="K",
                        help="the object of palette masks (reference --mask and ground truth) to segment and score")
    add_model_arguments(parser)
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps...")
    run_group.add_argument("--overwrite", action="store_true", help="replace existing output files")
    run_group.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    run_group.add_argument("--fps", type=_positive, metavar="FPS", help="overlay frame rate (default: the video's, 24 for a folder)")
    run_group.add_argument("--score-last-frame", action="store_true",
                           help="also score the last frame (the DAVIS protocol skips it, and the reference frame)")
    run_group.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..engine.video import format_scores, plan_video, run_video

    kind = next(k for k in ANNOTATION_KINDS if getattr(args, k) is not None)
    text = getattr(args, kind)
    value = text if kind in ("mask", "scribble") else read_annotation(kind, text)
    method = choose_method(args)
    plan = plan_video(
        args.frames, Path(args.out), reference_frame=args.reference_frame, **{kind: value},
        ground_truth=args.ground_truth, object_id=args.object_id, overwrite=args.overwrite,
        overlay=not args.no_overlay, score_last_frame=args.score_last_frame,
    )
    predictor = build_predictor(args, method)
    result = run_video(predictor, plan, fps=args.fps, progress=not args.quiet)
    frames = plan.frames
    print(f"segmented {len(frames)} frame(s) of {frames.source} from frame {plan.reference_frame} "
          f"({frames.names[plan.reference_frame]}), {method}; wrote {len(result.written)} file(s) to {plan.out_dir}",
          file=sys.stdout)
    if result.scores is not None:
        print(f"J&F over {result.scores['frames_scored']} frame(s) ({result.scores['protocol']}):", file=sys.stdout)
        print(format_scores(result.scores), file=sys.stdout)
    return 0

