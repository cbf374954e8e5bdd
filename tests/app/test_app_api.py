"""The app's JSON API over real HTTP (no browser): results match the predictor, every user mistake is a
clear JSON error, uploads and images are capped, and no request reaches a file outside the job folders."""

from __future__ import annotations

import io
import json
import secrets
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from app_support import image_file, png_bytes, png_claiming_size, post_segment, random_image, request, serving
from PIL import Image

from vrpsam.vrp.predictor import VRPPredictor

REFERENCE = random_image(48, 64, seed=1)
TARGETS = [random_image(40, 56, seed=2), random_image(64, 40, seed=3)]


def fields(annotation: dict | None, *, mask: np.ndarray | None = None, targets=TARGETS, reference=REFERENCE):
    out: list = [] if reference is None else [("reference", image_file("ref.png", reference))]
    if annotation is not None:
        out.append(("annotation", json.dumps(annotation)))
    if mask is not None:
        out.append(("mask", image_file("mask.png", mask)))
    out += [("targets", image_file(f"t{i}.png", t)) for i, t in enumerate(targets)]
    return out


def get_png(base: str, url: str) -> Image.Image:
    reply = request(base, "GET", url)
    assert reply.status == 200 and reply.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(reply.body))


def expected_masks(model, **annotation) -> list[np.ndarray]:
    predictor = VRPPredictor(model)
    predictor.set_reference(REFERENCE, **annotation)
    return [p.mask for p in predictor.predict_batch(TARGETS)]


BOX_MASK = np.zeros((48, 64), np.uint8)
BOX_MASK[10:30, 20:50] = 255

KINDS = [
    ({"kind": "points", "points": [[30, 20], [40.5, 25]]}, None, dict(points=[(30, 20), (40.5, 25)])),
    ({"kind": "box", "box": [8, 6, 50, 40]}, None, dict(box=(8, 6, 50, 40))),
    ({"kind": "scribble", "polylines": [[[10, 10], [30, 20], [50, 12]]], "width": 4},
     None, dict(scribble=[[(10, 10), (30, 20), (50, 12)]])),
    ({"kind": "mask"}, BOX_MASK, dict(mask=BOX_MASK)),
]


@pytest.mark.parametrize("annotation, mask, direct", KINDS, ids=[k[0]["kind"] for k in KINDS])
def test_each_annotation_kind_gives_the_predictors_masks(base_url, tiny_model, annotation, mask, direct):
    if annotation["kind"] == "scribble":  # the API's width is in pixels, as Annotation.scribble's
        from vrpsam.vrp.annotations import Annotation

        direct = dict(scribble=Annotation.scribble(direct["scribble"], width=4))
    reply = post_segment(base_url, fields(annotation, mask=mask))
    assert reply.status == 200, reply.body
    body = reply.json()
    assert [t["number"] for t in body["targets"]] == [1, 2]
    for target, image, want in zip(body["targets"], TARGETS, expected_masks(tiny_model, **direct)):
        assert (target["height"], target["width"]) == image.shape[:2]
        png = get_png(base_url, target["mask_url"])
        assert png.mode == "L" and png.size == (image.shape[1], image.shape[0])
        np.testing.assert_array_equal(np.asarray(png), want.astype(np.uint8) * 255)
        overlay = get_png(base_url, target["overlay_url"])
        assert overlay.mode == "RGB" and overlay.size == png.size


def test_training_free_predictor_serves_the_same_api(tiny_model):
    from vrpsam.vrp.training_free import TrainingFreePredictor

    predictor = TrainingFreePredictor(tiny_model.sam)
    with serving(predictor) as (base, _):
        reply = post_segment(base, fields({"kind": "points", "points": [[30, 20]]}))
        assert reply.status == 200, reply.body
        mask = np.asarray(get_png(base, reply.json()["targets"][1]["mask_url"])) > 0
    direct = TrainingFreePredictor(tiny_model.sam)
    direct.set_reference(REFERENCE, points=[(30, 20)])
    np.testing.assert_array_equal(mask, direct.predict(TARGETS[1]).mask)


