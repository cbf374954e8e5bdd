"""The weights registry: lookup order, verified atomic downloads from a real local HTTP server, messages.

Every download here is served by ``http.server`` on 127.0.0.1 from a few KB of random bytes registered
under a fake :class:`WeightSpec`; no real weights are fetched and nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from vrpsam import weights
from vrpsam.errors import CheckpointError
from vrpsam.weights import WeightSpec

PAYLOAD = os.urandom(5000)
FAKE = WeightSpec(
    name="fake_net",
    filename="fake_net_1234.pth",
    url="http://127.0.0.1:9/unused/fake_net_1234.pth",  # never contacted: tests point at the local server
    sha256=hashlib.sha256(PAYLOAD).hexdigest(),
    size=len(PAYLOAD),
    description="random bytes for tests",
    license="none",
)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/<mode>/<filename>``: good, corrupt, truncated, long, missing or stall."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        server.requests.append(self.path)
        mode = self.path.strip("/").split("/")[0]
        if mode == "missing":
            self.send_error(404, "Not Found")
            return
        body = {"corrupt": bytes(b ^ 0xFF for b in PAYLOAD), "long": PAYLOAD + b"x"}.get(mode, PAYLOAD)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode != "long":  # "long" sends no length, so only the byte count can catch it
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncated":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif mode == "stall":
            self.wfile.write(body[:100])
            self.wfile.flush()
            server.release.wait(10)
        else:
            self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean environment: the cache in tmp_path, no weights folders, downloads allowed, FAKE registered."""
    for var in ("VRPSAM_WEIGHTS", "VRPSAM_OFFLINE", "VRPSAM_WEIGHTS_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("VRPSAM_CACHE", str(cache))
    monkeypatch.setitem(weights.REGISTRY, FAKE.name, FAKE)
    return cache


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (temporary ones included), relative, sorted."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _put(folder: Path, data: bytes = PAYLOAD) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FAKE.filename
    path.write_bytes(data)
    return path


def test_download_verifies_caches_and_is_not_repeated(env, server, monkeypatch):
    monkeypatch.setenv("VRPSAM_WEIGHTS_URL", f"{server.base}/good/")
    path = weights.resolve("fake_net")
    assert path == env / FAKE.filename
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [f"/good/{FAKE.filename}"]
    # no temporary file left, only the file and its verification marker
    assert [f for f in _files(env) if not f.startswith("verified")] == [FAKE.filename]
    assert len(_files(env / "verified")) == 1

    hashed = []
    monkeypatch.setattr(weights, "_sha256_file", lambda p: hashed.append(p) or FAKE.sha256)
    assert weights.resolve("fake_net") == path
    assert weights.resolve(FAKE.filename) == path  # the bare file name means the same entry
    assert len(server.requests) == 1  # served from the cache
    assert hashed == []  # and the hash was remembered, not recomputed


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("corrupt", "sha256"),
        ("truncated", f"after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"),
        ("long", f"more than the expected {len(PAYLOAD)} bytes"),
        ("missing", "HTTP 404"),
    ],
)
def test_failed_download_caches_nothing(env, server, monkeypatch, mode, reason):
    monkeypatch.setenv("VRPSAM_WEIGHTS_URL", f"{server.base}/{mode}")
    with pytest.raises(CheckpointError, match=reason) as info:
        weights.resolve("fake_net")
    message = str(info.value)
    assert "\n" not in message and "fake_net" in message and f"/{mode}/{FAKE.filename}" in message
    assert "nothing was cached" in message and "VRPSAM_WEIGHTS" in message
    assert _files(env) == []  # neither the final file nor a temporary one


def test_download_times_out_and_cleans_up(env, server, tmp_path):
    folder = tmp_path / "mirror"
    with pytest.raises(CheckpointError, match="timeout"):
        weights.download_to(FAKE, folder, url=f"{server.base}/stall/{FAKE.filename}", timeout=0.3)
    assert _files(folder) == []


