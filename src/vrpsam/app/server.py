"""The web server behind ``vrpsam app``: a local page to annotate a reference and segment targets.

Why Flask rather than the standard library: ``http.server`` has no multipart parser (``cgi`` is gone
from Python 3.13), no upload cap and no typed routing, and a hand-written parser of untrusted
multipart bodies is the riskiest code an app like this could contain. Flask, on Werkzeug, is small,
well kept and gives exactly those pieces: ``MAX_CONTENT_LENGTH`` (413 before the body is parsed),
route converters that match only digits, ``TRUSTED_HOSTS``, and safe static-file serving. It is an
optional dependency (``pip install 'vrpsam[app]'``) and nothing outside ``vrpsam.app`` imports it.
Werkzeug's threaded server is enough for one local user, so no other server is needed.

Safety, in one place: binds to 127.0.0.1 unless told otherwise; on loopback only ``Host: 127.0.0.1`` /
``localhost`` is served (no DNS rebinding) and cross-origin POSTs are refused; uploads are capped in
bytes and images in pixels (from the header, before decoding); results live only in the app's own
temporary folder, under server-made names (see :mod:`vrpsam.app.jobs`); one model and one predictor,
used under a lock from ``set_reference`` (which replaces the previous references) to the last mask, so
concurrent requests never mix references.

API (JSON errors are ``{"error": "<one line>"}`` with a 4xx status, or 503 once the app is stopping):

- ``GET /api/info`` -> ``{"model", "max_upload_mb", "max_pixels", "max_targets"}``
- ``POST /api/segment``, multipart: ``reference`` (image file), ``annotation`` (JSON, see
  :func:`vrpsam.app.uploads.read_annotation`), ``mask`` (PNG, for kind mask only), ``targets`` (1..N
  image files) -> ``{"job", "zip_url", "targets": [{"number", "name", "width", "height", "score",
  "mask_url", "overlay_url"}]}``
- ``GET /api/jobs/<job>/mask/<n>.png``, ``/overlay/<n>.png``, ``/masks.zip``
"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from flask import Flask, Response, jsonify, request, send_file
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wsgi import ClosingIterator

from ..errors import InputError
from .jobs import JobStore
from .uploads import read_annotation, read_image

STATIC = Path(__file__).resolve().parent / "static"
MIB = 1 << 20


@dataclass(frozen=True)
class AppConfig:
    """Limits of one app: bytes per request, pixels per image, targets per run, jobs kept on disk."""

    max_upload_mb: float = 20
    max_pixels: int = 25_000_000
    max_targets: int = 50
    max_jobs: int = 20
    model_name: str = ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(predictor: Any, workdir: Path, config: AppConfig = AppConfig(),
               trusted_hosts: list[str] | None = None) -> Flask:
    """The Flask app around a built ``predictor`` (``set_reference``, ``predict_batch``), e.g. a
    :class:`~vrpsam.vrp.predictor.VRPPredictor`; ``workdir`` is an empty folder the caller made for it."""
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.url_map.merge_slashes = False  # "//" is a 404, not a redirect to somewhere else
    app.config.update(
        MAX_CONTENT_LENGTH=int(config.max_upload_mb * MIB),
        MAX_FORM_MEMORY_SIZE=4 * MIB,  # the annotation JSON (long scribbles); files are capped above
        TRUSTED_HOSTS=trusted_hosts,
    )
    jobs = JobStore(workdir, max_jobs=config.max_jobs)
    inference = threading.Lock()  # one request at a time owns the predictor's references (and the model)

    def error(status: int, message: str) -> tuple[Response, int]:
        return jsonify(error=message), status

    @app.errorhandler(InputError)
    def user_mistake(exc: InputError):
        return error(400, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return error(413, f"upload too large: over {config.max_upload_mb:g} MB in one request "
                              "(start the app with --max-upload-mb to allow more)")
        return error(exc.code or 500, f"{exc.name.lower()}: {exc.description}")

    @app.before_request
    def same_origin_posts_only():
        # Another web site open in the same browser must not be able to make this app work for it.
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin is not None and origin != request.host_url.rstrip("/"):
            return error(403, f"forbidden: requests from {origin} are not accepted")
        return None

    @app.after_request
    def locked_down(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index():
        return send_file(STATIC / "index.html", mimetype="text/html")

    @app.get("/api/info")
    def info():
        return jsonify(model=config.model_name, max_upload_mb=config.max_upload_mb,
                       max_pixels=config.max_pixels, max_targets=config.max_targets)

    @app.post("/api/segment")
    def segment():
        reference_file = request.files.get("reference")
        targets = request.files.getlist("targets")
        if reference_file is None:
            raise InputError("reference: upload a reference image")
        if not targets:
            raise InputError("targets: upload at least one target image")
        if len(targets) > config.max_targets:
            raise InputError(f"targets: {len(targets)} images, over the limit of {config.max_targets} per run")
        reference = read_image(reference_file.read(), "reference image", config.max_pixels)
        mask_file = request.files.get("mask")
        kind, annotation = read_annotation(request.form.get("annotation"), mask_file.read() if mask_file else None,
                                           reference.shape[:2], config.max_pixels)
        images = [read_image(f.read(), f"target #{i} ({f.filename or 'unnamed'})", config.max_pixels)
                  for i, f in enumerate(targets, start=1)]
        with inference:
            predictor.set_reference(reference, **{kind: annotation})
            predictions = predictor.predict_batch(images)
        job = jobs.save(images, [p.mask for p in predictions])
        base = f"/api/jobs/{job}"
        return jsonify(job=job, zip_url=f"{base}/masks.zip", targets=[
            {"number": n, "name": (f.filename or "")[:200], "width": im.shape[1], "height": im.shape[0],
             "score": p.score, "mask_url": f"{base}/mask/{n}.png", "overlay_url": f"{base}/overlay/{n}.png"}
            for n, (f, im, p) in enumerate(zip(targets, images, predictions), start=1)
        ])

    @app.get("/api/jobs/<job>/<any(mask, overlay):kind>/<int:number>.png")
    def result(job: str, kind: str, number: int):
        path = jobs.path(job, kind, number)
        if path is None:
            return error(404, "not found: no such job or result (results are kept for the newest jobs only)")
        return send_file(path, mimetype="image/png", as_attachment=kind == "mask", download_name=path.name)

    @app.get("/api/jobs/<job>/masks.zip")
    def masks_zip(job: str):
        data = jobs.zip_masks(job)
        if data is None:
            return error(404, "not found: no such job (results are kept for the newest jobs only)")
        return Response(data, mimetype="application/zip",
                        headers={"Content-Disposition": "attachment; filename=masks.zip"})

    return app


class RequestsInProgress:
    """WSGI middleware that counts requests from their arrival until their reply is fully sent.

    Why: a request runs in a daemon thread of Werkzeug's server. Were the process to exit while one is
    segmenting, its client would get a dropped connection, and the interpreter would end under a running
    torch thread (``terminate called without an active exception``, SIGABRT). :func:`open_server` calls
    :meth:`close_and_wait` before it removes the app's folder.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._count = 0
        self._closed = False
        self._changed = threading.Condition()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        with self._changed:
            if self._closed:  # a connection accepted just before the server stopped listening
                return Response('{"error": "the app is stopping"}', 503, mimetype="application/json")(
                    environ, start_response)
            self._count += 1
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._finished()
            raise
        return ClosingIterator(body, [self._finished])  # the server closes it once the reply is sent

    def _finished(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    @property
    def count(self) -> int:
        with self._changed:
            return self._count

    def close_and_wait(self) -> None:
        """Refuse new requests (503), then block until none is in progress (a signal's exception interrupts)."""
        with self._changed:
            self._closed = True
            self._changed.wait_for(lambda: self._count == 0)


@contextmanager
def open_server(predictor: Any, *, host: str = "127.0.0.1", port: int = 7860,
                config: AppConfig = AppConfig()) -> Iterator[BaseWSGIServer]:
    """A bound, not yet serving, threaded server with its own temporary folder.

    Call ``serve_forever()`` on it (``shutdown()`` from another thread stops it); ``server.port`` is
    the bound port, useful with ``port=0``. On exit it stops listening, waits for the requests in
    progress (``server.app``, a :class:`RequestsInProgress`) to send their replies, then removes its
    folder; an exception during that wait (a second Ctrl-C) still removes the folder.
    """
    workdir = Path(tempfile.mkdtemp(prefix="vrpsam-app-"))
    try:
        # Werkzeug compares host names without the port, which IPv6 literals do not survive: IPv4 only.
        trusted = sorted({host, "127.0.0.1", "localhost"}) if is_loopback(host) and ":" not in host else None
        in_progress = RequestsInProgress(create_app(predictor, workdir, config, trusted_hosts=trusted))
        server = make_server(host, port, in_progress, threaded=True)
        try:
            yield server
        finally:
            server.server_close()
            in_progress.close_and_wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def url_of(server: BaseWSGIServer) -> str:
    host = server.host if ":" not in server.host else f"[{server.host}]"
    return f"http://{host}:{server.port}/"
