"""VRP encoder checkpoints: the official ``best_model.pt`` and our own trainable-only safetensors files.

Official (``syp2ysy/VRP-SAM`` ``train.py``): a torch pickle of the DDP-wrapped ``VRP_encoder.state_dict()``,
every key prefixed ``module.``: the frozen backbone as ``layer0..4.*`` plus ``downsample_query.*``,
``merge_1.*`` and ``transformer_decoder.*``. It carries no metadata, so the backbone and the number of
queries are read off the keys and shapes.

Ours: a safetensors file with only the trainable tensors (the official key names, no prefix) and
string metadata marking the format (``vrpsam.format``) plus a JSON object of settings. The backbone
weights come from the backbone's own checkpoint.

The two are told apart by content, never by file name: a torch zip/pickle must have ``module.`` keys,
a safetensors file must carry our marker; anything else is refused.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import torch

from ..errors import CheckpointError, InputError
from ..io.atomic import atomic_path
from ..weights import load_into, read_state_dict
from .backbones import build_backbone
from .encoder import VRPEncoder

FORMAT_KEY = "vrpsam.format"
FORMAT_NAME = "vrp_encoder"
FORMAT_VERSION = 1
_VERSION_KEY = "vrpsam.format_version"
_METADATA_KEY = "vrpsam.metadata"
_REQUIRED = ("format_version", "backbone", "num_queries", "hidden_dim", "annotation_downsample")

_OFFICIAL_PREFIX = "module."
_QUERIES_KEY = "transformer_decoder.supp_q_feat.weight"
_MID_KEY = "downsample_query.0.weight"
# layer2+layer3 channels each backbone feeds to downsample_query; ResNet depth from layer3's block count.
_MID_CHANNELS = {"resnet50_v2": 1536, "resnet101_v2": 1536, "vgg16_bn": 768}
_RESNET_BY_LAYER3_BLOCKS = {6: "resnet50_v2", 23: "resnet101_v2"}

CheckpointFormat = Literal["official", "vrpsam"]


def checkpoint_format(path: str | os.PathLike) -> CheckpointFormat:
    """``"official"`` for a torch pickle (zip or legacy), ``"vrpsam"`` for a safetensors file with our marker."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors first: its 8-byte little-endian header length may itself start with 0x80 or "PK".
    header_length = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if head[8:9] == b"{" and 8 + header_length <= path.stat().st_size:
        metadata = _safetensors_metadata(path)
        if metadata.get(FORMAT_KEY) != FORMAT_NAME:
            raise CheckpointError(f"{path}: a safetensors file without the vrpsam marker {FORMAT_KEY}={FORMAT_NAME}")
        return "vrpsam"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "official"
    raise CheckpointError(f"{path}: neither an official VRP-SAM best_model.pt (torch) nor a vrpsam .safetensors file")


def load_vrp_encoder(
    path: str | os.PathLike,
    *,
    backbone_checkpoint: str | os.PathLike | None = None,
    annotation_downsample: str | None = None,
) -> VRPEncoder:
    """A :class:`VRPEncoder` in eval mode from either checkpoint format (see :func:`checkpoint_format`).

    ``annotation_downsample`` defaults to the file's setting (ours) or ``"nearest"`` (official).
    """
    if checkpoint_format(path) == "official":
        return load_official_vrp_checkpoint(
            path, backbone_checkpoint=backbone_checkpoint, annotation_downsample=annotation_downsample or "nearest"
        )
    state, metadata = load_vrp_checkpoint(path)
    if backbone_checkpoint is None:
        name = metadata["backbone"]
        raise CheckpointError(f"{path}: holds only the trainable VRP weights; pass backbone_checkpoint= for its {name}")
    encoder = VRPEncoder(
        _build_backbone(metadata["backbone"], backbone_checkpoint, path),
        num_queries=metadata["num_queries"],
        hidden_dim=metadata["hidden_dim"],
        annotation_downsample=annotation_downsample or metadata["annotation_downsample"],
    )
    load_into(encoder.trainable_modules(), state, source=str(path))
    return encoder.eval()