def test_ctrl_c_during_download_cleans_up_and_propagates(env, server, tmp_path, monkeypatch):
    class Interrupting:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(weights, "tqdm", Interrupting)
    folder = tmp_path / "mirror"
    with pytest.raises(KeyboardInterrupt):
        weights.download_to(FAKE, folder, url=f"{server.base}/good/{FAKE.filename}")
    assert _files(folder) == []


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_message_lists_every_place(env, server, tmp_path, monkeypatch, how):
    present, absent = tmp_path / "weights_a", tmp_path / "weights_b"
    present.mkdir()
    monkeypatch.setenv("VRPSAM_WEIGHTS", os.pathsep.join([str(present), str(absent)]))
    monkeypatch.setenv("VRPSAM_WEIGHTS_URL", f"{server.base}/good")
    if how == "env":
        monkeypatch.setenv("VRPSAM_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        weights.resolve("fake_net", **({"download": False} if how == "argument" else {}))
    message = str(info.value)
    assert "\n" not in message
    for expected in (
        "fake_net", FAKE.filename, str(present), f"{absent} (VRPSAM_WEIGHTS, no such folder)", f"{env} (cache)",
        "VRPSAM_OFFLINE" if how == "env" else "download=False",
        "set VRPSAM_WEIGHTS=that folder, or pass the file path", f"download from {FAKE.url}",
    ):
        assert expected in message
    assert server.requests == []
    # an explicit download=True overrides VRPSAM_OFFLINE
    if how == "env":
        assert weights.resolve("fake_net", download=True).read_bytes() == PAYLOAD


def test_offline_message_when_no_weights_folder_is_set(env):
    with pytest.raises(CheckpointError, match=r"VRPSAM_WEIGHTS \(unset\)"):
        weights.resolve("fake_net", download=False)


def test_lookup_order_explicit_then_weights_folders_then_cache(env, tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    cached = _put(env)
    in_second = _put(second)
    in_first = _put(first)
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"not even the right size: explicit paths are the user's own")

    monkeypatch.setenv("VRPSAM_WEIGHTS", os.pathsep.join([str(first), str(second)]))
    assert weights.resolve(explicit) == explicit
    assert weights.resolve(str(explicit)) == explicit
    assert weights.resolve("fake_net", download=False) == in_first
    in_first.unlink()
    assert weights.resolve("fake_net", download=False) == in_second
    monkeypatch.delenv("VRPSAM_WEIGHTS")
    assert weights.resolve("fake_net", download=False) == cached
    assert weights.find("fake_net") == cached


def test_cache_dir_fallbacks(monkeypatch, tmp_path):
    monkeypatch.delenv("VRPSAM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "vrpsam"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert weights.cache_dir() == Path.home() / ".cache" / "vrpsam"


def test_found_file_with_wrong_size_or_bytes_is_an_error(env, tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    monkeypatch.setenv("VRPSAM_WEIGHTS", str(folder))
    path = _put(folder, PAYLOAD[:-1])
    with pytest.raises(CheckpointError, match=f"{len(PAYLOAD) - 1} bytes, but fake_net is {len(PAYLOAD)}"):
        weights.resolve("fake_net", download=False, verify=False)  # size is checked even without verify
    _put(folder, PAYLOAD[::-1])
    assert weights.resolve("fake_net", download=False, verify=False) == path
    with pytest.raises(CheckpointError, match=r"sha256 \w+ != \w+ expected for fake_net \(corrupt"):
        weights.resolve("fake_net", download=False)
    # a good file is verified once, then a changed file is hashed (and rejected) again
    _put(folder)
    assert weights.resolve("fake_net", download=False) == path
    _put(folder, bytes(reversed(PAYLOAD)))
    os.utime(path, ns=(1, 1))  # a different mtime, as any rewrite would give
    with pytest.raises(CheckpointError, match="sha256"):
        weights.resolve("fake_net", download=False)


def test_missing_explicit_path_and_unknown_name(env, tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'nope.pth'}: no such weights file"):
        weights.resolve(str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="nope.pth: no such weights file"):
        weights.resolve(Path("nope.pth"))
    with pytest.raises(CheckpointError, match="is a folder"):
        weights.resolve(tmp_path)
    with pytest.raises(CheckpointError) as info:
        weights.resolve("sam_vit_x")
    assert "'sam_vit_x'" in str(info.value)
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "mobile_sam", "mobilenet_v2_tflite", "fake_net"):
        assert name in str(info.value)


def test_describe_and_find(env, tmp_path, monkeypatch):
    monkeypatch.setenv("VRPSAM_WEIGHTS_URL", "http://127.0.0.1:9/mirror")
    rows = {row["name"]: row for row in weights.describe()}
    assert rows["fake_net"]["status"] == "missing" and weights.find("fake_net") is None
    assert rows["fake_net"]["found"] is None
    assert rows["fake_net"]["path"] == rows["fake_net"]["cache_path"] == str(env / FAKE.filename)
    assert rows["fake_net"]["url"] == f"http://127.0.0.1:9/mirror/{FAKE.filename}"
    _put(env, PAYLOAD[:10])
    assert {row["name"]: row for row in weights.describe()}["fake_net"]["status"] == "wrong size"
    found = _put(env)
    row = {row["name"]: row for row in weights.describe()}["fake_net"]
    assert row["status"] == "found" and row["found"] == row["path"] == str(found)


def test_registry_entries_are_well_formed():
    for name, spec in weights.REGISTRY.items():
        assert spec.name == name
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.url.startswith("https://") and spec.url.endswith("/" + spec.filename)
        assert spec.size > 0
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h"):
        spec = weights.REGISTRY[name]
        # Meta names each file after the first 6 hex digits of its MD5
        assert spec.md5 is not None and spec.filename.endswith(f"_{spec.md5[:6]}.pth")


def test_registry_matches_the_real_mobilenet_file(env, shared, monkeypatch):
    path = shared("assets/weights/mobilenet_v2/mobilenet_v2_1.0_224_quant.tflite")
    spec = weights.REGISTRY["mobilenet_v2_tflite"]
    assert weights.verify_file(path, spec) is spec
    assert weights.verify_file(path, "mobilenet_v2_tflite") is spec
    assert weights.verify_file(path) is spec  # matched by the file name
    assert hashlib.md5(path.read_bytes()).hexdigest() == spec.md5
    monkeypatch.setenv("VRPSAM_WEIGHTS", str(path.parent))
    assert weights.resolve("mobilenet_v2_tflite", download=False) == path
    with pytest.raises(CheckpointError, match="bytes, but fake_net is"):
        weights.verify_file(path, FAKE)


def test_verify_file_by_name_needs_a_known_file_name(env, tmp_path):
    other = tmp_path / "renamed.pth"
    other.write_bytes(PAYLOAD)
    with pytest.raises(CheckpointError, match="renamed.pth: file name matches no registry entry; name one of"):
        weights.verify_file(other)
    assert weights.verify_file(other, "fake_net") is FAKE
    assert weights.verify_file(_put(tmp_path)) is FAKE


def test_read_state_dict_rejects_a_non_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(PAYLOAD)
    with pytest.raises(CheckpointError, match=f"{junk}: not a readable checkpoint"):
        weights.read_state_dict(junk)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(weights.read_state_dict(good)["w"], torch.ones(2))


def test_load_into_names_missing_and_unexpected_keys():
    module = torch.nn.Linear(3, 2)
    state = {"weight": torch.zeros(2, 3), "extra.scale": torch.zeros(1)}
    with pytest.raises(CheckpointError) as info:
        weights.load_into(module, state, source="sam_vit_b")
    message = str(info.value)
    assert message.startswith("sam_vit_b: does not fit Linear")
    assert "missing keys: bias" in message and "unexpected keys: extra.scale" in message
    weights.load_into(module, {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, source="x")
    assert torch.equal(module.bias.data, torch.ones(2))
