from types import SimpleNamespace

import pytest

from vrpsam.engine import calibrate as calibrate_module
from vrpsam.engine.calibrate import SELF_SUPPORT_WEIGHTS, apply_prior_setting, calibrate_prior, self_support_weights, setting_name
from vrpsam.errors import InputError
from vrpsam.vrp.proto import PrototypePrior


def _model(scale: float = 10.0, bias: float = 0.5) -> SimpleNamespace:
    """A model whose "logits" are its prior's (scale, bias, self-support) when decoded; counts its encodings."""
    prior = PrototypePrior(c2=8)
    prior.scale.data.fill_(scale)
    prior.bias.data.fill_(bias)
    model = SimpleNamespace(prior=prior, encodings=0)

    def encode_shots(query, supports, annotations):
        model.encodings += 1
        return "encoded"

    def decode_shots(encoded):
        assert encoded == "encoded"
        return prior.scale.item(), prior.bias.item(), prior.self_support.item()

    model.encode_shots, model.decode_shots = encode_shots, decode_shots
    return model


def _scored_by(monkeypatch, score):
    """evaluate_variants() replaced by one episode scored ``score(scale, bias, self_support, annotation)``
    for each variant the calibration decodes; records the options it got."""
    calls = []

    def evaluate_variants(model, source, predict, variants, *, annotation, **options):
        calls.append(options)
        decoded = predict(model, "query", "supports", "annotations")
        assert list(decoded) == list(variants)
        return {variant: SimpleNamespace(miou=score(*decoded[variant], annotation)) for variant in variants}

    monkeypatch.setattr(calibrate_module, "evaluate_variants", evaluate_variants)
    return calls


def test_the_best_mean_over_annotation_types_wins_and_stays_in_the_model(monkeypatch):
    # mask peaks at x4, box at bias -2: the mean over both peaks at (x4, -2, self-support 0.5).
    calls = _scored_by(monkeypatch, lambda scale, bias, ss, ann: (scale if ann == "mask" else -abs(bias + 1.5)) + ss)
    model = _model()
    chosen = calibrate_prior(model, "source", annotations=["mask", "box"], episodes=7, seed=3)
    assert (chosen.multiplier, chosen.bias_offset, chosen.self_support) == (4.0, -2.0, 0.5)
    assert (chosen.scale, chosen.bias) == (pytest.approx(40.0), pytest.approx(-1.5))
    assert model.prior.scale.item() == pytest.approx(40.0) and model.prior.bias.item() == pytest.approx(-1.5)
    assert model.prior.self_support.item() == 0.5
    assert chosen.episodes == 7 and calls == [{"episodes": 7, "seed": 3}] * 2
    assert len(chosen.val_miou) == 18 and model.encodings == 2  # each episode encoded once for all 18 settings
    assert chosen.val_miou[setting_name(4, -2, 0.5)] == max(chosen.val_miou.values())
    assert chosen.val_miou_by_annotation["box"][setting_name(4, -2, 0.5)] == pytest.approx(0.5)
    assert chosen.val_miou_by_annotation["mask"][setting_name(4, -2, 0.5)] == pytest.approx(40.5)


def test_ties_go_to_the_smallest_change(monkeypatch):
    _scored_by(monkeypatch, lambda scale, bias, ss, ann: 1.0)
    chosen = calibrate_prior(_model(), "source", annotations=["mask"])
    assert (chosen.multiplier, chosen.bias_offset, chosen.self_support) == (1.0, 0.0, 0.0)
    # A lower bias scoring as well as the trained one is no reason to move it.
    _scored_by(monkeypatch, lambda scale, bias, ss, ann: float(bias < 1.0))
    chosen = calibrate_prior(_model(), "source", annotations=["mask"])
    assert (chosen.multiplier, chosen.bias_offset, chosen.self_support) == (1.0, 0.0, 0.0)


def test_a_model_without_a_prior_is_an_input_error():
    with pytest.raises(InputError, match="calibrate_prior: the model has no prototype prior"):
        calibrate_prior(SimpleNamespace(prior=None), "source", annotations=["mask"])


def test_a_given_setting_is_applied_to_the_trained_weights_without_measuring():
    model = _model(scale=10.0, bias=0.5)
    chosen = apply_prior_setting(model, "x2-2s0.5")
    assert (chosen.multiplier, chosen.bias_offset, chosen.self_support) == (2.0, -2.0, 0.5)
    assert (chosen.trained_scale, chosen.trained_bias) == (10.0, 0.5)
    assert model.prior.scale.item() == pytest.approx(20.0) and model.prior.bias.item() == pytest.approx(-1.5)
    assert model.prior.self_support.item() == 0.5 and model.encodings == 0
    assert chosen.val_miou == {} and chosen.annotations == () and chosen.episodes == 0
    with pytest.raises(InputError, match="prior_setting: the model has no prototype prior"):
        apply_prior_setting(SimpleNamespace(prior=None), "x2-2s0.5")
    with pytest.raises(InputError, match="prior_setting: expected xSCALE"):
        apply_prior_setting(_model(), "twice")


def test_the_trained_self_support_weight_is_always_a_candidate():
    assert self_support_weights(0.5) == SELF_SUPPORT_WEIGHTS == (0.0, 0.5)
    assert self_support_weights(0) == (0.0, 0.5)
    assert self_support_weights(1) == (0.0, 0.5, 1.0)
    assert self_support_weights(0.25) == (0.0, 0.25, 0.5)
