"""``vrpsam train``: episodic meta-training of the VRP encoder; one process or ``torchrun``.

    vrpsam train --dataset coco:/data/COCO --fold 0 --annotation mask --batch-size 8 --out runs/coco-f0
    torchrun --nproc_per_node 4 -m vrpsam.cli.main train ... --batch-size 2      # 4 x 2 = the recipe's 8
    vrpsam train --resume runs/coco-f0/last.safetensors                           # continue exactly

Settings start from the official recipe (or ``--model-preset``, or ``--config FILE.json``, or the run
being resumed) and every option given on the command line overrides them. ``--batch-size`` is per
process. Only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..engine.config import ANNOTATIONS, DEVICES, PREPROCESSING, PRESETS, TrainConfig
from ..errors import InputError

# command-line option -> TrainConfig field, for options that map one to one
_FIELDS = {
    "dataset": "dataset", "fold": "fold", "annotation": "annotation", "shots": "shots", "epochs": "epochs",
    "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay", "seed": "seed", "validation_seed": "validation_seed",
    "iters_per_epoch": "iters_per_epoch", "max_iters": "max_iters", "overfit_episodes": "overfit_episodes",
    "average_from": "average_from",
    "sam": "sam", "sam_checkpoint": "sam_checkpoint", "backbone": "backbone",
    "backbone_checkpoint": "backbone_checkpoint", "image_size": "image_size", "input_size": "input_size",
    "num_queries": "num_queries", "annotation_downsample": "annotation_downsample",
    "preprocessing": "preprocessing", "val_episodes": "val_episodes", "validate_every": "validate_every",
    "calibration_episodes": "calibration_episodes",
    "device": "device", "workers": "workers", "out": "out_dir", "embedding_cache": "embedding_cache",
    "index_cache": "index_cache", "augment_views": "augment_views", "copy_paste": "copy_paste", "zoom": "zoom",
    "same_image": "same_image", "pseudo_classes": "pseudo_classes", "prior_self_support": "prior_self_support",
    "prior_scale": "prior_scale", "feature_dropout": "feature_dropout",
    "prior_background_count": "prior_background_count", "prior_setting": "prior_setting",
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", metavar="KIND:PATH", help="e.g. coco:/data/COCO, pascal:/data/VOCdevkit, yolo:/data/coco128-seg")
    data.add_argument("--fold", type=int, help="train on the other folds' classes (default 0)")
    data.add_argument("--annotation", choices=ANNOTATIONS, help="reference annotation simulated per episode (default mask)")
    data.add_argument("--annotation-weights", metavar="TYPE=W,...", help="with --annotation mixed: how often each type is drawn, relative (e.g. box=2: boxes twice as often as each other type; default uniform)")
    data.add_argument("--shots", type=int, help="support images per training episode (default 1)")
    data.add_argument("--ignore-held-out", action="store_true", help="leave the held-out classes' pixels (validation and test) out of the loss instead of teaching them as background")
    augment = parser.add_argument_group("augmentation (default: none, as the official recipe)")
    augment.add_argument("--augment", action="store_true", help="flips, scale/crop jitter, colour jitter")
    augment.add_argument("--augment-views", type=int, metavar="N", help="N fixed augmented views per photo, so frozen features are reused (default 0: fresh each time)")
    augment.add_argument("--copy-paste", type=float, metavar="P", help="probability of pasting an instance from another training image (needs --augment)")
    augment.add_argument("--zoom", type=float, metavar="P", help="probability of cropping around the episode's object, so it fills 15-80%% of the view (needs --augment)")
    augment.add_argument("--same-image", type=float, metavar="F", help="fraction of episodes made of two augmentations of one photo")
    augment.add_argument("--pseudo-classes", type=int, metavar="K", help="add K classes clustered from the frozen features of unlabelled pixels (default 0)")
    optim = parser.add_argument_group("optimisation (defaults: the official recipe)")
    optim.add_argument("--epochs", type=int, help="default 50")
    optim.add_argument("--batch-size", type=int, help="episodes per process and step; global batch = this x processes (recipe: 8 in total)")
    optim.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-4)")
    optim.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 1e-6)")
    optim.add_argument("--seed", type=int, help="episodes, annotations, initialisation (default 321)")
    optim.add_argument("--validation-seed", type=int, metavar="SEED", help="the validation classes and episodes (default: --seed), so that runs of other seeds validate on the same split")
    optim.add_argument("--iters-per-epoch", type=int, help="default: training images / global batch")
    optim.add_argument("--max-iters", type=int, help="stop after N iterations in total (smoke runs)")
    optim.add_argument("--average-from", type=int, metavar="ITER", help="keep the average of the weights after each iteration past ITER instead of the last ones (stochastic weight averaging; default off)")
    optim.add_argument("--overfit-episodes", type=int, metavar="N", help="debug: train on the same N episodes over and over")
    model = parser.add_argument_group("model")
    model.add_argument("--model-preset", choices=sorted(PRESETS), help="named model settings (tiny: random 128px SAM + ImageNet MobileNetV2, CPU-sized; lite: the small demo model, SAM-shaped parts trained from scratch on ImageNet MobileNetV2)")
    model.add_argument("--sam", help="SAM variant: vit_h (default), vit_l, vit_b, vit_t (MobileSAM), tiny, lite")
    model.add_argument("--sam-checkpoint", metavar="PATH_OR_NAME", help="SAM weights (path or registry name, e.g. sam_vit_h)")
    model.add_argument("--backbone", help="resnet50_v2 (default), resnet101_v2, vgg16_bn, mobilenet_v2")
    model.add_argument("--backbone-checkpoint", metavar="PATH", help="backbone weights (imagenet for mobilenet_v2)")
    model.add_argument("--image-size", type=int, help="SAM input side (default 1024)")
    model.add_argument("--input-size", type=int, help="dataset image side (default 512)")
    model.add_argument("--num-queries", type=int, help="prompt tokens (default 50)")
    model.add_argument("--annotation-downsample", choices=("nearest", "max"), help="default nearest (official)")
    model.add_argument("--preprocessing", choices=PREPROCESSING, help="default official")
    model.add_argument("--prior-self-support", type=float, metavar="W", help="lite: weight of the target's own prototypes in the prior while training (default 0)")
    model.add_argument("--prior-scale", type=float, metavar="S", help="lite: the prior's scale when training starts (default 20)")
    model.add_argument("--feature-dropout", type=float, metavar="P", help="lite: in training, zero each channel of the frozen maps its neck reads with probability P (default 0)")
    model.add_argument("--prior-background-count", type=int, metavar="K", help="lite: background prototypes of the prior, k-means of the reference's background (default 1)")
    val = parser.add_argument_group("validation")
    val.add_argument("--select-on-test", action="store_true", help="pick the best epoch on the test fold (paper protocol) instead of held-out training classes")
    val.add_argument("--train-on-all-classes", action="store_true", help="hold no validation classes out: every training class of the fold trains, and nothing validates (the final run of a recipe chosen on held-out classes; with lite, give its --prior-setting)")
    val.add_argument("--val-episodes", type=int, help="episodes per validation pass (default 1000)")
    val.add_argument("--validate-every", type=int, metavar="EPOCHS", help="0 = never (default 1)")
    val.add_argument("--calibrate-prior", action="store_true", help="lite: after the last step, weight the prototype prior by validation mIoU (scale x1/x2/x4, bias -2/+0/+2, self-support 0, 0.5 and the --prior-self-support trained with)")
    val.add_argument("--prior-setting", metavar="xS±BsW", help="lite: after the last step, set the prior to this setting of --calibrate-prior's (e.g. x2-2s0.5: trained scale x2, bias -2, self-support 0.5) without searching")
    val.add_argument("--calibration-episodes", type=int, metavar="N", help="episodes per annotation type and setting of --calibrate-prior (default: --val-episodes)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="DIR", help="run folder: checkpoints, config.json, log.csv")
    run.add_argument("--resume", metavar="CKPT", help="continue a run from its last.safetensors (or last.state.pt)")
    run.add_argument("--config", metavar="FILE.json", help="start from these settings (e.g. a run's config.json)")
    run.add_argument("--device", choices=DEVICES, help="default auto (CUDA when available)")
    run.add_argument("--amp", action="store_true", help="bf16/fp16 autocast (CUDA only)")
    run.add_argument("--workers", type=int, help="DataLoader workers per process (default 0)")
    run.add_argument("--embedding-cache", metavar="DIR", help="cache SAM image embeddings here (shared between runs)")
    run.add_argument("--index-cache", metavar="DIR", help="keep the dataset's class index here between runs")
    run.add_argument("--no-tensorboard", action="store_true", help="CSV log only")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: base (``--config``, the resumed run, a preset, or the recipe) + given options."""
    base = _base_settings(args)
    given = {field: getattr(args, option) for option, field in _FIELDS.items() if getattr(args, option) is not None}
    if args.annotation_weights is not None:
        given["annotation_weights"] = _annotation_weights(args.annotation_weights)
    if args.select_on_test and args.train_on_all_classes:
        raise InputError("--train-on-all-classes: give either it or --select-on-test, not both")
    if args.select_on_test:
        given["select_on"] = "test"
    if args.train_on_all_classes:
        given["select_on"] = "none"
        given.setdefault("validate_every", 0)
    if args.amp:
        given["amp"] = True
    if args.augment:
        given["augment"] = True
    if args.calibrate_prior:
        given["calibrate_prior"] = True
    if args.ignore_held_out:
        given["ignore_held_out"] = True
    if args.no_tensorboard:
        given["tensorboard"] = False
    settings = {**base, **given}
    if args.resume is not None and args.out is None:
        settings["out_dir"] = str(Path(args.resume).parent)  # where the run is now, wherever it was made
    if "out_dir" not in settings:
        raise InputError("--out: required (the folder for checkpoints and logs)")
    if not settings.get("dataset"):
        raise InputError("--dataset: required (KIND:PATH), unless --config or --resume supplies it")
    return TrainConfig.from_dict(settings, source="command line")


