"""The evaluation engine: k-shot forward, protocol plumbing checked with oracle models, determinism, tables."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vrpsam.data import SegmentationSource, image_tensor, make_episodes, mask_tensor
from vrpsam.engine import distributed
from vrpsam.engine import evaluate as evaluate_module
from vrpsam.engine.calibrate import calibrate_prior
from vrpsam.engine.evaluate import EvalResult, episode_logits, evaluate, evaluate_variants, markdown_table
from vrpsam.errors import InputError
from vrpsam.vrp.build import build_model

NAMES = {1: "ant", 2: "bee", 3: "cat", 4: "dog", 5: "eel", 6: "fox", 7: "gnu", 8: "hen"}


class ArraySource(SegmentationSource):
    """Images whose red channel is 255 exactly on their one object (plus some ignore pixels), in memory."""

    def __init__(self, size=(32, 32), per_class=3, seed=0):
        rng = np.random.default_rng(seed)
        self.labels, self.images = {}, {}
        h, w = size
        for c in NAMES:
            for j in range(per_class):
                label = np.zeros(size, np.uint8)
                top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
                label[top : top + h // 3, left : left + w // 3] = c
                label[-2:, :] = 255  # an ignore band, bright in the image too: must not count
                image = rng.integers(0, 100, size=(h, w, 3), dtype=np.uint8)
                image[..., 0][label > 0] = 255
                self.labels[f"{c}-{j}"], self.images[f"{c}-{j}"] = label, image

    name = "arrays"

    @property
    def classes(self):
        return dict(NAMES)

    def items(self, class_id):
        return sorted(k for k, label in self.labels.items() if (label == class_id).any())

    def image_file(self, item):
        return Path(f"{item}.png")

    def mask_file(self, item):
        return Path(f"{item}-mask.png")

    def image(self, item):
        return self.images[item]

    def mask(self, item, class_id):
        label = self.labels[item]
        return np.where(label == 255, 255, label == class_id).astype(np.uint8)


class StubModel(nn.Module):
    """Just what :func:`evaluate` needs from a model besides :func:`episode_logits` (patched in tests)."""

    def __init__(self, input_size=32):
        super().__init__()
        self.input_size, self.preprocessing = input_size, "official"


def red_oracle(model, query, supports, annotations):
    """Logits > 0 exactly where the query's red channel is 255 (its object and its ignore band)."""
    red = query[:, :1] * 0.229 + 0.485
    return (red > 0.99).float() * 2 - 1


def never(model, query, supports, annotations):
    return -torch.ones(query.shape[0], 1, *query.shape[-2:])


def test_oracle_scores_100_and_ignore_band_is_excluded(monkeypatch):
    monkeypatch.setattr(evaluate_module, "episode_logits", red_oracle)
    result = evaluate(StubModel(32), ArraySource(), episodes=40, progress=False)
    assert all(n > 0 for n in result.episodes_per_class.values())  # every class drawn with this seed
    assert result.miou == pytest.approx(100.0) and result.fbiou == pytest.approx(100.0)
    assert result.per_class == {name: pytest.approx(100.0) for name in NAMES.values()}
    assert result.episodes == 40 and sum(result.episodes_per_class.values()) == 40


def test_empty_predictions_give_hand_computed_fbiou_at_both_resolutions(monkeypatch):
    monkeypatch.setattr(evaluate_module, "episode_logits", never)
    source = ArraySource(size=(40, 48))
    episodes = make_episodes(source, list(NAMES), 10)

    def expected(masks):
        background = sum(int((m == 0).sum()) for m in masks)
        valid = sum(int((m != 255).sum()) for m in masks)
        return background / valid / 2 * 100  # foreground IoU is 0

    originals = [source.mask(e.query, e.class_id) for e in episodes]
    resized = [mask_tensor(m, 32).numpy() for m in originals]
    for resolution, masks in (("input", resized), ("original", originals)):
        result = evaluate(StubModel(32), source, episode_list=episodes, resolution=resolution, progress=False)
        assert result.miou == 0.0
        assert result.fbiou == pytest.approx(expected(masks))


def test_fold_selects_test_classes_and_unseen_classes_count_zero(monkeypatch):
    monkeypatch.setattr(evaluate_module, "episode_logits", red_oracle)
    result = evaluate(StubModel(32), ArraySource(), fold=1, episodes=3, seed=5, progress=False)
    assert result.settings["classes"] == [3, 4]  # block rule: 8 classes, 4 folds
    assert set(result.per_class) == {"cat", "dog"}
    drawn = [name for name, n in result.episodes_per_class.items() if n]
    # mean over both fold classes, a class without episodes counting 0 (official max(union, 1))
    assert result.miou == pytest.approx(100.0 * len(drawn) / 2)


def test_variants_score_each_episode_once_per_variant_like_evaluate():
    def oracle_and_never(model, query, supports, annotations):
        return {"oracle": red_oracle(model, query, supports, annotations), "never": never(model, query, supports, annotations)}

    results = evaluate_variants(StubModel(32), ArraySource(), oracle_and_never, ["oracle", "never"], episodes=40, progress=False)
    assert results["oracle"].miou == pytest.approx(100.0) and results["never"].miou == 0.0
    assert results["oracle"].episodes == results["never"].episodes == 40
    with pytest.raises(RuntimeError, match=r"predict returned variants \['never', 'oracle'\], expected \['oracle'\]"):
        evaluate_variants(StubModel(32), ArraySource(), oracle_and_never, ["oracle"], episodes=2, progress=False)


