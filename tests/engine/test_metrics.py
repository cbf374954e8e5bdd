"""HSNet-protocol IoU, checked against values worked out by hand."""

import numpy as np
import pytest
import torch

from vrpsam.engine.metrics import IoUAccumulator, class_bootstrap_interval, episode_areas
from vrpsam.errors import InputError


def t(rows):
    return torch.tensor(rows)


def test_ignore_pixels_leave_prediction_and_ground_truth():
    # valid pixels: (0,0) fg/fg, (0,1) gt fg / pred bg, (1,0) gt bg / pred fg; (1,1) ignored (pred fg there).
    pred = t([[1, 0], [1, 1]])
    gt = t([[1, 1], [0, 255]])
    # inter_bg 0, inter_fg 1, union_bg |{(0,1)} ∪ {(1,0)}| = 2, union_fg |{(0,0),(1,0)} ∪ {(0,0),(0,1)}| = 3
    assert episode_areas(pred, gt).tolist() == [0.0, 1.0, 2.0, 3.0]
    acc = IoUAccumulator([7])
    acc.update(pred.bool(), gt, 7)
    assert acc.miou() == pytest.approx(100 / 3)
    assert acc.fbiou() == pytest.approx((0 / 2 + 1 / 3) / 2 * 100)
    assert acc.per_class() == {7: pytest.approx(100 / 3)}


def test_empty_prediction():
    acc = IoUAccumulator([0])
    acc.update(torch.zeros(2, 2, dtype=torch.bool), t([[0, 1], [0, 0]]), 0)
    assert acc.intersection.tolist() == [[3.0], [0.0]]
    assert acc.union.tolist() == [[4.0], [1.0]]
    assert acc.miou() == 0.0
    assert acc.fbiou() == pytest.approx((3 / 4 + 0) / 2 * 100)


def test_classes_without_union_count_as_zero_like_official():
    acc = IoUAccumulator(["cat", "dog", "bird"])
    acc.update(t([[1, 1], [0, 0]]), t([[1, 0], [0, 0]]), "cat")  # fg IoU 1/2
    # 'dog' drawn once with empty ground truth and empty prediction: fg union 0 -> IoU 0 (max(union, 1)).
    acc.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), "dog")
    # 'bird' never drawn: also 0, and still part of the mean.
    assert acc.per_class() == {"cat": 50.0, "dog": 0.0, "bird": 0.0}
    assert acc.miou() == pytest.approx(50 / 3)
    # FB-IoU pools the sums: bg inter 2 + 4, bg union 3 + 4; fg inter 1, fg union 2.
    assert acc.fbiou() == pytest.approx((6 / 7 + 1 / 2) / 2 * 100)
    assert acc.episodes_per_class() == {"cat": 1, "dog": 1, "bird": 0}


def test_episodes_of_one_class_accumulate_not_average():
    acc = IoUAccumulator([3])
    acc.update(t([[1, 0], [0, 0]]), t([[1, 0], [0, 0]]), 3)  # fg 1/1
    acc.update(t([[0, 0], [0, 0]]), t([[0, 1], [1, 1]]), 3)  # fg 0/3
    # per-episode mean would be 50; the official protocol sums: (1 + 0) / (1 + 3)
    assert acc.miou() == pytest.approx(25.0)
    assert acc.episodes == 2


def test_state_merge_and_load_equal_one_accumulator():
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(10):
        gt = rng.integers(0, 2, size=(5, 6))
        gt[rng.random((5, 6)) < 0.1] = 255
        episodes.append((rng.random((5, 6)) < 0.5, gt, i % 3))
    whole, first, second = (IoUAccumulator([0, 1, 2]) for _ in range(3))
    for i, (pred, gt, c) in enumerate(episodes):
        whole.update(pred, gt, c)  # numpy inputs are accepted too
        (first if i % 2 else second).update(pred, gt, c)
    merged = IoUAccumulator([0, 1, 2])
    merged.merge(first)
    merged.merge(second.state())
    assert torch.equal(merged.state(), whole.state())
    reloaded = IoUAccumulator([0, 1, 2])
    reloaded.load_state(first.state() + second.state())
    assert reloaded.miou() == whole.miou() and reloaded.fbiou() == whole.fbiou()
    assert whole.state().dtype == torch.float64 and whole.state().shape == (5, 3)


def test_bad_inputs_raise_input_error():
    acc = IoUAccumulator([1])
    with pytest.raises(InputError, match="class 2"):
        acc.update(torch.zeros(2, 2), torch.zeros(2, 2), 2)
    with pytest.raises(InputError, match="differ in size"):
        acc.update(torch.zeros(2, 2), torch.zeros(2, 3), 1)
    with pytest.raises(InputError, match="ground truth"):
        acc.update(torch.zeros(2, 2), t([[0, 2], [0, 0]]), 1)
    with pytest.raises(InputError, match="binary"):
        acc.update(t([[0, 3], [0, 0]]), torch.zeros(2, 2), 1)
    with pytest.raises(InputError, match="unique"):
        IoUAccumulator([1, 1])
    with pytest.raises(InputError, match="different classes"):
        acc.merge(IoUAccumulator([2]))


def test_bootstrap_interval_of_a_constant_difference_is_that_difference():
    first = [10.0, 40.0, 70.0, 25.0]
    assert class_bootstrap_interval(first, first) == (0.0, 0.0)
    low, high = class_bootstrap_interval([x + 3 for x in first], first)
    assert low == pytest.approx(3.0) and high == pytest.approx(3.0)


def test_bootstrap_interval_by_hand_for_two_classes():
    # Differences 0 and 10: a resample's mean is 0, 5 or 10 with probabilities 1/4, 1/2, 1/4.
    assert class_bootstrap_interval([50.0, 30.0], [50.0, 20.0]) == (0.0, 10.0)
    assert class_bootstrap_interval([50.0, 30.0], [50.0, 20.0], level=0.4) == (5.0, 5.0)


def test_bootstrap_interval_is_seeded_and_brackets_the_difference():
    rng = np.random.default_rng(1)
    first, second = rng.uniform(0, 60, 17), rng.uniform(0, 60, 17)
    low, high = class_bootstrap_interval(first, second)
    assert low < (first - second).mean() < high
    assert class_bootstrap_interval(first, second) == (low, high)
    assert class_bootstrap_interval(first, second, seed=2) != (low, high)


@pytest.mark.parametrize("first, second, options", [
    ([1.0, 2.0], [1.0], {}), ([1.0], [1.0], {}), ([1.0, 2.0], [1.0, 2.0], {"level": 1.0}),
    ([1.0, 2.0], [1.0, 2.0], {"resamples": 0}),
])
def test_bootstrap_interval_rejects_bad_input(first, second, options):
    with pytest.raises(InputError, match="bootstrap"):
        class_bootstrap_interval(first, second, **options)