def _annotation_weights(text: str) -> dict[str, float]:
    """``box=2,mask=0.5`` -> {"box": 2.0, "mask": 0.5}; the types and weights are checked by TrainConfig."""
    weights = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"--annotation-weights: expected TYPE=WEIGHT items separated by commas, got {item!r}") from None
    return weights


def _base_settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.config and args.model_preset:
        raise InputError("--model-preset: give either --config or --model-preset, not both")
    if args.config:
        return TrainConfig.from_json(args.config).to_dict()
    if args.resume:
        from ..engine.checkpointing import load_training_state

        if args.model_preset:
            raise InputError("--model-preset: a resumed run keeps its model; drop --model-preset")
        return dict(load_training_state(args.resume)["config"])
    return dict(PRESETS[args.model_preset]) if args.model_preset else {}


def run(args: argparse.Namespace) -> int:
    from ..engine.calibrate import setting_name
    from ..engine.train import train

    config = config_from_args(args)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    if result.rank == 0:
        print(f"last checkpoint: {result.last} (iteration {result.iteration}, {result.epochs_completed} epochs)")
        if result.best is not None:
            print(f"best checkpoint: {result.best} ({config.select_on} mIoU {result.best_miou:.2f})")
        if result.calibration is not None:
            chosen = result.calibration
            measured = f"validation mIoU {chosen['val_miou']}" if chosen["val_miou"] else "as given, not measured"
            print(f"prior of the last checkpoint: scale {chosen['scale']:.2f}, bias {chosen['bias']:.2f} "
                  f"({setting_name(chosen['multiplier'], chosen['bias_offset'], chosen['self_support'])} of the trained ones; {measured})")
        print(f"log: {result.out_dir / 'log.csv'}")
    return 0
