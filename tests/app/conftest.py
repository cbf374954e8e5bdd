"""The app under test: a real server on 127.0.0.1 (free port) around the seeded tiny model, in a thread."""

from __future__ import annotations

import pytest
from app_support import serving


@pytest.fixture(scope="module")
def app_server(tiny_model):
    """The app around VRPPredictor(tiny-random); its temporary folder is removed afterwards."""
    from vrpsam.vrp.predictor import VRPPredictor

    with serving(VRPPredictor(tiny_model)) as running:
        yield running


@pytest.fixture
def base_url(app_server):
    return app_server[0]
