"""Few-shot episodes: which query image and which support images, for which class.

Every episode is a pure function of its seed and position. Episode ``i`` of an evaluation list is
drawn from its own generator ``numpy.random.default_rng([seed, i])``; training episode ``i`` of epoch
``e`` from ``default_rng([seed, e, i])``:

1. the class, uniform over the given classes that have at least ``shots + 1`` images;
2. the query, uniform over that class's images (``source.items(class)``, sorted);
3. ``shots`` distinct supports, uniform over the class's other images.

So an episode does not depend on how many DataLoader workers or DDP ranks draw the list, nor on which
episodes were drawn before it. This fixes the official code, whose episodes come from global RNGs
seeded identically on every rank: its COCO episodes are duplicated across ranks (4 GPUs evaluate
250 distinct episodes, each counted 4 times) and its PASCAL episodes change with the world size.
Ranks split a list with :func:`shard`; a list saved with :func:`save_episodes` replays exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError, InputError
from .base import SegmentationSource
from .storage import read_json, write_json_atomic

DEFAULT_SEED = 321
DEFAULT_EPISODES = 1000
EPISODES_FORMAT = "vrpsam-episodes"
EPISODES_VERSION = 1


@dataclass(frozen=True)
class Episode:
    """One query image and its support images for one class. ``epoch`` is set for training episodes."""

    index: int
    class_id: int
    query: str
    supports: tuple[str, ...]
    epoch: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"index": self.index, "class_id": self.class_id, "query": self.query, "supports": list(self.supports)}
        if self.epoch is not None:
            data["epoch"] = self.epoch
        return data

    @classmethod
    def from_json(cls, data: Any) -> "Episode":
        """Inverse of :meth:`to_json`; raises ``ValueError`` on anything else."""
        if not isinstance(data, dict) or set(data) - {"index", "class_id", "query", "supports", "epoch"}:
            raise ValueError(f"not an episode: {str(data)[:80]}")
        supports = data["supports"]
        names = [data["query"]] + (supports if isinstance(supports, list) else [None])
        if not (supports and all(isinstance(name, str) for name in names)):
            raise ValueError(f"episode {data.get('index')}: query and (at least one) supports must be item ids")
        epoch = data.get("epoch")
        values = (data["index"], data["class_id"]) + (() if epoch is None else (epoch,))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"episode {data.get('index')}: index, class_id and epoch must be integers")
        return cls(data["index"], data["class_id"], data["query"], tuple(supports), epoch)


class EpisodeSampler:
    """Draws episodes of ``shots`` supports over ``classes`` of ``source``; reads the class lists once."""

    def __init__(self, source: SegmentationSource, classes: Iterable[int], shots: int = 1):
        if shots < 1:
            raise InputError(f"shots: expected >= 1, got {shots}")
        self.shots = shots
        requested = sorted(set(int(c) for c in classes))
        for class_id in requested:
            source.check_class(class_id)
        self.pools = {c: source.items(c) for c in requested}
        self.classes = [c for c in requested if len(self.pools[c]) >= shots + 1]
        if not self.classes:
            raise DataError(f"{source.name}: no class among {requested[:10]}{'...' if len(requested) > 10 else ''} "
                            f"has the {shots + 1} images a {shots}-shot episode needs")

    def draw(self, rng: np.random.Generator, index: int, epoch: int | None = None) -> Episode:
        class_id = self.classes[int(rng.integers(len(self.classes)))]
        pool = self.pools[class_id]
        query = int(rng.integers(len(pool)))
        # Supports are drawn among the other len(pool) - 1 images, then shifted past the query.
        others = rng.choice(len(pool) - 1, size=self.shots, replace=False)
        supports = tuple(pool[j + 1 if j >= query else j] for j in others.tolist())
        return Episode(index, class_id, pool[query], supports, epoch)

    def episode(self, index: int, seed: int = DEFAULT_SEED) -> Episode:
        """Evaluation episode ``index``: a pure function of (seed, index)."""
        return self.draw(np.random.default_rng([seed, index]), index)

    def training_episode(self, epoch: int, index: int, seed: int = DEFAULT_SEED) -> Episode:
        """Training episode ``index`` of ``epoch``: a pure function of (seed, epoch, index)."""
        return self.draw(np.random.default_rng([seed, epoch, index]), index, epoch)


def make_episodes(source: SegmentationSource, classes: Iterable[int], n: int = DEFAULT_EPISODES, *,
                  seed: int = DEFAULT_SEED, shots: int = 1) -> list[Episode]:
    """Evaluation episodes 0..n-1 (episode ``i`` is :func:`episode_at` ``i``)."""
    sampler = EpisodeSampler(source, classes, shots)
    return [sampler.episode(i, seed) for i in range(n)]


def episode_at(source: SegmentationSource, classes: Iterable[int], index: int, *, seed: int = DEFAULT_SEED,
               shots: int = 1) -> Episode:
    """Evaluation episode ``index`` alone, equal to ``make_episodes(...)[index]``."""
    return EpisodeSampler(source, classes, shots).episode(index, seed)


def training_episode(source: SegmentationSource, classes: Iterable[int], seed: int, epoch: int, index: int,
                     shots: int = 1) -> Episode:
    """Training episode ``index`` of ``epoch``; use :class:`TrainingEpisodes` for many."""
    return EpisodeSampler(source, classes, shots).training_episode(epoch, index, seed)


class TrainingEpisodes(Sequence[Episode]):
    """The ``length`` training episodes of one epoch, drawn on access; :meth:`set_epoch` moves to another epoch."""

    def __init__(self, source: SegmentationSource, classes: Iterable[int], length: int, *, seed: int = DEFAULT_SEED,
                 shots: int = 1, epoch: int = 0):
        self.sampler = EpisodeSampler(source, classes, shots)
        self.length, self.seed, self.epoch = int(length), seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        if not -self.length <= index < self.length:
            raise IndexError(index)
        return self.sampler.training_episode(self.epoch, index % self.length, self.seed)


def video_episodes(source: Any) -> list[Episode]:
    """Episodes of a video source (:class:`vrpsam.data.davis.DavisSource`), track by track.

    The reference is the first frame where the object appears; every later annotated frame of its
    sequence is a query, in order, whether or not the object is visible there.
    """
    episodes = []
    for class_id in source.classes:
        visible = set(source.items(class_id))
        frames = source.frames(class_id)
        first = next((i for i, frame in enumerate(frames) if frame in visible), None)
        if first is None:
            continue
        for frame in frames[first + 1:]:
            episodes.append(Episode(len(episodes), class_id, frame, (frames[first],)))
    return episodes


def shard(episodes: Sequence[Episode], rank: int, world_size: int) -> list[Episode]:
    """Rank ``rank``'s share: episodes ``rank, rank + world_size, ...``; the shards partition the list."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank {rank} / world_size {world_size}: expected 0 <= rank < world_size")
    return list(episodes[rank::world_size])


def save_episodes(path: str | os.PathLike, episodes: Sequence[Episode], meta: dict[str, Any] | None = None) -> None:
    """Write ``episodes`` and JSON-serialisable ``meta`` (source, classes, seed, ...) atomically."""
    write_json_atomic(path, {"format": EPISODES_FORMAT, "version": EPISODES_VERSION, "meta": dict(meta or {}),
                             "episodes": [e.to_json() for e in episodes]})


def load_episodes(path: str | os.PathLike) -> tuple[list[Episode], dict[str, Any]]:
    """(episodes, meta) from a file written by :func:`save_episodes`."""
    data = read_json(path, "episode list")
    if not isinstance(data, dict) or data.get("format") != EPISODES_FORMAT:
        raise DataError(f"{path}: not a vrpsam episode list (no \"format\": \"{EPISODES_FORMAT}\")")
    if data.get("version") != EPISODES_VERSION:
        raise DataError(f"{path}: episode list version {data.get('version')!r}; this vrpsam reads {EPISODES_VERSION}")
    try:
        episodes = [Episode.from_json(e) for e in data["episodes"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed episode ({exc})") from None
    return episodes, dict(data.get("meta") or {})
