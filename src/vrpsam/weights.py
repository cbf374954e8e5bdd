"""The one weights registry: known checkpoints, where to find them, verified downloads, strict loading.

Finding a checkpoint, :func:`resolve` (``name_or_path``), in this order:

1. an explicit path (``str`` naming an existing file, or any ``os.PathLike``), used as given and not
   verified (it may be the user's own fine-tuned or converted file); a path that does not exist is an
   error naming it;
2. the folders in ``$VRPSAM_WEIGHTS`` (``os.pathsep``-separated), by the registry entry's file name;
3. the user cache :func:`cache_dir`: ``$VRPSAM_CACHE``, else ``$XDG_CACHE_HOME/vrpsam``, else
   ``~/.cache/vrpsam``;
4. a download into the cache (``download=None`` allows it unless ``$VRPSAM_OFFLINE`` is ``1``/``true``/
   ``yes``/``on``; ``download=False`` forbids it, ``True`` allows it even when offline is set).
   ``$VRPSAM_WEIGHTS_URL`` replaces the base URL (files are fetched as ``<base>/<filename>``), for
   mirrors and tests; :func:`download_to` also takes ``url=`` directly.

Verification policy for files found in (2) or (3): the size is checked every time (free, and it catches
truncated copies); the SHA-256 is checked once and remembered in a marker
``<cache>/verified/<filename>.<path digest>.sha256`` that holds the hash, size and mtime of the file it
vouches for, so a changed file is hashed again. ``verify=False`` skips the hash (not the size). A file
that fails either check is an error, never silently replaced or skipped, because the user put it there.

Downloads are atomic: the bytes stream into a temporary file in the cache folder, are checked for
size and SHA-256, fsynced, then renamed onto the final name with :func:`os.replace`. Any failure (HTTP
error, timeout, reset, short read, wrong hash, Ctrl-C) removes the temporary file, so the cache only
ever holds complete, verified files.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from tqdm import tqdm

from .errors import CheckpointError
from .io.atomic import atomic_file


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable weights file: where it comes from and what its bytes must be."""

    name: str
    filename: str
    url: str
    sha256: str
    size: int  # bytes
    description: str
    license: str
    md5: str | None = None  # where confirmed; SAM's file names carry its first 6 hex digits


def _sam(size_name: str, filename: str, size: int, sha256: str, md5: str) -> WeightSpec:
    return WeightSpec(
        name=f"sam_{size_name}",
        filename=filename,
        url=f"https://dl.fbaipublicfiles.com/segment_anything/{filename}",
        sha256=sha256,
        size=size,
        description=f"Segment Anything ViT-{size_name[-1].upper()} (Meta AI, official release)",
        license="Apache-2.0",
        md5=md5,
    )


# Provenance. Nothing here could be downloaded on the development machines, so the SAM and MobileSAM
# values come from independent public sources that agree exactly (found by exact-string search of
# public code):
# - SAM SHA-256 (all three): micro-sam's `_CHECKSUMS` (computational-cell-analytics/micro-sam,
#   micro_sam/util.py) and, separately, download scripts/manifests that pin size and hash together
#   (a Fooocus-style model manifest: vit_h 2564550879 + a7bf3b02..., vit_l 1249524607 + 3adcc431...;
#   a PowerShell installer: vit_l 1249524607 + 3ADCC431...; a reproduction report: vit_b 375042383 +
#   ec2df627...; Slicer's SegmentAnything extension: vit_h sha256 a7bf3b02...).
# - SAM sizes: the same manifests plus several size tables (vit_h 2564550879, vit_l 1249524607,
#   vit_b 375042383), each seen in at least three unrelated projects.
# - SAM MD5: many download helpers (e.g. ISAT-like/DEVA/lama-cleaner style tables); each begins with
#   the 6 hex digits in the official file name, as Meta's naming scheme implies.
# - MobileSAM: SHA-256 6dbb9052... from micro-sam's `_CHECKSUMS` ("vit_t") and from projects that
#   download exactly github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt (one pins
#   commit f706ad9c4eb7f219c00d9050e46328518ffb65d2 with 40_728_226 bytes; another registry gives
#   40728226 bytes). In the official repository the file is git blob 7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7.
#   Its MD5 (f3c0d8cd... in mirrors' tables) is not tied to this URL by any source seen, so not stored.
# - MobileNetV2 TFLite: measured here on the copy in shared/assets/weights/mobilenet_v2 (SHA-256 and
#   MD5 by sha256sum/md5sum, size by stat), matching shared/README.md and its SOURCE.txt.
REGISTRY: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        _sam("vit_b", "sam_vit_b_01ec64.pth", 375_042_383,
             "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
             "01ec64d29a2fca3f0661936605ae66f8"),
        _sam("vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607,
             "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
             "0b3195507c641ddb6910d2bb5adee89c"),
        _sam("vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879,
             "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
             "4b8939a88964f0f4ff5f5b2642c598a6"),
        WeightSpec(
            name="mobile_sam",
            filename="mobile_sam.pt",
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            size=40_728_226,
            description="MobileSAM: TinyViT image encoder distilled from SAM ViT-H, SAM prompt encoder/decoder",
            license="Apache-2.0",
        ),
        WeightSpec(
            name="mobilenet_v2_tflite",
            filename="mobilenet_v2_1.0_224_quant.tflite",
            url="https://github.com/google-coral/test_data/raw/master/mobilenet_v2_1.0_224_quant.tflite",
            sha256="7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
            size=3_610_798,
            description="ImageNet MobileNetV2 1.0/224, uint8 quantization-aware TFLite (TF-slim, Google Coral)",
            license="Apache-2.0",
            md5="bac868715e01b67002420d0ebe1e529b",
        ),
    )
}

