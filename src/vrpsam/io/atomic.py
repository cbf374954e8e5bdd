"""Writing files atomically: readers see the old file or the whole new one, never a part of it.

Every file the package writes (checkpoints, downloads, caches, masks, JSON) goes through here: the bytes
go to a temporary file beside the target, are flushed to disk, and the temporary file is renamed onto
the target. On any failure, Ctrl-C included, the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh, empty temporary file beside ``path`` to be written by path (e.g. by a library's save).

    When the block ends without error the file is synced and renamed onto ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
    # Created here with mode 0o666 so the umask decides permissions, as for any ordinary new file.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file that replaces ``path`` when the block ends without error."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        yield handle


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as handle:
        handle.write(data)
    return Path(path)
