"""Building VRP-SAM: from parts (:func:`build_vrp_sam`) or by model name (:data:`MODELS`, :func:`build_model`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from ..weights import load_into
from ..sam.build import OFFICIAL_WEIGHTS, _assemble, sam_model_registry
from ..sam.image_encoder import ImageEncoderViT
from ..sam.sam import Sam
from .backbones import build_backbone
from .checkpoint import checkpoint_format, load_vrp_checkpoint, load_vrp_encoder
from .encoder import VRPEncoder
from .model import VRPSAM

PathLike = str | os.PathLike


def build_vrp_sam(
    *,
    sam: str | Sam = "vit_h",
    backbone: str = "resnet50_v2",
    sam_checkpoint: PathLike | None = "official",
    backbone_checkpoint: PathLike | None = None,
    checkpoint: PathLike | None = None,
    preprocessing: str = "official",
    image_size: int = 1024,
    input_size: int = 512,
    num_queries: int = 50,
    annotation_downsample: str | None = None,
) -> VRPSAM:
    """VRP-SAM from its parts.

    ``sam``: a ``sam_model_registry`` name or a built :class:`Sam`. ``sam_checkpoint``: ``"official"``
    (default) for the variant's official file found through the weights registry, a path or registry
    name, or ``None`` for random weights (tests and speed measurements only). ``checkpoint``: VRP encoder weights, official ``best_model.pt`` or our
    ``.safetensors``; the backbone and query count then come from the file. Without it the encoder is
    randomly initialised on ``backbone`` (weights from ``backbone_checkpoint``).
    ``annotation_downsample`` defaults to the checkpoint's setting, else ``"nearest"`` (official).
    """
    if isinstance(sam, str):
        if sam not in sam_model_registry:
            raise InputError(f"sam: unknown model {sam!r} (known: {', '.join(sam_model_registry)})")
        if sam_checkpoint == "official":
            sam_checkpoint = OFFICIAL_WEIGHTS[sam]
        sam = sam_model_registry[sam](checkpoint=sam_checkpoint, image_size=image_size)
    if checkpoint is not None:
        encoder = load_vrp_encoder(checkpoint, backbone_checkpoint=backbone_checkpoint, annotation_downsample=annotation_downsample)
    else:
        encoder = VRPEncoder(
            build_backbone(backbone, backbone_checkpoint),
            num_queries=num_queries,
            annotation_downsample=annotation_downsample or "nearest",
        )
    return VRPSAM(sam, encoder, preprocessing=preprocessing, input_size=input_size).eval()


def _tiny_random(seed: int = 0) -> VRPSAM:
    """A seeded, randomly initialised tiny VRP-SAM for checking pipelines in seconds on a CPU.

    A 2-block ViT (128² input, 8×8 embeddings), the full SAM prompt encoder and mask decoder, and a
    random MobileNetV2 backbone at 128² input. It segments nothing meaningful.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        sam = _tiny_sam()
        vrp = VRPEncoder(build_backbone("mobilenet_v2"), num_queries=8)
        _realistic_init(vrp.trainable_modules())
    finally:
        torch.random.set_rng_state(generator_state)
    return VRPSAM(sam, vrp, preprocessing="official", input_size=128).eval()


TINY_SAM_SIZE = 128