def test_calibration_scores_each_setting_as_evaluating_it_alone():
    # One encoding per episode decoded under every prior setting == a full forward per setting (random lite).
    from vrpsam.vrp.build import build_lite

    model = build_lite(None, backbone_checkpoint=None, seed=1).eval()
    source, options = ArraySource(size=(48, 48), per_class=2), dict(episodes=2, seed=4, classes=[1, 2], progress=False)
    chosen = calibrate_prior(model, source, annotations=["box"], multipliers=(1.0, 4.0), offsets=(-2.0,),
                             self_supports=(0.0, 0.5), **options)
    trained_scale, trained_bias = chosen.trained_scale, chosen.trained_bias
    measured = chosen.val_miou_by_annotation["box"]
    assert len(set(measured.values())) > 1  # the settings do differ
    for multiplier, offset, self_support in [(1.0, -2.0, 0.0), (4.0, -2.0, 0.5)]:
        model.prior.set_weights(trained_scale * multiplier, trained_bias + offset, self_support)
        alone = evaluate(model, source, annotation="box", **options).miou
        assert alone == pytest.approx(measured[f"x{multiplier:g}{offset:+g}s{self_support:g}"], abs=1e-4)


def test_replayed_list_must_match_classes_and_shots(monkeypatch):
    monkeypatch.setattr(evaluate_module, "episode_logits", never)
    source = ArraySource()
    episodes = make_episodes(source, [1, 2], 4, shots=2)
    with pytest.raises(InputError, match="supports"):
        evaluate(StubModel(32), source, classes=[1, 2], episode_list=episodes, shots=1, progress=False)
    with pytest.raises(InputError, match="not among"):
        evaluate(StubModel(32), source, classes=[1], episode_list=episodes, shots=2, progress=False)
    with pytest.raises(InputError, match="resolution"):
        evaluate(StubModel(32), source, resolution="full", progress=False)


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny-random")


def test_one_shot_logits_equal_the_model_forward(tiny):
    source = ArraySource(size=(40, 48))
    s = tiny.input_size
    query = image_tensor(source.image("1-0"), s)[None]
    support = image_tensor(source.image("1-1"), s)[None, None]
    annotation = (mask_tensor(source.mask("1-1", 1), s) == 1).float()[None, None]
    with torch.no_grad():
        ours = episode_logits(tiny, query, support, annotation)
        direct = tiny(query, support[:, 0], annotation[:, 0])
    assert ours.shape == (1, 1, s, s)
    assert torch.equal(ours, direct)


def test_k_shot_concatenates_prompts_order_free(tiny):
    source = ArraySource(size=(40, 48))
    s = tiny.input_size
    query = image_tensor(source.image("2-0"), s)[None]
    supports = torch.stack([image_tensor(source.image(i), s) for i in ("2-1", "2-2")])[None]
    annotations = torch.stack([(mask_tensor(source.mask(i, 2), s) == 1).float() for i in ("2-1", "2-2")])[None]
    with torch.no_grad():
        two = episode_logits(tiny, query, supports, annotations)
        swapped = episode_logits(tiny, query, supports.flip(1), annotations.flip(1))
        one = episode_logits(tiny, query, supports[:, :1], annotations[:, :1])
    # SAM's decoder treats the sparse tokens as a set, so the shot order cannot matter...
    torch.testing.assert_close(two, swapped, atol=1e-4, rtol=1e-4)
    # ...but the second shot's tokens do
    assert (two - one).abs().max() > 1e-3


def test_workers_do_not_change_the_metrics(tiny):
    source = ArraySource(size=(40, 48), per_class=2)
    runs = [evaluate(tiny, source, episodes=6, workers=w, progress=False) for w in (0, 2)]
    assert runs[0].to_json() == runs[1].to_json()
    assert runs[0].episodes == 6 and runs[0].settings["input_size"] == tiny.input_size


def test_json_round_trip(tmp_path):
    result = EvalResult(miou=50.0, fbiou=60.0, per_class={"cat": 50.0}, episodes=2, settings={"fold": 0},
                        episodes_per_class={"cat": 2})
    path = result.write_json(tmp_path / "r.json")
    assert EvalResult.from_json(json.loads(path.read_text())) == result


def test_markdown_table_has_folds_as_columns_and_mean_last():
    def result(fold, miou, fbiou, annotation="mask"):
        settings = {"model": "m", "dataset": "coco", "annotation": annotation, "shots": 1, "resolution": "input", "fold": fold}
        return EvalResult(miou=miou, fbiou=fbiou, per_class={}, episodes=1000, settings=settings)

    table = markdown_table([result(1, 20.0, 60.0), result(0, 10.0, 50.0), result(0, 5.0, 40.0, "box")])
    lines = table.strip().split("\n")
    assert lines[0] == "| Model | Dataset | Annotation | Shots | Resolution | Metric | Fold 0 | Fold 1 | Mean |"
    assert lines[2] == "| m | coco | mask | 1 | input | mIoU | 10.0 | 20.0 | 15.0 |"
    assert lines[3] == "| m | coco | mask | 1 | input | FB-IoU | 50.0 | 60.0 | 55.0 |"
    assert lines[4] == "| m | coco | box | 1 | input | mIoU | 5.0 | – | 5.0 |"
    assert len(lines) == 6


def test_distributed_helpers_are_no_ops_in_one_process():
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.init_from_env("cpu") is False  # no torchrun variables under pytest
    x = torch.arange(3.0)
    assert distributed.all_reduce_sum(x) is x and x.tolist() == [0.0, 1.0, 2.0]
    distributed.barrier()
    distributed.cleanup()
    assert distributed.process_device("cpu") == torch.device("cpu")
