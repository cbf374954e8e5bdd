"""Shared test helpers: the read-only assets in ``../shared`` and tiny seeded models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VRPSAM_SHARED", REPO.parent / "shared"))


def shared_path(relative: str) -> Path:
    """Path of an asset under ``../shared``; skips the test when it is absent, fails under ``CI=true``."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared asset missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared():
    """The :func:`shared_path` function, as a fixture."""
    return shared_path


@pytest.fixture(autouse=True)
def _offline_and_private_cache(monkeypatch, tmp_path_factory):
    """No test reaches the network by accident, writes to the user's real weights cache, or depends on the
    user's ``VRPSAM_WEIGHTS`` (with it set, the default model loads where a test expects it missing and
    ``vrpsam app`` serves forever); tests that need the weights folder set it themselves."""
    monkeypatch.delenv("VRPSAM_WEIGHTS", raising=False)
    monkeypatch.setenv("VRPSAM_OFFLINE", "1")
    monkeypatch.setenv("VRPSAM_CACHE", str(tmp_path_factory.getbasetemp() / "vrpsam-cache"))


@pytest.fixture(scope="module")
def tiny_model():
    """The seeded tiny random VRP-SAM (``build_model("tiny-random")``), built once per test module."""
    from vrpsam.vrp.build import build_model

    return build_model("tiny-random")


@pytest.fixture
def one_tiny_model(monkeypatch, tiny_model):
    """Make ``tiny-random`` resolve to the module's one model, so CLI runs still go through build_model."""
    from vrpsam.vrp import build

    monkeypatch.setitem(build.MODELS, "tiny-random", lambda: tiny_model)
    return tiny_model
