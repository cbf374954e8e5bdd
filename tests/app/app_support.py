"""Helpers for the app tests: optional imports, multipart bodies, requests with raw paths, PNG bytes."""

from __future__ import annotations

import http.client
import importlib
import io
import json
import os
import secrets
import struct
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image


def unavailable(message: str) -> None:
    """Skip the test for a missing tool, but fail it under ``CI=true``, where .ci/run installs everything."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def require(module: str):
    """Import ``module``, or :func:`unavailable` when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        unavailable(f"{module} is not installed ({exc}); pip install -e '.[test,app]'")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def multipart(fields: list[tuple[str, object]]) -> tuple[bytes, str]:
    """``[(name, text | (filename, bytes, content type)), ...]`` -> (body, Content-Type header)."""
    boundary = "----vrpsam" + secrets.token_hex(8)
    parts = []
    for name, value in fields:
        if isinstance(value, tuple):
            filename, data, ctype = value
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: {ctype}\r\n\r\n")
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"\r\n\r\n', str(value).encode()
        parts.append(f"--{boundary}\r\n".encode() + head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(base: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Reply:
    """One HTTP request with ``path`` sent exactly as given (no normalisation of ``..`` or ``%2e``)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def post_segment(base: str, fields: list[tuple[str, object]], headers: dict | None = None) -> Reply:
    body, ctype = multipart(fields)
    return request(base, "POST", "/api/segment", body, {"Content-Type": ctype, **(headers or {})})


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_file(name: str, array: np.ndarray) -> tuple[str, bytes, str]:
    return name, png_bytes(array), "image/png"


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# Small limits, so the caps are cheap to exceed; the persam cat images (1282² and 1277²) fit.
LIMITS = dict(max_upload_mb=2, max_pixels=2_000_000, max_targets=3, max_jobs=20, model_name="tiny-random")


@contextmanager
def serving(predictor):
    """A threaded app server around ``predictor`` on 127.0.0.1 (free port): ``(base URL, server)``."""
    require("flask")
    from vrpsam.app.server import AppConfig, open_server, url_of

    with open_server(predictor, port=0, config=AppConfig(**LIMITS)) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield url_of(server).rstrip("/"), server
        finally:
            server.shutdown()
            thread.join(timeout=10)