DEFAULT_TIMEOUT_S = 60.0  # per socket operation (connect, each read), not for the whole transfer
_CHUNK = 1 << 20
_TRUE = {"1", "true", "yes", "on"}


def spec_for(name: str) -> WeightSpec:
    """The registry entry called ``name`` (or whose file is called ``name``); an unknown name is an
    error listing the known ones."""
    if name in REGISTRY:
        return REGISTRY[name]
    by_filename = [spec for spec in REGISTRY.values() if spec.filename == name]
    if by_filename:
        return by_filename[0]
    known = ", ".join(sorted(REGISTRY))
    raise CheckpointError(f"{name!r}: not a weights file path and not a known weights name (known: {known})")


def cache_dir() -> Path:
    """The user cache folder: ``$VRPSAM_CACHE``, else ``$XDG_CACHE_HOME/vrpsam``, else ``~/.cache/vrpsam``."""
    if os.environ.get("VRPSAM_CACHE"):
        return Path(os.environ["VRPSAM_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vrpsam"
    return Path.home() / ".cache" / "vrpsam"


def weights_dirs() -> list[Path]:
    """The folders named in ``$VRPSAM_WEIGHTS`` (``os.pathsep``-separated), in order."""
    return [Path(p).expanduser() for p in os.environ.get("VRPSAM_WEIGHTS", "").split(os.pathsep) if p]


def download_url(spec: WeightSpec) -> str:
    """Where ``spec`` is downloaded from: ``$VRPSAM_WEIGHTS_URL/<filename>`` when set, else ``spec.url``."""
    base = os.environ.get("VRPSAM_WEIGHTS_URL", "")
    return f"{base.rstrip('/')}/{spec.filename}" if base else spec.url


def _offline() -> bool:
    return os.environ.get("VRPSAM_OFFLINE", "").strip().lower() in _TRUE


def _candidates(spec: WeightSpec) -> list[Path]:
    return [folder / spec.filename for folder in weights_dirs()] + [cache_dir() / spec.filename]


def find(name: str) -> Path | None:
    """The first existing copy of registry entry ``name`` in ``$VRPSAM_WEIGHTS`` then the cache; no
    download and no verification (:func:`resolve` verifies)."""
    return next((path for path in _candidates(spec_for(name)) if path.is_file()), None)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _check_size(path: Path, spec: WeightSpec) -> None:
    size = path.stat().st_size
    if size != spec.size:
        raise CheckpointError(
            f"{path}: {size} bytes, but {spec.name} is {spec.size} bytes (incomplete or a different file); "
            f"replace it with the file from {spec.url}"
        )


def verify_file(path: str | os.PathLike, spec: WeightSpec | str | None = None) -> WeightSpec:
    """Raise :class:`CheckpointError` unless the file at ``path`` has exactly ``spec``'s size and SHA-256.

    ``spec`` is an entry, a registry name, or ``None`` to pick the entry by the file's name. Returns the
    entry checked against.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if spec is None:
        matches = [entry for entry in REGISTRY.values() if entry.filename == path.name]
        if not matches:
            known = ", ".join(sorted(REGISTRY))
            raise CheckpointError(f"{path}: file name matches no registry entry; name one of: {known}")
        spec = matches[0]
    elif isinstance(spec, str):
        spec = spec_for(spec)
    _check_size(path, spec)
    actual = _sha256_file(path)
    if actual != spec.sha256:
        raise CheckpointError(
            f"{path}: sha256 {actual} != {spec.sha256} expected for {spec.name} (corrupt or a different "
            f"file); replace it with the file from {spec.url}"
        )
    return spec


def _marker(path: Path) -> Path:
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "verified" / f"{path.name}.{where}.sha256"


def _stamp(path: Path, sha256: str) -> str:
    stat = path.stat()
    return f"{sha256} {stat.st_size} {stat.st_mtime_ns}\n"


def _remember_verified(path: Path, spec: WeightSpec) -> None:
    marker = _marker(path)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(_stamp(path, spec.sha256))
    except OSError:
        pass  # the marker only saves re-hashing next time; an unwritable cache must not fail the load


def _verified_once(path: Path, spec: WeightSpec) -> None:
    try:
        if _marker(path).read_text() == _stamp(path, spec.sha256):
            return
    except OSError:
        pass  # no marker yet (or unreadable): hash the file
    verify_file(path, spec)
    _remember_verified(path, spec)


def _explicit_path(name_or_path: str | os.PathLike) -> Path | None:
    """``name_or_path`` as a path when it is meant as one; ``None`` when it is a registry name."""
    if isinstance(name_or_path, str):
        if name_or_path in REGISTRY:
            return None
        is_file = Path(name_or_path).expanduser().is_file()
        if not is_file and any(spec.filename == name_or_path for spec in REGISTRY.values()):
            return None  # a bare registered file name, e.g. "sam_vit_b_01ec64.pth", means that entry
        seps = {os.sep, os.altsep, "/"} - {None}
        looks_like_path = (
            any(sep in name_or_path for sep in seps)
            or name_or_path.startswith(("~", "."))
            or Path(name_or_path).suffix != ""
            or is_file
        )
        if not looks_like_path:
            return None
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a weights file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    return path


def _how_to_supply(spec: WeightSpec) -> str:
    return (
        f"put {spec.filename} in a folder and set VRPSAM_WEIGHTS=that folder, or pass the file path; "
        f"download from {spec.url}"
    )


def _places(spec: WeightSpec) -> str:
    folders = weights_dirs()
    shown = [
        f"{folder} (VRPSAM_WEIGHTS{'' if folder.is_dir() else ', no such folder'})" for folder in folders
    ] or ["VRPSAM_WEIGHTS (unset)"]
    return ", ".join(shown + [f"{cache_dir()} (cache)"])


def resolve(
    name_or_path: str | os.PathLike,
    *,
    download: bool | None = None,
    verify: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """The local file for a registry name or an explicit path; see the module docstring for the order.

    ``verify=False`` skips the (remembered, once per file) SHA-256 check of found files; sizes are always
    checked. Every failure is one :class:`CheckpointError` line saying where it looked and what to do.
    """
    explicit = _explicit_path(name_or_path)
    if explicit is not None:
        return explicit
    spec = spec_for(str(name_or_path))
    found = find(spec.name)
    if found is not None:
        _check_size(found, spec)
        if verify:
            _verified_once(found, spec)
        return found
    allowed = (not _offline()) if download is None else download
    if not allowed:
        why = "download=False" if download is False else "VRPSAM_OFFLINE is set"
        raise CheckpointError(
            f"{spec.name}: {spec.filename} not found in {_places(spec)}; not downloading ({why}); "
            + _how_to_supply(spec)
        )
    return download_to(spec, cache_dir(), timeout=timeout)


def _fail_download(spec: WeightSpec, url: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{spec.name}: download of {url} failed: {reason}; nothing was cached. Instead, " + _how_to_supply(spec)
    )


def _read(response, spec: WeightSpec, url: str, received: int) -> bytes:
    try:
        return response.read(_CHUNK)
    except http.client.IncompleteRead as exc:  # how some Python versions report an early close
        received += len(exc.partial)
        raise _fail_download(spec, url, f"connection ended after {received} of {spec.size} bytes") from None


def _stream(spec: WeightSpec, url: str, out, timeout: float, progress: bool) -> str:
    """Copy the response body for ``url`` into ``out``; return its SHA-256. Raises on any shortfall."""
    request = urllib.request.Request(url, headers={"User-Agent": "vrpsam"})
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        announced = response.headers.get("Content-Length")
        if announced is not None and int(announced) != spec.size:
            raise _fail_download(spec, url, f"server announces {announced} bytes, expected {spec.size}")
        with tqdm(total=spec.size, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=spec.filename, disable=not progress) as bar:
            while block := _read(response, spec, url, received):
                received += len(block)
                if received > spec.size:
                    raise _fail_download(spec, url, f"more than the expected {spec.size} bytes")
                digest.update(block)
                out.write(block)
                bar.update(len(block))
    if received != spec.size:
        raise _fail_download(spec, url, f"connection ended after {received} of {spec.size} bytes")
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform (e.g. Windows); the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def download_to(
    spec: WeightSpec,
    folder: str | os.PathLike,
    *,
    url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool | None = None,
) -> Path:
    """Download ``spec`` into ``folder/spec.filename`` atomically and verified; return that path.

    ``url`` defaults to :func:`download_url`; ``timeout`` (seconds) bounds each connect/read;
    ``progress`` (a tqdm bar on stderr) defaults to whether stderr is a terminal. On any failure the
    partial file is removed and :class:`CheckpointError` is raised (``KeyboardInterrupt`` is cleaned up
    the same way, then re-raised, so Ctrl-C still stops the program).
    """
    folder = Path(folder).expanduser()
    url = url or download_url(spec)
    progress = sys.stderr.isatty() if progress is None else progress
    final = folder / spec.filename
    try:
        with atomic_file(final) as handle:
            try:
                actual = _stream(spec, url, handle, timeout, progress)
            except urllib.error.HTTPError as exc:
                raise _fail_download(spec, url, f"HTTP {exc.code} {exc.reason}") from None
            except TimeoutError:
                raise _fail_download(spec, url, f"no data for {timeout:g} s (timeout)") from None
            except urllib.error.URLError as exc:
                raise _fail_download(spec, url, str(exc.reason)) from None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise _fail_download(spec, url, f"{type(exc).__name__}: {exc}") from None
            if actual != spec.sha256:
                raise _fail_download(spec, url, f"sha256 {actual} != expected {spec.sha256} (corrupt download)")
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot write the weights cache ({exc.strerror or exc})") from None
    _fsync_dir(folder)
    _remember_verified(final, spec)
    return final


def describe() -> list[dict]:
    """One row per registry entry: its facts, and where it was found or would be downloaded to.

    Keys: name, filename, url (effective download URL), size, sha256, md5, description, license,
    status ("found" | "wrong size" | "missing"; sizes only, no hashing), found (path or None),
    cache_path (the download target), path (found, else cache_path).
    """
    rows = []
    for spec in REGISTRY.values():
        found = find(spec.name)
        if found is None:
            status = "missing"
        else:
            status = "found" if found.stat().st_size == spec.size else "wrong size"
        rows.append({
            "name": spec.name,
            "filename": spec.filename,
            "url": download_url(spec),
            "size": spec.size,
            "sha256": spec.sha256,
            "md5": spec.md5,
            "description": spec.description,
            "license": spec.license,
            "status": status,
            "found": None if found is None else str(found),
            "cache_path": str(cache_dir() / spec.filename),
            "path": str(found if found is not None else cache_dir() / spec.filename),
        })
    return rows


_MAX_LISTED_KEYS = 8


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the file is not a usable checkpoint
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return dict(state)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return shown + (f" (+{more} more)" if more > 0 else "")


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load ``state_dict`` into ``module`` strictly; on any mismatch raise one clear :class:`CheckpointError`.

    ``source`` names where the weights came from (a file path or registry name) for the message.
    """
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    wrong_shape = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {_listed(wrong_shape)}")
    if problems:
        raise CheckpointError(f"{source}: does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)
