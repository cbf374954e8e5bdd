"""The class-presence index of a dataset: which labels each image contains, cached between runs.

Building it means reading every annotation once (minutes for COCO), so it can be kept as JSON in a
cache folder chosen by the caller (never inside the dataset). A cached index is used only when the
annotation files it was built from are unchanged: same relative paths, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from ..errors import DataError
from .storage import read_json, write_json_atomic

INDEX_VERSION = 1

Index = dict[str, dict[int, int]]


def files_fingerprint(files: list[Path]) -> str:
    """A digest of the files' paths, sizes and modification times."""
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_file(cache_dir: Path, identity: str) -> Path:
    key = hashlib.sha256(f"{INDEX_VERSION}|{identity}".encode()).hexdigest()[:20]
    return cache_dir / f"index-{key}.json"


def class_index(identity: str, files: list[Path], build: Callable[[], Index],
                cache_dir: str | os.PathLike | None) -> Index:
    """``build()``, or the copy cached under ``cache_dir`` for ``identity`` if ``files`` are unchanged."""
    if cache_dir is None:
        return build()
    path = cache_file(Path(cache_dir), identity)
    fingerprint = files_fingerprint(files)
    if path.is_file():
        try:
            cached = read_json(path, "class index")
            if (isinstance(cached, dict) and cached.get("version") == INDEX_VERSION
                    and cached.get("identity") == identity and cached.get("fingerprint") == fingerprint):
                return {item: {int(k): int(v) for k, v in counts.items()} for item, counts in cached["items"].items()}
        except (DataError, AttributeError, TypeError, ValueError, KeyError):
            pass  # an unreadable cache is rebuilt, never trusted
    index = build()
    write_json_atomic(path, {"version": INDEX_VERSION, "identity": identity, "fingerprint": fingerprint,
                             "items": {item: {str(k): v for k, v in counts.items()} for item, counts in index.items()}})
    return index
