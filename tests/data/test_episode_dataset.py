"""EpisodeDataset: the official transform, masks and ignore, seeded annotations, workers, replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dataset_builders import H, W, pascal_labels
from PIL import Image
from torch.utils.data import DataLoader

from vrpsam.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Episode,
    EpisodeDataset,
    collate_episodes,
    image_tensor,
    load_episodes,
    make_episodes,
    mask_tensor,
    open_source,
    save_episodes,
)
from vrpsam.errors import InputError


@pytest.fixture
def pascal(pascal_root):
    return open_source(f"pascal:{pascal_root}", split="train", min_pixels=1)


def test_image_tensor_is_pil_bilinear_then_imagenet_normalised():
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    x = image_tensor(image, 40)
    resized = np.asarray(Image.fromarray(image).resize((40, 40), Image.BILINEAR), dtype=np.float64) / 255
    expected = (resized - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_image_tensor_matches_the_model_preprocessing():
    from vrpsam.vrp.preprocess import Frame, normalised_tensor

    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    official = normalised_tensor(image, Frame.for_image((H, W), 64, "official"))[0]
    assert torch.equal(image_tensor(image, 64), official)


def test_mask_tensor_uses_the_nearest_rule():
    mask = pascal_labels()["t1"]
    out = mask_tensor(mask, 64)
    rows, cols = (np.arange(64) * H) // 64, (np.arange(64) * W) // 64  # floor(dst * in / out)
    np.testing.assert_array_equal(out.numpy(), mask[rows][:, cols])
    assert out.dtype == torch.uint8


def test_sample_tensors(pascal):
    episode = Episode(5, 1, "t1", ("t2",))
    sample = EpisodeDataset(pascal, [episode], size=64, original_masks=True)[0]
    assert sample["query_img"].shape == (3, 64, 64) and sample["support_imgs"].shape == (1, 3, 64, 64)
    labels = pascal_labels()
    expected_query = np.where(labels["t1"] == 1, 1, np.where(labels["t1"] == 255, 255, 0))
    assert sample["query_mask"].dtype == torch.long
    np.testing.assert_array_equal(sample["query_mask"].numpy(), mask_tensor(expected_query.astype(np.uint8), 64))
    assert set(sample["query_mask"].unique().tolist()) == {0, 1, 255}
    np.testing.assert_array_equal(sample["query_mask_original"].numpy(), expected_query)
    support = mask_tensor((labels["t2"] == 1).astype(np.uint8), 64).float()
    assert torch.equal(sample["support_masks"][0], support)
    assert torch.equal(sample["support_annotations"][0], support)  # annotation "mask"
    assert sample["class_id"].item() == 1 and sample["index"].item() == 5
    assert sample["query_size"].tolist() == [H, W] and sample["query_name"] == "t1"
    assert torch.equal(sample["query_img"], image_tensor(pascal.image("t1"), 64))


def test_support_ignore_becomes_background(pascal):
    sample = EpisodeDataset(pascal, [Episode(0, 1, "t2", ("t1",))], size=48)[0]
    assert set(sample["support_masks"].unique().tolist()) == {0.0, 1.0}
    expected = (mask_tensor(pascal_labels()["t1"], 48) == 1).float()
    assert torch.equal(sample["support_masks"][0], expected)


def test_box_annotation_covers_the_support_mask(pascal):
    sample = EpisodeDataset(pascal, [Episode(0, 6, "t3", ("t1",))], size=64, annotation="box")[0]
    mask, box = sample["support_masks"][0], sample["support_annotations"][0]
    rows, cols = torch.nonzero(mask, as_tuple=True)
    expected = torch.zeros_like(mask)
    expected[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = 1
    assert torch.equal(box, expected)


def test_point_annotations_are_seeded_per_episode_and_shot(pascal):
    episodes = make_episodes(pascal, [1, 6], 6, shots=1)
    a = EpisodeDataset(pascal, episodes, size=64, annotation="point")
    b = EpisodeDataset(pascal, list(reversed(episodes)), size=64, annotation="point")
    for i in range(6):
        ann = a[i]["support_annotations"]
        assert torch.equal(ann, b[5 - i]["support_annotations"])  # position in the list does not matter
        assert 0 < ann.sum() <= 20 and torch.all(ann <= a[i]["support_masks"])
    other_seed = EpisodeDataset(pascal, episodes, size=64, annotation="point", seed=1)
    assert any(not torch.equal(a[i]["support_annotations"], other_seed[i]["support_annotations"]) for i in range(6))


def test_same_batches_with_or_without_workers(pascal):
    dataset = EpisodeDataset(pascal, make_episodes(pascal, [1, 6], 8), size=32, annotation="scribble")
    batches = [list(DataLoader(dataset, batch_size=3, num_workers=w, collate_fn=collate_episodes)) for w in (0, 2)]
    for one, other in zip(*batches):
        for key, value in one.items():
            assert (torch.equal(value, other[key]) if isinstance(value, torch.Tensor) else value == other[key]), key


def test_replay_from_a_saved_list(pascal, tmp_path):
    episodes = make_episodes(pascal, [1, 6], 4, seed=9)
    save_episodes(tmp_path / "e.json", episodes, {"seed": 9})
    replayed, _ = load_episodes(tmp_path / "e.json")
    first = EpisodeDataset(pascal, episodes, size=32, annotation="point", training=True)
    second = EpisodeDataset(pascal, replayed, size=32, annotation="point", training=True)
    for i in range(4):
        assert all(torch.equal(first[i][k], second[i][k]) for k in ("query_img", "support_annotations"))


def test_collate_keeps_variable_size_masks_as_a_list(pascal):
    dataset = EpisodeDataset(pascal, make_episodes(pascal, [1, 6], 2), size=32, original_masks=True)
    batch = collate_episodes([dataset[0], dataset[1]])
    assert batch["query_img"].shape == (2, 3, 32, 32) and batch["support_annotations"].shape == (2, 1, 32, 32)
    assert isinstance(batch["query_mask_original"], list) and batch["query_mask_original"][0].shape == (H, W)
    assert isinstance(batch["query_name"], list)


def test_augment_hook_gets_a_seeded_generator(pascal):
    seen = []

    def flip(image, mask, rng):
        seen.append(rng.integers(1 << 30))
        return image[:, ::-1].copy(), mask[:, ::-1].copy()

    dataset = EpisodeDataset(pascal, [Episode(0, 1, "t1", ("t2",))], size=W, augment=flip)
    sample = dataset[0]
    dataset[0]
    assert seen[:2] == seen[2:] and seen[0] != seen[1]  # reproducible, and query and support draw differently
    original = pascal_labels()["t1"][:, ::-1]
    assert torch.equal(sample["query_mask"], mask_tensor(np.where(original == 1, 1, np.where(original == 255, 255, 0))
                                                         .astype(np.uint8), W).long())


def test_unknown_annotation_is_rejected(pascal):
    with pytest.raises(InputError):
        EpisodeDataset(pascal, [], annotation="polygon")