def test_zip_holds_every_mask_under_server_made_names(base_url):
    body = post_segment(base_url, fields({"kind": "box", "box": [8, 6, 50, 40]})).json()
    reply = request(base_url, "GET", body["zip_url"])
    assert reply.status == 200 and reply.headers["content-type"] == "application/zip"
    assert "attachment" in reply.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        assert archive.namelist() == ["mask-1.png", "mask-2.png"]
        for name, target in zip(archive.namelist(), body["targets"]):
            assert archive.read(name) == request(base_url, "GET", target["mask_url"]).body


def test_concurrent_requests_keep_their_own_reference(base_url, tiny_model):
    boxes = [(2, 2, 20, 20), (30, 10, 64, 48), (0, 0, 64, 48), (10, 30, 40, 46)]
    with ThreadPoolExecutor(len(boxes)) as pool:
        replies = list(pool.map(lambda box: post_segment(base_url, fields({"kind": "box", "box": list(box)})), boxes))
    for box, reply in zip(boxes, replies):
        assert reply.status == 200
        masks = [np.asarray(get_png(base_url, t["mask_url"])) > 0 for t in reply.json()["targets"]]
        for got, want in zip(masks, expected_masks(tiny_model, box=box)):
            np.testing.assert_array_equal(got, want)


EMPTY = np.zeros((48, 64), np.uint8)
GREY = np.where(BOX_MASK > 0, 255, 128).astype(np.uint8)
TRANSPARENT = np.dstack([BOX_MASK] * 3 + [np.full_like(BOX_MASK, 100)])

MISTAKES = [
    ("no-annotation", fields(None), "annotation: missing"),
    ("not-json", [("annotation", "{box")] + fields(None), "not valid JSON"),
    ("unknown-kind", fields({"kind": "lasso"}), "kind"),
    ("unknown-field", fields({"kind": "box", "box": [1, 1, 9, 9], "colour": "red"}), "unexpected field(s) for kind box: colour"),
    ("missing-field", fields({"kind": "points"}), "needs the field(s) points"),
    ("box-outside", fields({"kind": "box", "box": [10, 10, 65, 40]}), "lies outside the image (width 64, height 48)"),
    ("box-degenerate", fields({"kind": "box", "box": [30, 10, 20, 40]}), "degenerate"),
    ("box-not-4", fields({"kind": "box", "box": [1, 2, 3]}), "box must be [x1, y1, x2, y2]"),
    ("no-points", fields({"kind": "points", "points": []}), "empty"),
    ("point-nan", fields({"kind": "points", "points": [["a", 3]]}), "points"),
    ("mask-file-missing", fields({"kind": "mask"}), "needs the mask image"),
    ("mask-empty", fields({"kind": "mask"}, mask=EMPTY), "no foreground pixel"),
    ("mask-size", fields({"kind": "mask"}, mask=BOX_MASK[:40]), "differs from the image size"),
    ("mask-not-binary", fields({"kind": "mask"}, mask=GREY), "must be binary"),
    ("mask-transparent", fields({"kind": "mask"}, mask=TRANSPARENT), "transparent pixels"),
    ("mask-with-box", fields({"kind": "box", "box": [1, 1, 9, 9]}, mask=BOX_MASK), "mask file was uploaded"),
    ("no-reference", fields({"kind": "box", "box": [1, 1, 9, 9]}, reference=None), "reference: upload"),
    ("no-targets", fields({"kind": "box", "box": [1, 1, 9, 9]}, targets=[]), "targets: upload at least one"),
    ("too-many-targets", fields({"kind": "box", "box": [1, 1, 9, 9]}, targets=TARGETS * 2), "over the limit of 3"),
    ("unreadable-reference", [("reference", ("r.png", b"no image here", "image/png")),
                              ("annotation", '{"kind": "points", "points": [[1, 1]]}')] + fields(None, reference=None),
     "reference image: not a readable image"),
    ("truncated-target", fields({"kind": "box", "box": [1, 1, 9, 9]}, targets=[])
     + [("targets", ("cut.png", png_bytes(TARGETS[0])[:300], "image/png"))], "target #1 (cut.png): the image data is damaged"),
]


