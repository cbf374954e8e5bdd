"""Opening a dataset from a ``KIND:PATH`` string (the form the CLI and configs use)."""

from __future__ import annotations

import os

from ..errors import DataError
from .base import IndexedSource
from .coco import CocoJsonSource, CocoSource
from .davis import DavisSource
from .folder import FolderSource
from .fss import FssSource
from .pascal import PascalSource
from .yolo import YoloSource

SOURCE_KINDS: dict[str, type[IndexedSource]] = {
    "pascal": PascalSource,
    "coco": CocoSource,
    "coco-json": CocoJsonSource,
    "fss": FssSource,
    "davis": DavisSource,
    "folder": FolderSource,
    "yolo": YoloSource,
}


def open_source(spec: str, *, split: str | None = None, min_pixels: int | None = None,
                index_cache: str | os.PathLike | None = None, **options) -> IndexedSource:
    """The dataset ``KIND:PATH`` (KIND in :data:`SOURCE_KINDS`).

    ``split`` defaults per kind: ``val`` for pascal and coco, the only split folder for yolo, every
    sequence for davis; fss, folder and coco-json have none. ``min_pixels`` is the foreground a class
    needs in an image to list it (default 2048 for pascal / coco / coco-json, as PFENet's lists; 1
    otherwise). ``index_cache`` is a folder where the class-presence index may be kept between runs.
    ``options`` go to the source (``images_dir`` for coco-json).
    """
    kind, sep, path = spec.partition(":")
    kinds = ", ".join(SOURCE_KINDS)
    if not sep or not path:
        raise DataError(f"dataset {spec!r}: expected KIND:PATH with KIND one of {kinds}")
    if kind not in SOURCE_KINDS:
        raise DataError(f"dataset {spec!r}: unknown kind {kind!r}; expected one of {kinds}")
    if not os.path.exists(path):
        raise DataError(f"{path}: missing; {SOURCE_KINDS[kind].layout}")
    if split is not None:
        options["split"] = split
    return SOURCE_KINDS[kind](path, min_pixels=min_pixels, index_cache=index_cache, **options)
