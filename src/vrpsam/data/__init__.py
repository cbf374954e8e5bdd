"""Datasets, class folds, deterministic few-shot episodes and their tensors (see docs/datasets.md)."""

from .base import IGNORE, IndexedSource, SegmentationSource, SourceView, binary_foreground
from .coco import COCO_CLASSES, CocoJsonSource, CocoSource
from .dataset import EpisodeDataset, collate_episodes
from .davis import DavisSource
from .episodes import (
    Episode,
    EpisodeSampler,
    TrainingEpisodes,
    episode_at,
    load_episodes,
    make_episodes,
    save_episodes,
    shard,
    training_episode,
    video_episodes,
)
from .folder import FolderSource
from .folds import Fold, fold_classes, fold_test_classes, split_fold, validation_split
from .fss import FssSource
from .pascal import VOC_CLASSES, PascalSource
from .sources import SOURCE_KINDS, open_source
from ..io.images import IMAGENET_MEAN, IMAGENET_STD
from .transforms import image_tensor, mask_tensor
from .yolo import YoloSource

__all__ = [
    "COCO_CLASSES", "CocoJsonSource", "CocoSource", "DavisSource", "Episode", "EpisodeDataset", "EpisodeSampler",
    "Fold", "FolderSource", "FssSource", "IGNORE", "IMAGENET_MEAN", "IMAGENET_STD", "IndexedSource",
    "PascalSource", "SOURCE_KINDS", "SegmentationSource", "SourceView", "TrainingEpisodes", "VOC_CLASSES",
    "YoloSource", "binary_foreground", "collate_episodes", "episode_at", "fold_classes", "fold_test_classes",
    "image_tensor", "load_episodes", "make_episodes", "mask_tensor", "open_source", "save_episodes", "shard",
    "split_fold", "training_episode", "validation_split", "video_episodes",
]