def build_tiny_sam(seed: int = 0) -> Sam:
    """The seeded random SAM of the tiny model: a 2-block ViT at 128² (8×8 embeddings), full prompt
    encoder and mask decoder. For training and pipeline checks on a CPU; the same seed gives the same
    weights, so a run and its evaluation can each rebuild it."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return _tiny_sam().eval()
    finally:
        torch.random.set_rng_state(generator_state)


def _tiny_sam() -> Sam:
    # Draws from the global generator; callers seed it.
    encoder = ImageEncoderViT(
        img_size=TINY_SAM_SIZE, embed_dim=64, depth=2, num_heads=2, window_size=4, global_attn_indexes=(1,)
    )
    return _assemble(encoder, image_size=TINY_SAM_SIZE)


def _realistic_init(module: nn.Module) -> None:
    # PyTorch's default conv init leaves the 1x1 merges near zero output; N(0, 1/fan_in) keeps signal alive.
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.normal_(parameter, std=parameter[0].numel() ** -0.5)


# ---- lite: a small VRP-SAM trained here on frozen ImageNet MobileNetV2 features (see checkpoints/lite/)

LITE_NAME = "lite"  # also the "sam" value a lite checkpoint records under BUILD_KEY
LITE_INPUT_SIZE = 512
LITE_SAM_PARTS = ("image_encoder.neck", "prompt_encoder", "mask_decoder")
LITE_NUM_QUERIES = 50
# shipped inside the package (package data), so a wheel install has it too
LITE_WEIGHTS = Path(__file__).resolve().parents[1] / "checkpoints" / "lite" / "lite.safetensors"
LITE_OUTPUT_STRIDE = 16  # MobileNetV2's semantic maps at 32×32 for 512² (layer2 stays at 64×64)
LITE_BACKGROUND_KEY = "prior_background_count"  # build setting of lite checkpoints (PrototypePrior)
LITE_MEMO_BYTES = 3 << 30  # frozen MobileNetV2 maps remembered per process (fp16, ~1.1 MB per image)


def build_lite(
    weights: PathLike | None = LITE_WEIGHTS,
    *,
    backbone_checkpoint: PathLike | None = "imagenet",
    memo_bytes: int = LITE_MEMO_BYTES,
    seed: int = 0,
    background_count: int = 1,
    feature_dropout: float = 0.0,
) -> VRPSAM:
    """The ``lite`` VRP-SAM: frozen ImageNet MobileNetV2 at output stride 16 (resolved through the
    weights registry, ``VRPSAM_WEIGHTS``) shared by a SAM-shaped image encoder (trainable neck, 256×64×64 at 512²),
    SAM's prompt encoder and a depth-2 mask decoder, the VRP encoder ("max" annotation downsampling,
    "masked_features" prior) and the prototype prior as dense prompt and shortcut.

    ``weights``: a lite checkpoint (default: the packaged ``vrpsam/checkpoints/lite/lite.safetensors``), or None
    for the seeded random initialisation training starts from. ``backbone_checkpoint``: None builds a
    random MobileNetV2 (tests only). ``background_count``: the prior's background prototypes
    (:class:`~vrpsam.vrp.proto.PrototypePrior`) for random weights; a checkpoint's come from its build
    settings (``prior_background_count``, 1 when absent: checkpoints from before the setting).
    ``feature_dropout``: channel dropout on the frozen maps the neck reads, in training only
    (:class:`~vrpsam.sam.lite_encoder.LiteNeck`); no weights, so no build setting.
    """
    from ..sam.lite_encoder import MemoisedBackbone, build_lite_sam
    from .backbones import build_mobilenet_v2_backbone
    from .proto import PrototypePrior

    state = None
    if weights is not None:
        state, settings = _lite_checkpoint(Path(weights))
        background_count = int(settings[BUILD_KEY].get(LITE_BACKGROUND_KEY, 1))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        mobilenet = build_mobilenet_v2_backbone(backbone_checkpoint, output_stride=LITE_OUTPUT_STRIDE)
        mobilenet.name = "mobilenet_v2"
        backbone = MemoisedBackbone(mobilenet, max_bytes=memo_bytes)
        sam = build_lite_sam(backbone, image_size=LITE_INPUT_SIZE, feature_dropout=feature_dropout)
        encoder = VRPEncoder(
            backbone, num_queries=LITE_NUM_QUERIES, annotation_downsample="max", reference_prior="masked_features"
        )
        prior = PrototypePrior(backbone.channels[0], background_count=background_count)
    finally:
        torch.random.set_rng_state(generator_state)
    model = VRPSAM(sam, encoder, preprocessing="official", input_size=LITE_INPUT_SIZE, trainable_sam=LITE_SAM_PARTS, prior=prior)
    if state is not None:
        load_into(model.trainable_modules(), state, source=os.fspath(weights))
    return model.eval()


def _lite_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state, settings) of a lite checkpoint, or a one-line error naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: lite weights missing (they ship in the package under vrpsam/checkpoints/lite/)")
    state, settings = load_vrp_checkpoint(path)
    if (settings.get(BUILD_KEY) or {}).get("sam") != LITE_NAME:
        raise CheckpointError(f"{path}: not a lite checkpoint (its build settings are {settings.get(BUILD_KEY)!r})")
    return state, settings


# model name -> builder; a name not here is read as a checkpoint path
MODELS: dict[str, Callable[[], VRPSAM]] = {
    "tiny-random": _tiny_random,
    LITE_NAME: build_lite,
}


def build_model(name_or_checkpoint: str | PathLike, **overrides) -> VRPSAM:
    """A named model (:data:`MODELS`) or, for a path, :func:`build_vrp_sam` with that VRP checkpoint."""
    if isinstance(name_or_checkpoint, str) and name_or_checkpoint in MODELS:
        if overrides:
            raise InputError(f"model {name_or_checkpoint!r} takes no options (got {', '.join(overrides)})")
        return MODELS[name_or_checkpoint]()
    path = Path(name_or_checkpoint)
    if not path.exists():
        raise InputError(f"model: {name_or_checkpoint!r} is neither a known model ({', '.join(MODELS)}) nor an existing checkpoint file")
    recorded = recorded_build(path)
    if recorded.get("sam") == LITE_NAME:
        return build_lite(path, **overrides)
    return build_vrp_sam(checkpoint=path, **{**recorded, **overrides})


# Metadata key of our checkpoints holding the build_vrp_sam arguments the weights were trained with
# (sam, sam_checkpoint, backbone_checkpoint, image_size, input_size, preprocessing); "sam": "tiny"
# stands for build_tiny_sam(0).
BUILD_KEY = "build"
TINY_SAM_NAME = "tiny"


def recorded_build(path: PathLike) -> dict:
    """The :func:`build_vrp_sam` arguments a training run recorded in its checkpoint; {} if none."""
    if checkpoint_format(path) != "vrpsam":
        return {}
    recorded = dict(load_vrp_checkpoint(path)[1].get(BUILD_KEY) or {})
    if recorded.get("sam") == TINY_SAM_NAME:
        recorded["sam"] = build_tiny_sam(0)
        recorded.pop("image_size", None)
    return recorded
