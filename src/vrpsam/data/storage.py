"""Small JSON files written atomically (episode lists, class-presence indexes) and read with clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io.atomic import atomic_write_bytes


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as JSON so that readers see either the old file or the complete new one."""
    return atomic_write_bytes(path, json.dumps(payload, separators=(",", ":")).encode("utf-8"))


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing or malformed file is a :class:`DataError` naming it and ``what`` it is."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; expected {what}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON {what} ({exc})") from None