@pytest.mark.parametrize("form, message", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_user_mistakes_are_one_line_json_errors(base_url, form, message):
    reply = post_segment(base_url, form)
    assert reply.status == 400 and reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_upload_over_the_cap_is_413_with_a_json_error(base_url):
    noise = image_file("big.png", random_image(900, 900, seed=4))  # ~2.4 MB of incompressible pixels > 2 MB
    reply = post_segment(base_url, fields({"kind": "box", "box": [1, 1, 9, 9]}, targets=[]) + [("targets", noise)])
    assert reply.status == 413
    assert "upload too large: over 2 MB" in reply.json()["error"]


@pytest.mark.parametrize("data", [
    png_bytes(np.zeros((1500, 1500, 3), np.uint8)),  # 2.25 MP, a few kB
    png_claiming_size(100_000, 100_000),  # a bomb: 10 GP claimed, never decoded
], ids=["over-limit", "decompression-bomb"])
def test_images_over_the_pixel_cap_are_refused_before_decoding(base_url, data):
    form = fields({"kind": "box", "box": [1, 1, 9, 9]}, targets=[]) + [("targets", ("big.png", data, "image/png"))]
    reply = post_segment(base_url, form)
    assert reply.status == 400
    assert "pixels, over the limit of 2,000,000" in reply.json()["error"]


@pytest.fixture(scope="module")
def job(app_server):
    return post_segment(app_server[0], fields({"kind": "box", "box": [8, 6, 50, 40]})).json()["job"]


@pytest.fixture
def secret_in_tmp():
    """A file next to the app's temporary folder, which no request may read."""
    path = Path(tempfile.gettempdir()) / f"vrpsam-secret-{secrets.token_hex(4)}.png"
    path.write_bytes(b"SECRET" + png_bytes(EMPTY))
    yield path.name
    path.unlink()


TRAVERSALS = [
    "/api/jobs/{job}/mask/../../{secret}",
    "/api/jobs/{job}/mask/..%2f..%2f{secret}",
    "/api/jobs/{job}/mask/%2e%2e/%2e%2e/{secret}",
    "/api/jobs/..%2f{secret}/mask/1.png",
    "/api/jobs/../../{secret}",
    "/api/jobs/%2e%2e/mask/1.png",
    "/api/jobs//tmp/{secret}/mask/1.png",
    "/api/jobs/%2Ftmp%2F{secret}/mask/1.png",
    "/api/jobs/{job}/mask/0.png",
    "/api/jobs/{job}/mask/-1.png",
    "/api/jobs/{job}/mask/3.png",
    "/api/jobs/{job}/reference/1.png",
    "/api/jobs/{job}/mask/1.png%00.txt",
    "/api/jobs/AAAAAAAAAAAAAAAAAAAAAA/mask/1.png",
    "/api/jobs/AAAAAAAAAAAAAAAAAAAAAA/masks.zip",
    "/static/../server.py",
    "/static/%2e%2e/server.py",
    "/static/..%2fserver.py",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/../../../../etc/passwd",
]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_path_traversal_never_reaches_a_file(base_url, job, secret_in_tmp, template):
    reply = request(base_url, "GET", template.format(job=job, secret=secret_in_tmp))
    assert reply.status in (400, 404), reply.status
    assert b"SECRET" not in reply.body and b"root:" not in reply.body and b"import" not in reply.body
    assert reply.headers["content-type"] == "application/json"


def test_the_real_result_is_served(base_url, job):
    assert request(base_url, "GET", f"/api/jobs/{job}/mask/1.png").status == 200


def test_foreign_host_and_cross_origin_post_are_refused(base_url):
    assert request(base_url, "GET", "/api/info", headers={"Host": "attacker.example:80"}).status == 400
    reply = post_segment(base_url, fields({"kind": "box", "box": [1, 1, 9, 9]}), headers={"Origin": "http://attacker.example"})
    assert reply.status == 403 and "attacker.example" in reply.json()["error"]
    same = post_segment(base_url, fields({"kind": "box", "box": [1, 1, 9, 9]}), headers={"Origin": base_url})
    assert same.status == 200


def test_page_and_its_files_are_served_locally_with_a_strict_policy(base_url):
    page = request(base_url, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert b"http://" not in page.body and b"https://" not in page.body  # no CDN
    for name in ("app.js", "style.css"):
        reply = request(base_url, "GET", f"/static/{name}")
        assert reply.status == 200 and b"https://" not in reply.body
    info = request(base_url, "GET", "/api/info").json()
    assert info == {"model": "tiny-random", "max_upload_mb": 2, "max_pixels": 2_000_000, "max_targets": 3}


def test_job_store_keeps_the_newest_jobs_only(tmp_path):
    from vrpsam.app.jobs import JobStore

    store = JobStore(tmp_path, max_jobs=2)
    image, mask = TARGETS[0], np.eye(40, 56, dtype=bool)
    ids = [store.save([image], [mask]) for _ in range(3)]
    assert store.count(ids[0]) is None and not (tmp_path / ids[0]).exists()
    assert store.path(ids[2], "mask", 1) == tmp_path / ids[2] / "mask-1.png"
    assert store.path(ids[2], "mask", 2) is None and store.path("../" + ids[2], "mask", 1) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ids[1:])


class HeldPredictor:
    """A predictor that stops inside ``predict_batch`` until the test releases it."""

    def __init__(self, inner) -> None:
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    def set_reference(self, *args, **kwargs):
        self.inner.set_reference(*args, **kwargs)

    def predict_batch(self, images):
        self.entered.set()
        assert self.release.wait(60)
        return self.inner.predict_batch(images)


def test_stopping_waits_for_the_request_in_progress_then_removes_the_folder(tiny_model, tmp_path, monkeypatch):
    from vrpsam.app.server import AppConfig, open_server, url_of

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where open_server makes its folder
    predictor = HeldPredictor(VRPPredictor(tiny_model))
    opened = open_server(predictor, port=0, config=AppConfig(model_name="held"))
    server = opened.__enter__()
    (folder,) = tmp_path.glob("vrpsam-app-*")
    base = url_of(server).rstrip("/")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with ThreadPoolExecutor(2) as pool:
        reply = pool.submit(post_segment, base, fields({"kind": "box", "box": [8, 6, 50, 40]}))
        assert predictor.entered.wait(60)
        server.shutdown()
        stopped = pool.submit(opened.__exit__, None, None, None)
        try:
            deadline = time.monotonic() + 60
            while server.socket.fileno() != -1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(ConnectionRefusedError):  # no longer listening
                request(base, "GET", "/api/info")
            time.sleep(0.2)
            assert not stopped.done() and folder.is_dir()
        finally:
            predictor.release.set()
        assert reply.result(timeout=60).status == 200  # its masks were written before the folder went
        stopped.result(timeout=60)
    assert not folder.exists()


def test_a_request_counts_until_its_reply_is_closed_and_none_is_served_after_closing():
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    from vrpsam.app.server import RequestsInProgress

    counts = []
    in_progress = RequestsInProgress(lambda environ, start: (counts.append(in_progress.count), Response("ok")(environ, start))[1])
    client = Client(in_progress)
    reply = client.get("/")
    assert reply.status_code == 200 and counts == [1]
    assert in_progress.count == 1  # until the server has sent the reply and closed it
    reply.close()
    assert in_progress.count == 0
    in_progress.close_and_wait()  # nothing in progress: returns at once
    reply = client.get("/")
    assert reply.status_code == 503 and reply.json == {"error": "the app is stopping"} and counts == [1]
