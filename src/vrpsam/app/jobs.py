"""Where the app keeps results: one folder per job under its private temporary folder, nowhere else.

File names are made here, never taken from a request: a job id is a random token that must match
:data:`JOB_ID` before it is joined to a path, and a result is addressed by its kind and a number.
Only the newest ``max_jobs`` jobs are kept, so a long session does not fill the disk.
"""

from __future__ import annotations

import io
import re
import secrets
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np

from ..io.exports import save_mask_png, save_overlay

JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # what secrets.token_urlsafe(16) produces
RESULT_KINDS = ("mask", "overlay")


def result_name(kind: str, number: int) -> str:
    """The file name of a job's result: ``mask-3.png``, ``overlay-3.png`` (targets count from 1)."""
    return f"{kind}-{number}.png"


class JobStore:
    """Result folders ``root/<job id>/``; ``root`` must be a folder the app created for itself."""

    def __init__(self, root: Path, max_jobs: int = 20) -> None:
        self.root = Path(root)
        self.max_jobs = max_jobs
        self._order: list[str] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def save(self, images: list[np.ndarray], masks: list[np.ndarray]) -> str:
        """Write each target's mask and overlay as a new job; return its id."""
        job_id = secrets.token_urlsafe(16)
        folder = self.root / job_id
        folder.mkdir()
        for number, (image, mask) in enumerate(zip(images, masks), start=1):
            save_mask_png(mask, folder / result_name("mask", number))
            save_overlay(image, mask, folder / result_name("overlay", number))
        with self._lock:
            self._order.append(job_id)
            self._counts[job_id] = len(masks)
            expired = self._order[: -self.max_jobs]
            del self._order[: -self.max_jobs]
            for old in expired:
                del self._counts[old]
        for old in expired:
            shutil.rmtree(self.root / old, ignore_errors=True)
        return job_id

    def count(self, job_id: str) -> int | None:
        """How many targets a job has, or ``None`` for an id that is malformed, unknown or expired."""
        if not JOB_ID.fullmatch(job_id):
            return None
        with self._lock:
            return self._counts.get(job_id)

    def path(self, job_id: str, kind: str, number: int) -> Path | None:
        """The file of one result, or ``None`` when the job, kind or number does not exist."""
        count = self.count(job_id)
        if count is None or kind not in RESULT_KINDS or not 1 <= number <= count:
            return None
        path = self.root / job_id / result_name(kind, number)
        return path if path.is_file() else None

    def zip_masks(self, job_id: str) -> bytes | None:
        """All of a job's masks as a zip (``mask-1.png``, ...), or ``None`` for an unknown job."""
        count = self.count(job_id)
        if count is None:
            return None
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
            for number in range(1, count + 1):
                path = self.path(job_id, "mask", number)
                if path is None:  # expired while we were reading
                    return None
                archive.write(path, arcname=result_name("mask", number))
        return buffer.getvalue()
