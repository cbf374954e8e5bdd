"""Training configuration: one dataclass, validated up front, saved as JSON next to every checkpoint.

Defaults are the official recipe (§3.4 of the official-code notes): AdamW, lr 1e-4, weight decay 1e-6,
50 epochs, cosine schedule per iteration, seed 321, ResNet-50 (deep stem) VRP encoder on SAM ViT-H,
512×512 input, 50 queries, a global batch of 8.

``batch_size`` is **per process**: the global batch is ``batch_size × world size`` (torchrun's
``--nproc_per_node``). The official recipe is 4 processes × 2 = 8; the authors say the global batch must
be 8 (issues #16, #17), so one process should use 8, two use 4, and so on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.simulate import CONDITIONS
from ..errors import InputError

ANNOTATIONS = (*CONDITIONS, "mixed")
SELECT_ON = ("val", "test", "none")
DEVICES = ("auto", "cpu", "cuda")
PREPROCESSING = ("official", "standard")
TINY_SAM = "tiny"  # a seeded random 2-block ViT SAM (see vrpsam.vrp.build.build_tiny_sam), for tests
LITE_SAM = "lite"  # the lite model (vrpsam.vrp.build.build_lite): SAM-shaped, trained from scratch with the VRP encoder
RECIPE_GLOBAL_BATCH = 8

# Named model settings; explicit fields given alongside a preset win (see TrainConfig.with_preset).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's model: SAM ViT-H + deep-stem ResNet-50 at 512² (weights must be supplied).
    "official": dict(sam="vit_h", backbone="resnet50_v2", image_size=1024, input_size=512, num_queries=50),
    # A CPU-sized model: tiny random SAM at 128² + the real ImageNet MobileNetV2 backbone.
    "tiny": dict(
        sam=TINY_SAM, sam_checkpoint=None, backbone="mobilenet_v2", backbone_checkpoint="imagenet",
        image_size=128, input_size=128, num_queries=50,
    ),
    # The lite model: frozen ImageNet MobileNetV2 + SAM-shaped neck/decoder trained from scratch, 512².
    "lite": dict(
        sam=LITE_SAM, sam_checkpoint=None, backbone="mobilenet_v2", backbone_checkpoint="imagenet",
        image_size=512, input_size=512, num_queries=50, annotation_downsample="max",
    ),
}  # fmt: skip


@dataclass
class TrainConfig:
    """Everything a training run depends on. See the module docstring for the batch convention."""

    # data
    dataset: str = ""  # "KIND:PATH", read by vrpsam.data.open_source
    fold: int = 0
    annotation: str = "mask"  # reference annotation simulated per episode: point|box|scribble|mask|mixed
    # "mixed": relative weights of the annotation types drawn (e.g. {"box": 2}: box twice as often as each
    # other type, unnamed ones weigh 1); empty: uniform
    annotation_weights: dict[str, float] = field(default_factory=dict)
    shots: int = 1
    # optimisation (official recipe)
    epochs: int = 50
    batch_size: int = 8  # per process; global = batch_size x world size (recipe: 8)
    lr: float = 1e-4
    weight_decay: float = 1e-6
    seed: int = 321
    # draws the validation classes and the validation/calibration episodes; None: ``seed``. Set apart from
    # ``seed``, a recipe's runs can be compared on one split, or one recipe on several splits
    validation_seed: int | None = None
    iters_per_epoch: int | None = None  # None: the dataset's epoch (training episodes / global batch)
    max_iters: int | None = None  # stop after this many iterations in total (tests, smoke runs)
    overfit_episodes: int | None = None  # debug: train on epoch 0's first N episodes only, over and over
    # the weights kept at the end are the equal average of those after each iteration past this one
    # (stochastic weight averaging, torch.optim.swa_utils.AveragedModel); None: the last iteration's
    average_from: int | None = None
    # augmentation (vrpsam.data.augment; all off by default, as the official recipe)
    augment: bool = False  # flips, scale/crop jitter, colour jitter
    augment_views: int = 0  # 0: fresh per draw; N: N fixed views per photo (frozen features reusable)
    copy_paste: float = 0.0  # probability of pasting an instance from another training image
    zoom: float = 0.0  # probability of a crop around the episode's object instead of a random one
    same_image: float = 0.0  # fraction of episodes whose query is another augmentation of the support photo
    # classes found by clustering frozen features over unlabelled pixels (vrpsam.data.pseudo), added to the training classes
    pseudo_classes: int = 0
    # leave the pixels of the classes held out from training (validation and test) out of the loss instead
    # of teaching them as background (vrpsam.engine.train.open_training_data)
    ignore_held_out: bool = False
    # model
    sam: str = "vit_h"  # a sam_model_registry name, or "tiny"
    # "official": the variant's official file through the weights registry; a path or registry name;
    # None: random weights (the tiny and lite presets, or an explicit experiment)
    sam_checkpoint: str | None = "official"
    backbone: str = "resnet50_v2"
    backbone_checkpoint: str | None = None  # path, or "imagenet" for mobilenet_v2
    image_size: int = 1024  # SAM's input side
    input_size: int = 512  # the square the dataset resizes images to
    num_queries: int = 50
    annotation_downsample: str = "nearest"
    preprocessing: str = "official"
    # validation and model selection
    # "val": held-out classes of the training split; "test": the fold (paper protocol); "none": nothing held
    # out, every training class trains (the final run of a recipe chosen on held-out classes: no validation)
    select_on: str = "val"
    val_episodes: int = 1000
    validate_every: int = 1  # epochs; 0 = never (the last checkpoint only)
    # after the last step, weight lite's prototype prior by validation mIoU (vrpsam.engine.calibrate)
    calibrate_prior: bool = False
    # validation episodes per annotation type and setting of that calibration; 0: val_episodes. A choice
    # among 18-27 settings needs more episodes than tracking one model's progress does
    calibration_episodes: int = 0
    # instead of calibrate_prior's search, this setting of it (vrpsam.engine.calibrate.setting_name, e.g.
    # "x2-2s0.5": the trained scale times 2, its bias minus 2, self-support 0.5), e.g. one a held-out run chose
    prior_setting: str | None = None
    # lite: the prior's self-support weight during training (vrpsam.vrp.proto.self_support_scores)
    prior_self_support: float = 0.0
    # lite: the prior's scale when training starts; None: vrpsam.vrp.proto.INITIAL_SCALE (20). Adam moves
    # this one scalar little (20 -> 19.96 in 600 steps at lr 3e-4), so in effect it is a setting
    prior_scale: float | None = None
    # lite: background prototypes of the prior (vrpsam.vrp.proto.background_prototypes); an architecture
    # setting, recorded in the checkpoint's build settings
    prior_background_count: int = 1
    # lite: in training, the probability of zeroing each channel of the frozen maps its neck reads
    # (vrpsam.sam.lite_encoder.LiteNeck); against overfitting to the few fixed views of a small data set
    feature_dropout: float = 0.0
    # machinery
    device: str = "auto"
    amp: bool = False  # CUDA only: bf16 autocast (fp16 + loss scaling where bf16 is unsupported)
    workers: int = 0
    out_dir: str = "runs/vrpsam"
    embedding_cache: str | None = None  # folder of cached SAM image embeddings, shared between runs
    index_cache: str | None = None  # folder where the dataset's class index is kept between runs
    tensorboard: bool = True  # also write TensorBoard events when the package is installed (CSV always)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first field that cannot work."""
        if not self.dataset or ":" not in self.dataset:
            raise InputError(f"dataset: expected KIND:PATH (e.g. yolo:/data/coco128-seg), got {self.dataset!r}")
        _choice("annotation", self.annotation, ANNOTATIONS)
        self._validate_annotation_weights()
        _choice("select_on", self.select_on, SELECT_ON)
        _choice("device", self.device, DEVICES)
        _choice("preprocessing", self.preprocessing, PREPROCESSING)
        for name in ("epochs", "batch_size", "shots", "num_queries", "image_size", "input_size"):
            _positive(name, getattr(self, name))
        for name in ("iters_per_epoch", "max_iters", "overfit_episodes"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.validation_seed is not None and (not isinstance(self.validation_seed, int) or isinstance(self.validation_seed, bool)
                                                 or self.validation_seed < 0):
            raise InputError(f"validation_seed: expected a non-negative integer, got {self.validation_seed!r}")
        if self.average_from is not None and (not isinstance(self.average_from, int) or isinstance(self.average_from, bool) or self.average_from < 0):
            raise InputError(f"average_from: expected an iteration (a non-negative integer), got {self.average_from!r}")
        for name in ("copy_paste", "zoom", "same_image"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise InputError(f"{name}: expected a fraction in [0, 1], got {value!r}")
        if (self.augment_views or self.copy_paste or self.zoom) and not self.augment:
            raise InputError("augment_views/copy_paste/zoom: they are part of augmentation; add --augment")
        if self.sam not in (LITE_SAM, TINY_SAM) and self.backbone_checkpoint is None:
            raise InputError(f"backbone_checkpoint: {self.backbone} needs its weights file (e.g. {self.backbone}.pth); "
                             "a VRP encoder on a random backbone learns nothing useful")
        if self.sam == LITE_SAM and (self.backbone != "mobilenet_v2" or self.image_size != self.input_size):
            raise InputError("sam: lite is built on mobilenet_v2 with image_size = input_size (use --model-preset lite)")
        for name in ("fold", "workers", "val_episodes", "calibration_episodes", "validate_every", "seed", "augment_views", "pseudo_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(f"{name}: expected a non-negative integer, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise InputError(f"lr: expected a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise InputError(f"weight_decay: expected a non-negative number, got {self.weight_decay!r}")
        if self.validate_every and not self.val_episodes:
            raise InputError("val_episodes: must be positive when validating (or set validate_every=0)")
        if self.calibrate_prior and (self.sam != LITE_SAM or not self.val_episodes):
            raise InputError("calibrate_prior: needs the lite model (its prototype prior) and val_episodes > 0")
        if self.select_on == "none" and (self.validate_every or self.calibrate_prior):
            raise InputError("select_on: 'none' holds no classes out to validate on; set validate_every=0 and, "
                             "instead of calibrate_prior, prior_setting")
        if self.prior_setting is not None:
            if self.sam != LITE_SAM or self.calibrate_prior:
                raise InputError("prior_setting: only for the lite model, and not with calibrate_prior (which searches)")
            parse_setting_name(self.prior_setting, source="prior_setting")
        if not (isinstance(self.prior_self_support, (int, float)) and 0 <= self.prior_self_support <= 1):
            raise InputError(f"prior_self_support: expected a weight in [0, 1], got {self.prior_self_support!r}")
        if self.prior_self_support and self.sam != LITE_SAM:
            raise InputError("prior_self_support: only the lite model has a prototype prior")
        if not (isinstance(self.prior_background_count, int) and self.prior_background_count >= 1):
            raise InputError(f"prior_background_count: expected a positive integer, got {self.prior_background_count!r}")
        if self.prior_background_count != 1 and self.sam != LITE_SAM:
            raise InputError("prior_background_count: only the lite model has a prototype prior")
        if self.prior_scale is not None:
            if not (isinstance(self.prior_scale, (int, float)) and math.isfinite(self.prior_scale) and self.prior_scale > 0):
                raise InputError(f"prior_scale: expected a positive number, got {self.prior_scale!r}")
            if self.sam != LITE_SAM:
                raise InputError("prior_scale: only the lite model has a prototype prior")
        if not (isinstance(self.feature_dropout, (int, float)) and not isinstance(self.feature_dropout, bool)
                and 0 <= self.feature_dropout < 1):
            raise InputError(f"feature_dropout: expected a probability in [0, 1), got {self.feature_dropout!r}")
        if self.feature_dropout and self.sam != LITE_SAM:
            raise InputError("feature_dropout: only the lite model has a neck on frozen features")
        if self.amp and self.device == "cpu":
            raise InputError("amp: mixed precision is for CUDA only; drop --amp or use --device cuda")

    def _validate_annotation_weights(self) -> None:
        weights = self.annotation_weights
        if not isinstance(weights, dict):
            raise InputError(f"annotation_weights: expected a mapping of annotation type to weight, got {weights!r}")
        if weights and self.annotation != "mixed":
            raise InputError("annotation_weights: weigh the annotation types of --annotation mixed only")
        for name, weight in weights.items():
            _choice("annotation_weights", name, CONDITIONS)
            if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0):
                raise InputError(f"annotation_weights: {name}'s weight must be a non-negative number, got {weight!r}")
        if weights and not sum(self.annotation_type_weights()):
            raise InputError("annotation_weights: at least one annotation type needs a positive weight")

    def annotation_type_weights(self) -> list[float]:
        """The weight of each of :data:`vrpsam.data.simulate.CONDITIONS` in a mixed run, in that order."""
        return [float(self.annotation_weights.get(name, 1.0)) for name in CONDITIONS]

    # ---- presets

    @classmethod
    def with_preset(cls, preset: str, **fields: Any) -> "TrainConfig":
        """A config from the named :data:`PRESETS` entry, ``fields`` overriding it."""
        if preset not in PRESETS:
            raise InputError(f"model preset: unknown {preset!r} (known: {', '.join(PRESETS)})")
        return cls(**{**PRESETS[preset], **fields})

    # ---- serialisation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object of training settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source}: unknown training settings {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "TrainConfig":
        """From a JSON string or a ``.json`` file (e.g. ``out_dir/config.json``)."""
        text, source = str(text_or_path), "config"
        if not text.lstrip().startswith("{"):
            path = Path(text_or_path)
            if not path.is_file():
                raise InputError(f"{path}: no such config file")
            text, source = path.read_text(encoding="utf-8"), str(path)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        from ..io.atomic import atomic_write_bytes

        atomic_write_bytes(Path(path), (self.to_json() + "\n").encode("utf-8"))

    # ---- derived values

    def global_batch(self, world_size: int) -> int:
        return self.batch_size * world_size

    def split_seed(self) -> int:
        """The seed of the validation split and its episodes (``validation_seed``, else ``seed``)."""
        return self.seed if self.validation_seed is None else self.validation_seed

    def dataset_kind(self) -> str:
        return self.dataset.split(":", 1)[0]


_SETTING_NAME = re.compile(r"x(?P<multiplier>[0-9.e+-]+?)(?P<offset>[+-][0-9.e+-]+?)s(?P<self_support>[0-9.e+-]+)")


def setting_name(multiplier: float, offset: float, self_support: float = 0.0) -> str:
    """``x2+4s0.5``: the prior's trained scale times 2, its bias plus 4, self-support weight 0.5
    (a setting of :func:`vrpsam.engine.calibrate.calibrate_prior`)."""
    return f"x{multiplier:g}{offset:+g}s{self_support:g}"


def parse_setting_name(text: Any, *, source: str = "prior setting") -> tuple[float, float, float]:
    """(multiplier, offset, self-support) of a :func:`setting_name`; ``source`` names it in the error."""
    match = _SETTING_NAME.fullmatch(text) if isinstance(text, str) else None
    try:
        values = tuple(float(match[k]) for k in ("multiplier", "offset", "self_support")) if match else None
    except ValueError:
        values = None
    if values is None or values[0] <= 0 or not 0 <= values[2] <= 1:
        raise InputError(f"{source}: expected xSCALE±BIASsWEIGHT with SCALE > 0 and WEIGHT in [0, 1] "
                         f"(e.g. x2-2s0.5), got {text!r}")
    return values


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{name}: expected a positive integer, got {value!r}")
