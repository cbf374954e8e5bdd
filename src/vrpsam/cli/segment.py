"""``vrpsam segment``: annotate a reference once, segment many targets, write masks, overlays and COCO JSON.

    vrpsam segment --reference REF.jpg (--mask M.png | --points "x,y;x,y" | --box x1,y1,x2,y2 | --scribble S.png)
                   --targets T.jpg DIR "glob/*.jpg" ... --out DIR [--model NAME_OR_CHECKPOINT]
                   [--method learned|training-free] [--sam NAME --sam-checkpoint PATH_OR_NAME]

k-shot: repeat ``--reference`` and its annotation; the i-th annotation (in command-line order) belongs
to the i-th reference. Everything the user gave is checked before the output folder is created or any
file written: reference images, annotation text and files, annotation fits its image, the targets,
output names and existing files, the model name and its weights. Under ``torchrun`` the targets are
split across processes (rank r takes r::world) and rank 0 writes the merged COCO JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from .model_options import add_model_arguments, build_predictor, choose_method, read_annotation
from .model_options import resolve_device as _device

ANNOTATION_KINDS = ("mask", "points", "box", "scribble")


class _InOrder(argparse.Action):
    """Appends ``(option name, value)`` to one shared list, so references and annotations keep their order."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((option_string.lstrip("-"), values))
        setattr(namespace, self.dest, items)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shots = parser.add_argument_group("references (repeat --reference and its annotation for k-shot)")
    shots.add_argument("--reference", action=_InOrder, dest="shots", metavar="IMAGE", help="annotated example image")
    shots.add_argument("--mask", action=_InOrder, dest="shots", metavar="PNG", help="binary mask of the object, the reference's size")
    shots.add_argument("--points", action=_InOrder, dest="shots", metavar="'x,y;x,y'", help="clicks on the object, in reference pixels")
    shots.add_argument("--box", action=_InOrder, dest="shots", metavar="x1,y1,x2,y2", help="box around the object, in reference pixels")
    shots.add_argument("--scribble", action=_InOrder, dest="shots", metavar="PNG", help="binary image of strokes on the object")
    parser.add_argument("--targets", nargs="+", action="extend", required=True, metavar="PATH",
                        help="images, folders (their images, sorted, not recursive) or glob patterns ('**' recurses)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder: OUT/<target stem>.png, overlays/, results.coco.json")
    add_model_arguments(parser)
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps... (under torchrun, cuda means cuda:LOCAL_RANK)")
    run_group.add_argument("--overwrite", action="store_true", help="replace existing output files")
    run_group.add_argument("--no-overlays", action="store_true", help="skip OUT/overlays/")
    run_group.add_argument("--no-coco", action="store_true", help="skip OUT/results.coco.json")
    run_group.add_argument("--quiet", action="store_true", help="no progress bar")


def pair_references(shots: list[tuple[str, str]] | None) -> list[tuple[str, str, str]]:
    """``[(kind, value), ...]`` in command-line order -> ``[(reference, annotation kind, value), ...]``."""
    shots = shots or []
    references = [value for kind, value in shots if kind == "reference"]
    annotations = [(kind, value) for kind, value in shots if kind != "reference"]
    if not references:
        raise InputError("--reference: required (the annotated example image)")
    if len(references) == len(annotations):
        return [(ref, kind, value) for ref, (kind, value) in zip(references, annotations)]
    if not annotations:
        raise InputError(f"--reference {references[0]}: needs an annotation: --mask, --points, --box or --scribble")
    groups: list[list[str]] = [[]]  # annotation kinds after each --reference; any before the first join it
    seen = 0
    for kind, _ in shots:
        if kind == "reference":
            seen += 1
            if seen > 1:
                groups.append([])
        else:
            groups[-1].append(kind)
    for reference, kinds in zip(references, groups):
        if len(set(kinds)) > 1:
            named = " and ".join(f"--{k}" for k in dict.fromkeys(kinds))
            raise InputError(f"--reference {reference}: several annotation kinds ({named}); give exactly one per reference")
    counted = f"{len(annotations)} annotation" + ("s" if len(annotations) != 1 else "")
    raise InputError(f"{len(references)} --reference but {counted} (--mask/--points/--box/--scribble); "
                     "give exactly one per reference, in the same order (several clicks go in one --points 'x,y;x,y')")


def load_shots(pairs: list[tuple[str, str, str]]):
    """Read and check every reference: ``[(image (H, W, 3) uint8, kind, Annotation), ...]``."""
    from ..io.images import load_image
    from ..vrp.predictor import make_annotation

    loaded = []
    for reference, kind, text in pairs:
        image = load_image(reference)
        value = read_annotation(kind, text)
        try:
            annotation = make_annotation(**{kind: value})
            annotation.validate(image.shape[:2])
        except InputError as exc:
            raise InputError(f"--reference {reference} --{kind} {text}: {exc}") from None
        loaded.append((image, kind, annotation))
    return loaded


def run(args: argparse.Namespace) -> int:
    from ..engine import distributed
    from ..engine.segment import check_outputs, find_targets, plan_outputs, segment_targets

    joined = distributed.init_from_env(_device(args.device))
    try:
        pairs = pair_references(args.shots)
        method = choose_method(args)
        shots = load_shots(pairs)
        targets = find_targets(args.targets)
        out = Path(args.out).expanduser()
        overlays, coco_json = not args.no_overlays, not args.no_coco
        check_outputs(plan_outputs(targets, out, overlays=overlays, coco_json=coco_json), targets, overwrite=args.overwrite)
        predictor = build_predictor(args, method)
        for image, kind, annotation in shots:
            predictor.add_reference(image, **{kind: annotation})
        written = segment_targets(
            predictor, targets, out, overwrite=args.overwrite, overlays=overlays, coco_json=coco_json,
            progress=not args.quiet,
        )
        if distributed.is_main():
            rank_note = f" (rank 0 of {distributed.world_size()})" if joined else ""
            print(f"segmented {len(targets)} target(s) with {len(shots)} reference(s), {method}; "
                  f"wrote {len(written)} file(s){rank_note} to {out}", file=sys.stdout)
    finally:
        distributed.cleanup()
    return 0
