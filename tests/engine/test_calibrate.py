from types import SimpleNamespace

import pytest

from vrpsam.engine import calibrate as calibrate_module
from vrpsam.engine.calibrate import calibrate_prior, setting_name
from vrpsam.errors import InputError
from vrpsam.vrp.proto import PrototypePrior


def _model(scale: float = 10.0, bias: float = 0.5) -> SimpleNamespace:
    prior = PrototypePrior(c2=8)
    prior.scale.data.fill_(scale)
    prior.bias.data.fill_(bias)
    return SimpleNamespace(prior=prior)


def _scored_by(monkeypatch, score):
    """evaluate() replaced by ``score(scale, bias, self_support, annotation)``; records the options it got."""
    calls = []

    def evaluate(model, source, *, annotation, **options):
        calls.append(options)
        prior = model.prior
        return SimpleNamespace(miou=score(prior.scale.item(), prior.bias.item(), prior.self_support.item(), annotation))

    monkeypatch.setattr(calibrate_module, "evaluate", evaluate)
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
    assert chosen.episodes == 7 and all(call == {"episodes": 7, "seed": 3} for call in calls)
    assert len(chosen.val_miou) == 18 and len(calls) == 36
    assert chosen.val_miou[setting_name(4, -2, 0.5)] == max(chosen.val_miou.values())


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
