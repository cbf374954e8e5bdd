"""Episodes: pure functions of (seed, index), shardable, saved and replayed exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vrpsam.data import (
    Episode,
    TrainingEpisodes,
    episode_at,
    load_episodes,
    make_episodes,
    open_source,
    save_episodes,
    shard,
    training_episode,
    video_episodes,
)
from vrpsam.data.base import SegmentationSource
from vrpsam.errors import DataError, InputError


class ListSource(SegmentationSource):
    """An in-memory source: {class id: items}; only what episodes need."""

    def __init__(self, items_by_class):
        self._items = items_by_class

    name = "memory"

    @property
    def classes(self):
        return {c: str(c) for c in self._items}

    def items(self, class_id):
        self.check_class(class_id)
        return sorted(self._items[class_id])

    def image_file(self, item):
        raise NotImplementedError

    mask_file = image_file

    def mask(self, item, class_id):
        raise NotImplementedError


SOURCE = ListSource({1: [f"a{i}" for i in range(6)], 2: ["b0", "b1", "b2"], 3: ["c0"], 4: [f"d{i}" for i in range(30)]})


def test_episodes_follow_the_rules():
    episodes = make_episodes(SOURCE, [1, 2, 3, 4], 300, shots=2)
    assert [e.index for e in episodes] == list(range(300))
    assert {e.class_id for e in episodes} == {1, 2, 4}  # class 3 has a single image: never drawn
    for e in episodes:
        pool = SOURCE.items(e.class_id)
        assert e.query in pool and len(e.supports) == 2
        assert len(set(e.supports)) == 2 and e.query not in e.supports and set(e.supports) <= set(pool)
    counts = np.bincount([e.class_id for e in episodes], minlength=5)[[1, 2, 4]]
    assert counts.min() > 60  # uniform over classes, not over images (d has 5x a's images)


def test_episode_i_depends_only_on_seed_and_i():
    full = make_episodes(SOURCE, [1, 2, 4], 10)
    assert make_episodes(SOURCE, [4, 2, 1, 2], 10) == full  # class order and duplicates do not matter
    assert make_episodes(SOURCE, [1, 2, 4], 4) == full[:4]
    assert [episode_at(SOURCE, [1, 2, 4], i) for i in (7, 3)] == [full[7], full[3]]
    # generated in two shards by two "ranks", then merged: the same episodes
    pieces = [shard(full, rank, 2) for rank in range(2)]
    merged = sorted(pieces[0] + pieces[1], key=lambda e: e.index)
    assert merged == full
    assert [e.index for e in pieces[1]] == [1, 3, 5, 7, 9]
    assert make_episodes(SOURCE, [1, 2, 4], 10, seed=322) != full
    assert full[0].supports and full[0].epoch is None


def test_shard_partitions_and_checks_its_arguments():
    episodes = make_episodes(SOURCE, [1, 2, 4], 11)
    shards = [shard(episodes, r, 3) for r in range(3)]
    assert sorted(e.index for s in shards for e in s) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]
    for rank, world in [(3, 3), (-1, 2), (0, 0)]:
        with pytest.raises(InputError):
            shard(episodes, rank, world)


def test_no_eligible_class_is_a_data_error():
    with pytest.raises(DataError) as excinfo:
        make_episodes(SOURCE, [2, 3], 5, shots=3)
    assert "4 images a 3-shot episode needs" in str(excinfo.value)
    with pytest.raises(InputError):
        make_episodes(SOURCE, [9], 5)


def test_training_episodes_are_pure_in_seed_epoch_index():
    one = training_episode(SOURCE, [1, 2, 4], seed=5, epoch=3, index=17)
    assert one == training_episode(SOURCE, [1, 2, 4], seed=5, epoch=3, index=17)
    assert one.epoch == 3 and one.index == 17
    epoch3 = TrainingEpisodes(SOURCE, [1, 2, 4], 20, seed=5, epoch=3)
    assert epoch3[17] == one and len(epoch3) == 20 and epoch3[-3] == one
    first = list(epoch3)
    epoch3.set_epoch(4)
    assert list(epoch3) != first
    assert list(epoch3) == [training_episode(SOURCE, [1, 2, 4], 5, 4, i) for i in range(20)]
    with pytest.raises(IndexError):
        epoch3[20]


def test_json_round_trip(tmp_path):
    episodes = make_episodes(SOURCE, [1, 2, 4], 25, shots=3) + [training_episode(SOURCE, [1], 0, 2, 0)]
    path = tmp_path / "sub" / "episodes.json"
    save_episodes(path, episodes, {"source": SOURCE.name, "seed": 321})
    loaded, meta = load_episodes(path)
    assert loaded == episodes and meta == {"source": "memory", "seed": 321}
    assert all(isinstance(e.supports, tuple) for e in loaded)
    assert [p.name for p in path.parent.iterdir()] == ["episodes.json"]  # no temporary file left


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not a readable JSON"),
    ('{"format": "other"}', "not a vrpsam episode list"),
    ('{"format": "vrpsam-episodes", "version": 1, "episodes": [{"index": 0}]}', "malformed episode"),
    ('{"format": "vrpsam-episodes", "version": 1, "episodes": '
     '[{"index": 0, "class_id": "1", "query": "a", "supports": ["b"]}]}', "must be integers"),
])
def test_malformed_episode_files(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError) as excinfo:
        load_episodes(path)
    assert str(path) in str(excinfo.value) and fragment in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_episode_json_is_plain():
    e = Episode(3, 7, "q", ("s1", "s2"))
    assert json.loads(json.dumps(e.to_json())) == {"index": 3, "class_id": 7, "query": "q", "supports": ["s1", "s2"]}
    assert Episode.from_json(e.to_json()) == e


def test_video_episodes_first_visible_frame_is_the_reference(davis_root):
    source = open_source(f"davis:{davis_root}")
    episodes = video_episodes(source)
    pairs = [(e.class_id, e.supports, e.query) for e in episodes]
    assert pairs == [
        (1, ("seqA/00000",), "seqA/00001"), (1, ("seqA/00000",), "seqA/00002"),
        (2, ("seqA/00001",), "seqA/00002"),  # object 2 first appears in frame 1
        (3, ("seqB/00000",), "seqB/00001"), (3, ("seqB/00000",), "seqB/00002"),
    ]
    assert [e.index for e in episodes] == list(range(5))