def load_official_vrp_checkpoint(
    path: str | os.PathLike,
    *,
    backbone_checkpoint: str | os.PathLike | None = None,
    backbone: str | None = None,
    annotation_downsample: str = "nearest",
) -> VRPEncoder:
    """A :class:`VRPEncoder` in eval mode from an official ``best_model.pt``, loaded strictly.

    The backbone (resnet50_v2 / resnet101_v2 / vgg16_bn) and ``num_queries`` are read off the keys. A file
    without the backbone keys needs ``backbone_checkpoint`` (e.g. ``resnet50_v2.pth``); ``backbone`` then
    names it, defaulting to resnet50_v2 for 1536 feature channels (the backbone's strict load catches a
    ResNet-101 file) and vgg16_bn for 768.
    """
    if checkpoint_format(path) != "official":
        raise CheckpointError(f"{path}: a vrpsam .safetensors file, not official; use load_vrp_encoder")
    state = _strip_official_prefix(read_state_dict(path), path)
    has_backbone = any(key.startswith("layer") for key in state)
    name = _official_backbone(state, path, has_backbone, backbone)
    if has_backbone and backbone_checkpoint is not None:
        raise InputError(f"backbone_checkpoint: {path} already holds its backbone weights; pass one or the other")
    if not has_backbone and backbone_checkpoint is None:
        raise CheckpointError(f"{path}: has no backbone weights (layer0..4); pass backbone_checkpoint= ({name})")
    encoder = VRPEncoder(
        _build_backbone(name, backbone_checkpoint, path),
        num_queries=state[_QUERIES_KEY].shape[0],
        hidden_dim=state[_MID_KEY].shape[0],
        annotation_downsample=annotation_downsample,
    )
    if has_backbone:
        load_into(encoder, _official_to_ours(state), source=str(path))
    else:
        load_into(encoder.trainable_modules(), state, source=str(path))
    return encoder.eval()


def official_state_dict(encoder: VRPEncoder) -> dict[str, torch.Tensor]:
    """``encoder``'s full state dict in the official layout (``module.layer0..``, ``module.merge_1..``).

    ``torch.save`` it to get a file the official code (and :func:`load_official_vrp_checkpoint`) reads.
    """
    state = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("backbone."):
            key = key[len("backbone.") :]
        state[_OFFICIAL_PREFIX + key] = value
    return state


def save_vrp_checkpoint(
    encoder: VRPEncoder, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> None:
    """Write the trainable weights of ``encoder`` as safetensors with our metadata, atomically.

    ``metadata``: extra JSON-serialisable settings to keep (condition, fold, epoch...). The encoder's own
    settings (backbone, num_queries, hidden_dim, annotation_downsample) are written from the encoder; the
    caller may repeat them only with the same values, and must give ``backbone`` when the encoder's
    backbone has no name.
    """
    own = {
        "format_version": FORMAT_VERSION,
        "backbone": encoder.backbone_name,
        "num_queries": encoder.num_queries,
        "hidden_dim": encoder.hidden_dim,
        "annotation_downsample": encoder.annotation_downsample,
    }
    extra = dict(metadata or {})
    if own["backbone"] is None:
        own["backbone"] = extra.get("backbone")
    clashes = sorted(key for key in own if key in extra and extra[key] != own[key])
    if clashes:
        raise InputError(f"metadata: {', '.join(clashes)} differ from the encoder's own settings")
    if not isinstance(own["backbone"], str) or not own["backbone"]:
        raise InputError("metadata: the encoder does not know its backbone's name; pass backbone= (e.g. resnet50_v2)")
    settings = {**extra, **own}
    try:
        settings_json = json.dumps(settings, sort_keys=True)
    except TypeError as exc:
        raise InputError(f"metadata: not JSON-serialisable ({exc})") from None
    header = {FORMAT_KEY: FORMAT_NAME, _VERSION_KEY: str(FORMAT_VERSION), _METADATA_KEY: settings_json}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in encoder.trainable_modules().state_dict().items()}
    _atomic_save_safetensors(tensors, Path(path), header)


