"""Command-line pieces shared by the commands that run a predictor: model flags, device, annotation text.

``vrpsam segment``, ``vrpsam video`` and ``vrpsam app`` build their predictor from the same flags
(:func:`add_model_arguments`, :func:`choose_method`, :func:`build_predictor`) and read a reference
annotation the same way (:func:`read_annotation`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError

from ..sam.build import OFFICIAL_WEIGHTS
LEARNED_SAM = "vit_h"  # the official VRP-SAM runs on SAM ViT-H
DEFAULT_MODEL = "lite"  # what segment, video and app use when no model is given


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``model`` option group: --model, --method, --sam, --sam-checkpoint, --backbone-checkpoint, --fusion."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="NAME_OR_CHECKPOINT", help="a model name (e.g. tiny-random) or a VRP encoder checkpoint file")
    model.add_argument("--method", choices=("learned", "training-free"),
                       help="learned: VRP-SAM (default with --model); training-free: SAM only, PerSAM-style (default with --sam)")
    model.add_argument("--sam", metavar="NAME", help=f"SAM variant ({', '.join(OFFICIAL_WEIGHTS)}) for a checkpoint --model or training-free")
    model.add_argument("--sam-checkpoint", metavar="PATH_OR_NAME", help="SAM weights: a file or a weights-registry name (default: the variant's official file)")
    model.add_argument("--backbone-checkpoint", metavar="PATH", help="backbone weights for a VRP checkpoint that lacks them")
    model.add_argument("--fusion", choices=("concat", "mean"), help="k-shot rule of the learned model (default concat, the official one)")


def read_annotation(kind: str, text: str):
    """The value of ``--mask``/``--scribble`` (raw mask values of the file) or ``--points``/``--box`` (parsed)."""
    from ..io.images import load_mask
    from ..vrp.annotations import parse_box, parse_points

    if kind in ("mask", "scribble"):
        return load_mask(text)
    if kind == "points":
        return parse_points(text)
    if kind == "box":
        return parse_box(text)
    raise InputError(f"annotation kind {kind!r}: expected mask, points, box or scribble")


def choose_method(args: argparse.Namespace) -> str:
    """'learned' or 'training-free' from the flags, after checking they fit together (no heavy work)."""
    from ..sam.build import sam_model_registry
    from ..vrp.build import MODELS

    uses_sam = bool(args.sam or args.sam_checkpoint)
    if args.model is None and not uses_sam and args.method in (None, "learned"):
        args.model = DEFAULT_MODEL
        args.default_model = True  # build_predictor says so once the model is built
    method = args.method or ("learned" if args.model else "training-free" if uses_sam else None)
    if method is None:
        raise InputError("no model: pass --model NAME_OR_CHECKPOINT or --sam NAME --sam-checkpoint PATH_OR_NAME")
    if args.sam and args.sam not in sam_model_registry:
        raise InputError(f"--sam: unknown SAM model {args.sam!r} (known: {', '.join(sam_model_registry)})")
    known = ", ".join(MODELS)
    if method == "learned":
        if not args.model:
            raise InputError(f"--method learned needs --model NAME_OR_CHECKPOINT (a VRP checkpoint or one of: {known})")
        if args.model in MODELS:
            if uses_sam or args.backbone_checkpoint:
                raise InputError(f"--model {args.model} is a complete model; --sam/--sam-checkpoint/--backbone-checkpoint "
                                 "apply to a checkpoint file")
        elif not Path(args.model).expanduser().is_file():
            raise InputError(f"--model: {args.model!r} is neither a known model ({known}) nor an existing checkpoint file")
        return method
    if args.fusion or args.backbone_checkpoint:
        raise InputError("--fusion and --backbone-checkpoint apply to --method learned only")
    if args.model and uses_sam:
        raise InputError("--method training-free: give --model NAME (its SAM is used) or --sam/--sam-checkpoint, not both")
    if args.model and args.model not in MODELS:
        raise InputError(f"--method training-free uses SAM weights only: --model must be one of {known}, "
                         f"not {args.model!r}; or give --sam NAME --sam-checkpoint PATH_OR_NAME")
    return method


def _sam_choice(args: argparse.Namespace, default: str) -> tuple[str, str]:
    """(SAM variant, its checkpoint name or path); the variant follows a registry name when --sam is absent."""
    by_weights = {weights: name for name, weights in OFFICIAL_WEIGHTS.items() if name != "default"}
    sam = args.sam or by_weights.get(args.sam_checkpoint or "", default)
    return sam, args.sam_checkpoint or OFFICIAL_WEIGHTS[sam]


def resolve_device(text: str):
    """``--device`` text -> a ``torch.device`` this machine has (under torchrun, cuda is cuda:LOCAL_RANK)."""
    import torch

    from ..engine import distributed

    try:
        device = distributed.process_device(text)
    except (RuntimeError, ValueError):
        raise InputError(f"--device: {text!r} is not a device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {text}: CUDA is not available in this torch build or machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {text}: MPS is not available on this machine")
    return device


def build_predictor(args: argparse.Namespace, method: str):
    """The predictor the flags describe, on its device (weights are located before anything is built)."""
    from .. import weights
    from ..sam.build import sam_model_registry
    from ..vrp.build import LITE_NAME, MODELS, build_model, recorded_build

    device = resolve_device(args.device)
    if method == "learned":
        if args.model in MODELS:
            model = build_model(args.model)
            if getattr(args, "default_model", False):
                print(f"note: using {DEFAULT_MODEL}, a small demo model trained here on 128 COCO images "
                      "(pass --model for another model)", file=sys.stderr)
        else:
            path = Path(args.model).expanduser()
            recorded = recorded_build(path)  # our checkpoints record their SAM; official ones do not
            options = {}
            if args.sam or args.sam_checkpoint or not recorded:
                if recorded.get("sam") == LITE_NAME:
                    raise InputError(f"--model {args.model}: a lite checkpoint carries its own SAM parts; drop --sam/--sam-checkpoint")
                sam, sam_checkpoint = _sam_choice(args, LEARNED_SAM)
                options = dict(sam=sam, sam_checkpoint=weights.resolve(sam_checkpoint))
            if args.backbone_checkpoint:
                options["backbone_checkpoint"] = args.backbone_checkpoint
            model = build_model(path, **options)
        from ..vrp.predictor import VRPPredictor

        return VRPPredictor(model.to(device), fusion=args.fusion or "concat")
    if args.model:
        sam_model = build_model(args.model).sam
    else:
        name, sam_checkpoint = _sam_choice(args, LEARNED_SAM)
        sam_model = sam_model_registry[name](checkpoint=weights.resolve(sam_checkpoint))
    from ..vrp.training_free import TrainingFreePredictor

    return TrainingFreePredictor(sam_model.to(device))
