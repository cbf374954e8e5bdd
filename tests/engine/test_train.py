"""Episodic training: it learns, it resumes exactly, frozen parts get no gradients, runs are self-describing.

Every run here is the ``tiny`` preset: a seeded random 2-block SAM at 128², the real ImageNet
MobileNetV2 backbone (converted from the shared TFLite file) and 8 queries, on real COCO images and
polygons (``coco128-seg``, YOLO format), one CPU thread.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from vrpsam.cli.main import main
from vrpsam.cli.train import add_arguments, config_from_args
from vrpsam.data.base import IGNORE
from vrpsam.data.folds import split_fold
from vrpsam.data.pseudo import FIRST_PSEUDO_ID
from vrpsam.engine.checkpointing import load_training_state, pair_for
from vrpsam.engine.calibrate import PRIOR_BIAS_OFFSETS, PRIOR_SCALE_MULTIPLIERS, SELF_SUPPORT_WEIGHTS, setting_name
from vrpsam.engine.config import PRESETS, TrainConfig
from vrpsam.engine.logging import read_log
from vrpsam.engine.losses import segmentation_loss
from vrpsam.engine.train import Trainer, build_training_model, frozen_parameters, open_training_data, rank_batches, train
from vrpsam.errors import CheckpointError, InputError
from vrpsam.vrp.build import BUILD_KEY, LITE_BACKGROUND_KEY, build_model
from vrpsam.vrp.checkpoint import load_vrp_checkpoint
from vrpsam.vrp.proto import INITIAL_SCALE


@pytest.fixture
def tiny(shared, monkeypatch, tmp_path):
    """``tiny(**fields)`` -> a TrainConfig of the tiny preset on coco128-seg, writing under tmp_path."""
    monkeypatch.setenv("VRPSAM_WEIGHTS", str(shared("assets/weights/mobilenet_v2")))
    dataset = f"yolo:{shared('assets/data/coco128-seg')}"
    torch.set_num_threads(1)

    def make(**fields):
        settings = dict(dataset=dataset, batch_size=2, epochs=2, iters_per_epoch=4, num_queries=8, validate_every=0,
                        out_dir=str(tmp_path / "run"), tensorboard=False)
        return TrainConfig.with_preset("tiny", **{**settings, **fields})

    return make


def mean(values):
    return sum(values) / len(values)


def test_loss_goes_down_on_a_fixed_set_of_episodes(tiny):
    # The same two episodes every step: the VRP encoder must learn to prompt the frozen SAM for them.
    result = train(tiny(epochs=1, iters_per_epoch=1000, max_iters=20, overfit_episodes=2, lr=1e-3), progress=False)
    losses = [step.loss for step in result.history]
    assert len(losses) == 20
    first, last = mean(losses[:4]), mean(losses[-4:])
    assert last < first - 0.05, f"loss {first:.4f} -> {last:.4f}"


def test_resume_continues_exactly(tiny, tmp_path):
    # 7 steps straight vs 3 steps, stop, resume for 4: crosses an epoch end (4 iterations per epoch).
    straight = train(tiny(out_dir=str(tmp_path / "a"), max_iters=7), progress=False)
    first = train(tiny(out_dir=str(tmp_path / "b"), max_iters=3), progress=False)
    assert first.iteration == 3 and first.last.exists() and pair_for(first.last).state.exists()
    second = train(tiny(out_dir=str(tmp_path / "b"), max_iters=7), resume=first.last, progress=False)

    assert [s.iteration for s in second.history] == [4, 5, 6, 7]
    resumed = [s.loss for s in first.history + second.history]
    expected = [s.loss for s in straight.history]
    assert resumed == pytest.approx(expected, abs=1e-6)
    assert [s.lr for s in first.history + second.history] == pytest.approx([s.lr for s in straight.history], rel=1e-12)
    a, _ = load_vrp_checkpoint(straight.last)
    b, _ = load_vrp_checkpoint(second.last)
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    # The log describes one uninterrupted run: iterations 1..7 once each.
    rows = read_log(tmp_path / "b" / "log.csv")
    assert [int(r["iteration"]) for r in rows if r["kind"] == "train"] == list(range(1, 8))


def test_resume_refuses_changed_settings(tiny, tmp_path):
    first = train(tiny(max_iters=1), progress=False)
    with pytest.raises(CheckpointError, match="lr"):
        train(tiny(max_iters=2, lr=3e-4), resume=first.last, progress=False)

    # A run saved before a setting existed resumes when this run keeps that setting's default.
    state_path = pair_for(first.last).state
    state = torch.load(state_path, weights_only=True)
    del state["config"]["pseudo_classes"]
    torch.save(state, state_path)
    assert train(tiny(max_iters=2), resume=first.last, progress=False).iteration == 2
    with pytest.raises(CheckpointError, match="pseudo_classes"):
        train(tiny(max_iters=3, pseudo_classes=2), resume=first.last, progress=False)


def test_frozen_parameters_get_no_gradient(tiny):
    trainer = Trainer(tiny(), progress=False)
    try:
        trainer.step(next(trainer.batches(0)))
        frozen = frozen_parameters(trainer.model)
        assert len(frozen) > 100  # SAM and the backbone
        assert all(not p.requires_grad and p.grad is None for p in frozen)
        trainable = trainer.model.encoder.trainable_parameters()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
        assert {id(p) for g in trainer.optimizer.param_groups for p in g["params"]} == {id(p) for p in trainable}
    finally:
        trainer.close()


def test_ranks_draw_disjoint_episodes_whose_union_is_the_global_batch():
    single = rank_batches(iters=3, start=0, batch_size=4, rank=0, world=1)
    ranks = [rank_batches(iters=3, start=0, batch_size=2, rank=r, world=2) for r in range(2)]
    for i in range(3):
        assert sorted(ranks[0][i] + ranks[1][i]) == single[i]
        assert not set(ranks[0][i]) & set(ranks[1][i])
    assert rank_batches(iters=3, start=2, batch_size=2, rank=1, world=2) == [ranks[1][2]]


def test_checkpoints_validation_and_eval_cli(tiny, tmp_path, capsys):
    config = tiny(epochs=1, iters_per_epoch=2, validate_every=1, val_episodes=4)
    result = train(config, progress=False)
    assert result.best is not None and result.best.exists() and len(result.validations) == 1
    assert result.best_miou == pytest.approx(result.validations[0].miou)

    _, metadata = load_vrp_checkpoint(result.last)
    assert metadata["fold"] == 0 and metadata["annotation"] == "mask" and metadata["iteration"] == 2
    assert metadata["training_config"] == config.to_dict()
    assert metadata["metrics"]["miou"] == pytest.approx(result.best_miou)
    assert metadata["code_version"]["vrpsam"]
    # What a CPU run's exact numbers depend on besides the code and the seed.
    assert metadata["code_version"]["torch"] == torch.__version__ and metadata["code_version"]["numpy"] == np.__version__
    assert metadata["code_version"]["torch_threads"] == torch.get_num_threads() and metadata["code_version"]["pillow"]
    assert metadata["code_version"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert TrainConfig.from_json(tmp_path / "run" / "config.json") == config
    state = load_training_state(result.last)
    assert state["iteration"] == 2 and set(state["rng"]) >= {"python", "numpy", "torch"}
    rows = read_log(tmp_path / "run" / "log.csv")
    assert [r["kind"] for r in rows] == ["train", "train", "val"]

    # The checkpoint records how to rebuild its model: build_model gives the trained weights back.
    model = build_model(result.best)
    assert model.input_size == 128 and model.encoder.num_queries == 8
    assert main(["eval", "--model", str(result.best), "--dataset", config.dataset, "--fold", "0",
                 "--episodes", "4", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| mIoU |" in table and "Fold 0" in table


def test_train_cli_runs_and_reports_bad_input_in_one_line(tiny, tmp_path, capsys):
    dataset = tiny().dataset
    out = tmp_path / "cli"
    args = ["train", "--model-preset", "tiny", "--dataset", dataset, "--epochs", "1", "--iters-per-epoch", "1",
            "--batch-size", "1", "--num-queries", "8", "--validate-every", "0", "--out", str(out), "--no-progress",
            "--no-tensorboard"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"last checkpoint: {out / 'last.safetensors'}" in printed
    assert json.loads((out / "config.json").read_text())["batch_size"] == 1
    assert json.loads((out / "config.json").read_text())["ignore_held_out"] is False

    # A moved run resumes where it now is, not in the folder it was made in.
    moved = out.rename(tmp_path / "moved")
    assert main(["train", "--resume", str(moved / "last.safetensors"), "--no-progress"]) == 0
    assert f"last checkpoint: {moved / 'last.safetensors'}" in capsys.readouterr().out
    assert not out.exists()

    assert main(["train", "--model-preset", "tiny", "--dataset", dataset, "--batch-size", "0", "--out", str(out)]) == 2
    assert main(["train", "--dataset", "nosuchkind:/x", "--out", str(out)]) == 2
    assert main(["train", "--dataset", dataset]) == 2  # no --out
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "batch_size" in errors[0] and "--out" in errors[2]


def test_config_round_trip_and_validation(tmp_path):
    config = TrainConfig(dataset="yolo:/data", fold=2, annotation="scribble", batch_size=4, embedding_cache="/tmp/c",
                         backbone_checkpoint="resnet50_v2.pth")
    assert TrainConfig.from_json(config.to_json()) == config
    config.save(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == config
    assert config.global_batch(2) == 8
    with pytest.raises(InputError, match="surprise"):
        TrainConfig.from_dict({**config.to_dict(), "surprise": 1})
    with pytest.raises(InputError, match="annotation"):
        TrainConfig(dataset="yolo:/data", annotation="lasso", backbone_checkpoint="resnet50_v2.pth")
    with pytest.raises(InputError, match="dataset"):
        TrainConfig(dataset="/data")
    with pytest.raises(InputError, match="amp"):
        TrainConfig(dataset="yolo:/data", amp=True, device="cpu", backbone_checkpoint="resnet50_v2.pth")
    with pytest.raises(InputError, match="preset"):
        TrainConfig.with_preset("huge", dataset="yolo:/data")
    with pytest.raises(InputError, match="calibrate_prior"):
        TrainConfig.with_preset("tiny", dataset="yolo:/data", calibrate_prior=True)
    with pytest.raises(InputError, match="pseudo_classes"):
        TrainConfig(dataset="yolo:/data", pseudo_classes=-1, backbone_checkpoint="resnet50_v2.pth")
    with pytest.raises(InputError, match="prior_self_support"):
        TrainConfig.with_preset("lite", dataset="yolo:/data", prior_self_support=1.5)
    with pytest.raises(InputError, match="prior_self_support: only the lite model"):
        TrainConfig.with_preset("tiny", dataset="yolo:/data", prior_self_support=0.5)
    with pytest.raises(InputError, match="prior_background_count: expected a positive integer"):
        TrainConfig.with_preset("lite", dataset="yolo:/data", prior_background_count=0)
    with pytest.raises(InputError, match="prior_background_count: only the lite model"):
        TrainConfig.with_preset("tiny", dataset="yolo:/data", prior_background_count=4)
    with pytest.raises(InputError, match="prior_scale: expected a positive number"):
        TrainConfig.with_preset("lite", dataset="yolo:/data", prior_scale=0.0)
    with pytest.raises(InputError, match="prior_scale: only the lite model"):
        TrainConfig.with_preset("tiny", dataset="yolo:/data", prior_scale=40.0)
    with pytest.raises(InputError, match="feature_dropout: expected a probability"):
        TrainConfig.with_preset("lite", dataset="yolo:/data", feature_dropout=1.0)
    with pytest.raises(InputError, match="feature_dropout: only the lite model"):
        TrainConfig.with_preset("tiny", dataset="yolo:/data", feature_dropout=0.1)
    with pytest.raises(InputError, match="zoom: expected a fraction"):
        TrainConfig.with_preset("lite", dataset="yolo:/data", augment=True, zoom=2.0)
    with pytest.raises(InputError, match="add --augment"):
        TrainConfig.with_preset("lite", dataset="yolo:/data", zoom=0.5)


def test_lite_prior_settings_are_set_for_training(tiny):
    config = TrainConfig.with_preset("lite", **{**tiny().to_dict(), **PRESETS["lite"], "prior_self_support": 0.5,
                                                "prior_background_count": 4, "prior_scale": 40.0})
    prior = build_training_model(config).prior
    assert prior.self_support.item() == 0.5 and prior.background_count == 4
    assert prior.scale.item() == 40.0 and prior.scale.requires_grad
    default = build_training_model(TrainConfig.with_preset("lite", **{**tiny().to_dict(), **PRESETS["lite"]}))
    assert default.prior.scale.item() == INITIAL_SCALE
    assert isinstance(default.sam.image_encoder.neck.drop, torch.nn.Identity)  # draws no random numbers


def test_lite_feature_dropout_reaches_the_neck(tiny):
    config = TrainConfig.with_preset("lite", **{**tiny().to_dict(), **PRESETS["lite"], "feature_dropout": 0.1})
    neck = build_training_model(config).sam.image_encoder.neck
    assert isinstance(neck.drop, torch.nn.Dropout2d) and neck.drop.p == 0.1


def test_pseudo_classes_join_the_training_classes_only(tiny):
    trainer = Trainer(tiny(pseudo_classes=3, max_iters=2), progress=False)
    try:
        train_classes, validation = trainer.data.train.classes, trainer.data.validation_classes
        pseudo = [c for c, name in train_classes.items() if name.startswith("pseudo-")]
        assert pseudo == [FIRST_PSEUDO_ID, FIRST_PSEUDO_ID + 1, FIRST_PSEUDO_ID + 2]
        assert not set(pseudo) & set(validation)
        assert all(trainer.data.train.items(c) for c in pseudo)
        result = trainer.run()
    finally:
        trainer.close()
    assert result.iteration == 2 and result.last.exists()


def test_ignore_held_out_leaves_held_out_pixels_out_of_training(tiny, monkeypatch):
    # Every class outside the training view (validation and test classes) reads as ignore in the training
    # masks, and the loss is told to leave those pixels out.
    config = tiny(ignore_held_out=True, max_iters=1)
    trainer = Trainer(config, progress=False)
    try:
        view, base = trainer.data.train, trainer.data.train.base
        held = [c for c in base.classes if c not in view.classes]
        assert set(trainer.data.validation_classes) <= set(held)
        person = 1  # a held-out (test) class of fold 0, in most coco128 photos
        assert person in held
        item, class_id = next((i, c) for c in view.classes for i in view.items(c) if i in base.items(person))
        own, marked = base.mask(item, class_id), view.mask(item, class_id)
        theirs = np.any([base.mask(item, c) == 1 for c in held if item in base.items(c)], axis=0)
        assert ((marked == IGNORE) == (theirs & (own != 1))).all() and (base.mask(item, person) == 1).any()
        assert ((marked == 1) == (own == 1)).all()
        calls = []
        monkeypatch.setattr("vrpsam.engine.train.segmentation_loss",
                            lambda *args, **kwargs: calls.append(kwargs) or segmentation_loss(*args, **kwargs))
        result = trainer.run()
    finally:
        trainer.close()
    assert result.iteration == 1 and calls == [{"ignore": True}]


def test_lite_prior_weight_is_chosen_on_validation_classes_once(tiny, tmp_path):
    # Two real lite steps (512², one thread), then the prior's scale and bias are chosen by validation mIoU;
    # the self-support weight trained with (0.75) is tried besides the calibration's own.
    config = TrainConfig.with_preset("lite", **{**tiny().to_dict(), **PRESETS["lite"], "epochs": 1, "iters_per_epoch": 2,
                                                "batch_size": 1, "val_episodes": 2, "calibrate_prior": True,
                                                "calibration_episodes": 3, "prior_self_support": 0.75})
    result = train(config, progress=False)
    chosen = result.calibration
    assert chosen is not None and chosen["annotations"] == ["mask"] and chosen["episodes"] == 3
    settings = [setting_name(m, b, s) for s in (*SELF_SUPPORT_WEIGHTS, 0.75) for m in PRIOR_SCALE_MULTIPLIERS for b in PRIOR_BIAS_OFFSETS]
    assert list(chosen["val_miou"]) == settings
    assert chosen["val_miou_by_annotation"] == {"mask": chosen["val_miou"]}  # one type: its mIoU is the mean
    best = setting_name(chosen["multiplier"], chosen["bias_offset"], chosen["self_support"])
    assert chosen["val_miou"][best] == max(chosen["val_miou"].values())
    assert chosen["scale"] == pytest.approx(chosen["trained_scale"] * chosen["multiplier"])
    assert chosen["bias"] == pytest.approx(chosen["trained_bias"] + chosen["bias_offset"])

    weights, metadata = load_vrp_checkpoint(result.last)
    assert float(weights["prior.scale"]) == pytest.approx(chosen["scale"])
    assert float(weights["prior.bias"]) == pytest.approx(chosen["bias"])
    assert float(weights["prior.self_support"]) == chosen["self_support"]
    assert metadata["prior_calibration"] == chosen
    assert metadata[BUILD_KEY][LITE_BACKGROUND_KEY] == 1  # what build_lite reads back
    assert metadata["metrics"]["prior_scale"] == pytest.approx(chosen["scale"])
    rows = read_log(tmp_path / "run" / "log.csv")
    assert [r["kind"] for r in rows][2:] == [f"prior_{name}" for name in settings]

    # Resuming the finished run does not calibrate again (that would multiply the multiplier).
    again = train(config, resume=result.last, progress=False)
    assert again.calibration == chosen
    assert float(load_vrp_checkpoint(again.last)[0]["prior.scale"]) == pytest.approx(chosen["scale"])


def test_training_on_every_class_sets_the_given_prior_setting_without_validating(tiny, tmp_path, monkeypatch):
    # The final run of a recipe: the held-out run's validation classes train too, and the prior takes the
    # setting that run chose (here x2-2s0.5) instead of a search, which would need validation classes.
    config = TrainConfig.with_preset("lite", **{**tiny().to_dict(), **PRESETS["lite"], "epochs": 1, "iters_per_epoch": 1,
                                                "batch_size": 1, "select_on": "none", "prior_setting": "x2-2s0.5",
                                                "ignore_held_out": True})
    held_out_run = TrainConfig.from_dict({**config.to_dict(), "select_on": "val", "prior_setting": None})
    monkeypatch.setattr("vrpsam.engine.train.calibrate_prior", lambda *a, **k: pytest.fail("searched the prior"))
    trainer = Trainer(config, progress=False)
    try:
        data, validation_run = trainer.data, Trainer(held_out_run, progress=False)
        try:
            held = validation_run.data
            assert set(data.train.classes) == set(held.train.classes) | set(held.validation_classes)
            # a former validation class is now taught, not ignored; the test fold's classes (persons) stay ignored
            view, base = data.train, data.train.base
            test, former, person = split_fold(base, 0).test, held.validation_classes[0], 1
            assert sorted(c for c in base.classes if c not in view.classes) == sorted(test)
            item, class_id = next((i, c) for c in view.classes if c != former for i in view.items(c)
                                  if i in base.items(former) and not any(i in base.items(t) for t in test))
            assert not (view.mask(item, class_id)[base.mask(item, former) == 1] == IGNORE).any()
            item, class_id = next((i, c) for c in view.classes for i in view.items(c) if i in base.items(person))
            assert (view.mask(item, class_id)[(base.mask(item, person) == 1) & (base.mask(item, class_id) != 1)] == IGNORE).all()
        finally:
            validation_run.close()
        assert data.validation is None and data.validation_classes == ()
        result = trainer.run()
    finally:
        trainer.close()
    chosen = result.calibration
    assert (chosen["multiplier"], chosen["bias_offset"], chosen["self_support"]) == (2.0, -2.0, 0.5)
    assert chosen["val_miou"] == {} and chosen["episodes"] == 0 and result.validations == []
    weights, metadata = load_vrp_checkpoint(result.last)
    assert float(weights["prior.scale"]) == pytest.approx(2 * chosen["trained_scale"])
    assert float(weights["prior.bias"]) == pytest.approx(chosen["trained_bias"] - 2)
    assert float(weights["prior.self_support"]) == 0.5 and metadata["prior_calibration"] == chosen
    assert [r["kind"] for r in read_log(tmp_path / "run" / "log.csv")] == ["train"]


def test_validation_seed_draws_the_split_and_its_episodes_apart_from_the_training_seed(tiny):
    split_of_1 = open_training_data(tiny(seed=1)).validation_classes
    assert open_training_data(tiny(seed=2)).validation_classes != split_of_1
    trainer = Trainer(tiny(seed=2, validation_seed=1), progress=False)
    try:
        assert trainer.data.validation_classes == split_of_1
        assert trainer._evaluation_options()["seed"] == 1  # the same validation episodes as a seed-1 run
    finally:
        trainer.close()
    with pytest.raises(InputError, match="validation_seed: expected a non-negative integer, got -1"):
        tiny(validation_seed=-1)


def test_official_recipe_never_trains_on_random_weights(tmp_path):
    config = TrainConfig(dataset="yolo:/data", backbone_checkpoint="resnet50_v2.pth")
    assert config.sam_checkpoint == "official"  # SAM's official file, found through the registry
    with pytest.raises(InputError, match="backbone_checkpoint: resnet50_v2 needs its weights"):
        TrainConfig(dataset="yolo:/data")


def test_ignore_held_out_and_calibration_episodes_options_set_the_config():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--model-preset", "tiny", "--dataset", "yolo:/data", "--out", "run"]
    assert config_from_args(parser.parse_args(base + ["--ignore-held-out"])).ignore_held_out is True
    assert config_from_args(parser.parse_args(base)).ignore_held_out is False
    assert config_from_args(parser.parse_args(base + ["--calibration-episodes", "200"])).calibration_episodes == 200
    assert config_from_args(parser.parse_args(base)).calibration_episodes == 0
    with pytest.raises(InputError, match="calibration_episodes: expected a non-negative integer, got -1"):
        config_from_args(parser.parse_args(base + ["--calibration-episodes", "-1"]))


def test_train_on_all_classes_and_prior_setting_options_set_the_config():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--model-preset", "lite", "--dataset", "yolo:/data", "--out", "run"]
    assert config_from_args(parser.parse_args(base + ["--validation-seed", "7"])).split_seed() == 7
    assert config_from_args(parser.parse_args(base + ["--seed", "5"])).split_seed() == 5
    config = config_from_args(parser.parse_args(base + ["--train-on-all-classes", "--prior-setting", "x2-2s0.5"]))
    assert (config.select_on, config.validate_every, config.prior_setting) == ("none", 0, "x2-2s0.5")
    assert config_from_args(parser.parse_args(base)).prior_setting is None
    with pytest.raises(InputError, match="select_on: 'none' holds no classes out"):
        config_from_args(parser.parse_args(base + ["--train-on-all-classes", "--validate-every", "3"]))
    with pytest.raises(InputError, match="select_on: 'none' holds no classes out"):
        config_from_args(parser.parse_args(base + ["--train-on-all-classes", "--calibrate-prior"]))
    with pytest.raises(InputError, match="--train-on-all-classes: give either it or --select-on-test"):
        config_from_args(parser.parse_args(base + ["--train-on-all-classes", "--select-on-test"]))
    with pytest.raises(InputError, match=r"prior_setting: expected xSCALE±BIASsWEIGHT .* got 'x2s0.5'"):
        config_from_args(parser.parse_args(base + ["--prior-setting", "x2s0.5"]))
    with pytest.raises(InputError, match="prior_setting: only for the lite model, and not with calibrate_prior"):
        config_from_args(parser.parse_args(base + ["--prior-setting", "x2-2s0.5", "--calibrate-prior"]))
    tiny = ["--model-preset", "tiny", "--dataset", "yolo:/data", "--out", "run"]
    with pytest.raises(InputError, match="prior_setting: only for the lite model"):
        config_from_args(parser.parse_args(tiny + ["--prior-setting", "x2-2s0.5"]))


def test_annotation_weights_option_sets_the_mix_and_reports_bad_items():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--model-preset", "tiny", "--dataset", "yolo:/data", "--out", "run", "--annotation", "mixed"]
    config = config_from_args(parser.parse_args(base + ["--annotation-weights", "box=2,mask=0.5"]))
    assert config.annotation_weights == {"box": 2.0, "mask": 0.5}
    assert config.annotation_type_weights() == [1.0, 2.0, 1.0, 0.5]  # point, box, scribble, mask
    assert TrainConfig.from_json(config.to_json()) == config
    assert config_from_args(parser.parse_args(base)).annotation_weights == {}
    for bad, message in [("box", "expected TYPE=WEIGHT"), ("lasso=1", "expected one of point, box"),
                         ("box=-1", "box's weight must be a non-negative"),
                         ("point=0,box=0,scribble=0,mask=0", "at least one annotation type")]:
        with pytest.raises(InputError, match=message):
            config_from_args(parser.parse_args(base + ["--annotation-weights", bad]))
    with pytest.raises(InputError, match="mixed only"):
        config_from_args(parser.parse_args(base[:-2] + ["--annotation-weights", "box=2"]))


def test_mixed_annotations_draw_the_types_in_proportion_to_their_weights():
    from vrpsam.data.episodes import Episode
    from vrpsam.engine.train import MixedAnnotations

    class Named:  # stands in for one annotation type's EpisodeDataset
        def __init__(self, name):
            self.name = name

        def __getitem__(self, i):
            return self.name

    names = ("point", "box", "scribble", "mask")
    episodes = [Episode(index=i, class_id=0, query="q", supports=("s",), epoch=0) for i in range(4000)]
    datasets = {name: Named(name) for name in names}

    def shares(weights):
        drawn = [MixedAnnotations(datasets, episodes, seed=5, weights=weights)[i] for i in range(len(episodes))]
        return [drawn.count(name) / len(drawn) for name in names]

    assert shares([1, 2, 1, 1]) == pytest.approx([0.2, 0.4, 0.2, 0.2], abs=0.025)
    assert shares([0, 1, 0, 0]) == [0, 1, 0, 0]
    assert shares(None) == pytest.approx([0.25] * 4, abs=0.025)
    # Without weights the draw is rng.integers, as before the option existed, so old runs keep their episodes.
    rng = np.random.default_rng([5, 0, 7, 3])
    assert MixedAnnotations(datasets, episodes, seed=5)[7] == names[int(rng.integers(4))]


def test_weight_averaging_keeps_the_mean_of_the_iterations_past_average_from(tiny, tmp_path):
    def steps(config):
        """Losses and trainable weights after each of the run's 8 iterations, stepping by hand."""
        trainer = Trainer(config, progress=False)
        try:
            losses, weights = [], []
            for epoch in range(2):
                for batch in trainer.batches(epoch):
                    losses.append(trainer.step(batch).loss)
                    weights.append([p.detach().clone() for p in trainer.trainable])
            return losses, weights
        finally:
            trainer.close()

    plain_losses, plain = steps(tiny(out_dir=str(tmp_path / "plain")))
    averaged_losses, averaged = steps(tiny(out_dir=str(tmp_path / "averaged"), average_from=5))
    assert averaged_losses == plain_losses  # the average never feeds back into training
    for k in range(7):  # before the last iteration the model holds its own weights
        assert all(torch.equal(a, b) for a, b in zip(averaged[k], plain[k]))
    mean = [torch.stack([plain[k][i] for k in (5, 6, 7)]).mean(0) for i in range(len(plain[0]))]
    assert all(torch.allclose(a, m, atol=1e-6) for a, m in zip(averaged[7], mean))
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(averaged[7], plain[7]))


def test_weight_averaging_resumes_and_checks_its_iteration(tiny, tmp_path):
    straight = train(tiny(out_dir=str(tmp_path / "a"), average_from=4), progress=False)
    first = train(tiny(out_dir=str(tmp_path / "b"), average_from=4, max_iters=6), progress=False)
    second = train(tiny(out_dir=str(tmp_path / "b"), average_from=4), resume=first.last, progress=False)
    a, _ = load_vrp_checkpoint(straight.last)
    b, _ = load_vrp_checkpoint(second.last)
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--model-preset", "tiny", "--dataset", "yolo:/data", "--out", "run", "--average-from", "300"]))
    assert config.average_from == 300 and TrainConfig.from_json(config.to_json()).average_from == 300
    with pytest.raises(InputError, match="average_from: 8 leaves no iteration to average; the run has 8"):
        Trainer(tiny(average_from=8), progress=False)
    with pytest.raises(InputError, match="average_from: expected an iteration"):
        tiny(average_from=-1)