def load_vrp_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read one of our files: (trainable state dict with the official key names, settings dict)."""
    path = Path(path)
    if checkpoint_format(path) != "vrpsam":
        raise CheckpointError(f"{path}: a torch file (official format), not vrpsam's; use load_official_vrp_checkpoint")
    header = _safetensors_metadata(path)
    if header.get(_VERSION_KEY) != str(FORMAT_VERSION):
        version = header.get(_VERSION_KEY)
        raise CheckpointError(f"{path}: vrpsam format version {version!r}; this vrpsam reads version {FORMAT_VERSION}")
    try:
        settings = json.loads(header[_METADATA_KEY])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: missing or malformed {_METADATA_KEY} JSON") from None
    missing = [key for key in _REQUIRED if key not in settings]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {', '.join(missing)}")
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu"), settings


def _strip_official_prefix(state: dict[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    strays = [key for key in state if not key.startswith(_OFFICIAL_PREFIX)]
    if strays or not state:
        found = strays[:3] or "no keys"
        raise CheckpointError(f"{path}: not an official VRP-SAM file (keys must start with 'module.'; found {found})")
    state = {key[len(_OFFICIAL_PREFIX) :]: value for key, value in state.items()}
    for key in (_MID_KEY, _QUERIES_KEY):
        if key not in state:
            raise CheckpointError(f"{path}: not a VRP-SAM encoder checkpoint (no {_OFFICIAL_PREFIX}{key})")
    return state


def _official_backbone(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike, has_backbone: bool, requested: str | None
) -> str:
    """The backbone name, from the layer keys when present, else from ``requested`` or the feature width."""
    channels = state[_MID_KEY].shape[1]
    if has_backbone:
        name = _backbone_from_layers(state, path)
        if requested is not None and requested != name:
            raise InputError(f"backbone: {path} holds a {name} backbone, not {requested}")
    elif requested is not None:
        name = requested
    else:
        name = {1536: "resnet50_v2", 768: "vgg16_bn"}.get(channels, "")
    if _MID_CHANNELS.get(name) != channels:
        fits = name or "known"
        raise CheckpointError(f"{path}: module.{_MID_KEY} takes {channels} channels: fits no {fits} backbone")
    return name


def _backbone_from_layers(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> str:
    if "layer1.0.conv1.weight" in state:
        blocks = {int(m.group(1)) for key in state if (m := re.match(r"layer3\.(\d+)\.", key))}
        name = _RESNET_BY_LAYER3_BLOCKS.get(len(blocks))
        if name is None:
            raise CheckpointError(f"{path}: a ResNet backbone with {len(blocks)} blocks in layer3 (expected 6 or 23)")
        return name
    if "layer0.0.bias" in state and state.get("layer0.0.weight", torch.empty(0)).dim() == 4:
        return "vgg16_bn"  # VGG convolutions have biases; the ResNet stem's do not
    raise CheckpointError(f"{path}: backbone keys (layer0..4) of no known backbone (resnet50/101, vgg16_bn)")


def _official_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys -> :class:`VRPEncoder` keys: the backbone stages live under ``backbone.``."""
    return {("backbone." + key if key.startswith("layer") else key): value for key, value in state.items()}


def _build_backbone(name: str, checkpoint: str | os.PathLike | None, source: str | os.PathLike) -> torch.nn.Module:
    try:
        return build_backbone(name, checkpoint=checkpoint)
    except InputError as exc:  # an unknown name: the checkpoint, not the caller, asked for it
        raise CheckpointError(f"{source}: backbone {name!r}: {exc}") from None


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # any reader failure means the file is not a usable safetensors file
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def _atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
