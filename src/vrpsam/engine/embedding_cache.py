"""A content-addressed disk cache of SAM image embeddings, safe to share between processes and runs.

SAM is frozen and training has no augmentation, so a target image always gets the same embedding: the
heavy image encoder need run once per distinct image (the official code caches them too, keyed by file
name in one fixed folder, with races and stale entries; §3.5 of the official-code notes).

The key of an embedding is the SHA-256 of

* the image tensor as it reaches the SAM input transform (dtype, shape and raw bytes),
* the transform and compute settings (preprocessing mode, SAM input side, compute dtype),
* the identity of the SAM image encoder: a SHA-256 over its state dict (names, shapes, dtypes, bytes),

so a different image, preprocessing, precision or SAM can never be served a stale entry.

One ``.safetensors`` file per key, under a two-character shard folder. Files are written to a temporary
name in the same folder and moved into place with ``os.replace``: concurrent writers of one key (ranks,
parallel runs) each replace the whole file, and a reader sees a complete file or none. An optional
in-memory LRU avoids re-reading hot entries.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..io.atomic import atomic_path

_TENSOR = "embedding"
_SUFFIX = ".safetensors"
_HASH_CHUNK = 1 << 24  # bytes hashed per update, so a huge tensor is never copied whole


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _hash_tensor(digest: "hashlib._Hash", tensor: torch.Tensor) -> None:
    digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    data = _tensor_bytes(tensor)
    for start in range(0, len(data), _HASH_CHUNK):
        digest.update(data[start : start + _HASH_CHUNK])


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 over ``module``'s state dict: names, shapes, dtypes and values."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode() + b"\0")
        _hash_tensor(digest, tensor)
    return digest.hexdigest()


class EmbeddingCache:
    """SAM image embeddings on disk under ``folder``, keyed by content (see the module docstring).

    ``identity``: everything besides the image that determines the embedding (see
    :func:`sam_identity`). ``memory_items``: how many entries to keep in memory (LRU), 0 for none.
    """

    def __init__(self, folder: str | os.PathLike, identity: str, *, memory_items: int = 0) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.identity = identity
        self.memory_items = memory_items
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def key(self, image: torch.Tensor) -> str:
        """The key of one image (3, S, S), as it is given to the SAM input transform."""
        digest = hashlib.sha256(self.identity.encode() + b"\0")
        _hash_tensor(digest, image)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str) -> torch.Tensor | None:
        """The cached embedding (C, h, w) on the CPU, or None."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        path = self.path(key)
        if not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            embedding = load_file(str(path))[_TENSOR]
        except Exception as exc:  # only a file damaged outside this cache's atomic writes lands here
            warnings.warn(f"{path}: unreadable cached embedding ({type(exc).__name__}); recomputing it", stacklevel=2)
            return None
        self._remember(key, embedding)
        return embedding

    def put(self, key: str, embedding: torch.Tensor) -> None:
        """Store one embedding (C, h, w), atomically."""
        from safetensors.torch import save_file

        embedding = embedding.detach().to("cpu").contiguous()
        path = self.path(key)
        with atomic_path(path) as temporary:
            save_file({_TENSOR: embedding}, str(temporary))
        self._remember(key, embedding)

    def embed(self, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str) -> torch.Tensor:
        """Embeddings (B, C, h, w) on ``device`` for CPU ``images`` (B, 3, S, S).

        Cached entries are read; the others are computed in one call ``compute(images_on_device)`` and
        stored.
        """
        keys = [self.key(image) for image in images]
        found = [self.get(key) for key in keys]
        missing = [i for i, embedding in enumerate(found) if embedding is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = compute(images[missing].to(device))
            for i, embedding in zip(missing, computed):
                self.put(keys[i], embedding)
                found[i] = embedding.detach().to("cpu")
        return torch.stack(found).to(device)

    def _remember(self, key: str, embedding: torch.Tensor) -> None:
        if self.memory_items <= 0:
            return
        self._memory[key] = embedding
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)


def sam_identity(sam_image_encoder: nn.Module, *, preprocessing: str, sam_size: int, compute_dtype: torch.dtype) -> str:
    """The non-image part of a cache key: SAM weights, input transform and precision."""
    return "|".join(
        [
            "vrpsam-sam-embedding-v1",
            f"encoder={module_fingerprint(sam_image_encoder)}",
            f"preprocessing={preprocessing}",
            f"sam_size={sam_size}",
            f"dtype={compute_dtype}",
        ]
    )
