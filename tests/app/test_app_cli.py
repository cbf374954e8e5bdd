"""``vrpsam app`` as users start it: binds to 127.0.0.1, prints its URL, serves, cleans up on stop."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
from app_support import require

from vrpsam.cli.main import main


def _lines(process: subprocess.Popen) -> queue.Queue:
    """The process's stdout lines, then ``""`` at its end, read by a thread so that a wait can time out."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_starts_on_loopback_prints_url_and_removes_its_folder_on_stop(tmp_path):
    require("flask")
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vrpsam.cli.main", "app", "--model", "tiny-random", "--port", "0", "--max-upload-mb", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        lines = _lines(process)
        banner = lines.get(timeout=120)
        assert banner, f"vrpsam app stopped: {process.stderr.read()}"
        assert "listening on 127.0.0.1" in banner and "this computer only" in banner
        opened = lines.get(timeout=30)
        url = opened.split()[1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        with urllib.request.urlopen(url + "api/info", timeout=30) as reply:
            assert json.load(reply)["max_upload_mb"] == 3
        folders = list(tmp_path.glob("vrpsam-app-*"))
        assert len(folders) == 1 and folders[0].is_dir()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        assert code == 0, f"exit {code}: {process.stderr.read()}"
        assert not folders[0].exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


@pytest.mark.parametrize("argv, message", [
    (["app"], "mobilenet_v2_1.0_224_quant.tflite"),  # the default lite model, offline without its backbone
    (["app", "--model", "tiny-random", "--max-upload-mb", "0"], "--max-upload-mb: expected a positive number"),
    (["app", "--model", "no/such/checkpoint.pt"], "no/such/checkpoint.pt"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
