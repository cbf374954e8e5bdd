"""Segment Anything (SAM ViT-B/L/H) and MobileSAM, checkpoint-compatible with the official releases."""

from .build import sam_model_registry
from .predictor import SamPredictor
from .sam import Sam
from .transforms import ResizeLongestSide

__all__ = ["Sam", "SamPredictor", "ResizeLongestSide", "sam_model_registry"]
