"""vrpsam: VRP-SAM, Segment Anything prompted by annotated reference images.

The public names below are imported on first use, so ``import vrpsam`` (and the CLI) stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "sam_model_registry": "vrpsam.sam.build",
    "Sam": "vrpsam.sam.sam",
    "SamPredictor": "vrpsam.sam.predictor",
    "VRPSAM": "vrpsam.vrp.model",
    "VRPEncoder": "vrpsam.vrp.encoder",
    "VRPPredictor": "vrpsam.vrp.predictor",
    "Prediction": "vrpsam.vrp.predictor",
    "Annotation": "vrpsam.vrp.annotations",
    "build_vrp_sam": "vrpsam.vrp.build",
    "build_model": "vrpsam.vrp.build",
    "TrainingFreePredictor": "vrpsam.vrp.training_free",
    "load_official_vrp_checkpoint": "vrpsam.vrp.checkpoint",
    "VrpsamError": "vrpsam.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vrpsam' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
