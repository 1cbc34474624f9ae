"""EarlyStopping: patience counting with min_delta, non-finite stops, best-weight restore."""

import math

import pytest
import torch
from torch import nn

from optimizers.early_stopping import EarlyStopping


def feed(stopper: EarlyStopping, values: list[float]) -> list[bool]:
    return [stopper.update(v) for v in values]


def test_min_mode_stops_after_patience_epochs_without_improvement() -> None:
    stopper = EarlyStopping("val_loss", mode="min", patience=2)
    assert feed(stopper, [1.0, 0.8, 0.9, 0.7, 0.75, 0.7]) == [False] * 5 + [True]
    assert stopper.best == 0.7
    assert stopper.best_epoch == 3
    assert stopper.stop_reason == "patience"
    assert stopper.stopped


def test_max_mode_stops_after_patience_epochs_without_improvement() -> None:
    stopper = EarlyStopping("val_accuracy", mode="max", patience=1)
    assert feed(stopper, [0.5, 0.6, 0.6]) == [False, False, True]
    assert (stopper.best, stopper.best_epoch, stopper.stop_reason) == (0.6, 1, "patience")


@pytest.mark.parametrize(
    ("mode", "values", "best", "best_epoch"),
    [
        # Gains below min_delta=0.1 do not count, and best stays put.
        ("min", [1.0, 0.95, 0.92, 0.91], 1.0, 0),
        ("max", [1.0, 1.05, 1.08, 1.09], 1.0, 0),
    ],
)
def test_changes_within_min_delta_are_not_improvements(mode, values, best, best_epoch) -> None:
    stopper = EarlyStopping("m", mode=mode, patience=3, min_delta=0.1)
    assert feed(stopper, values) == [False, False, False, True]
    assert (stopper.best, stopper.best_epoch) == (best, best_epoch)


@pytest.mark.parametrize(
    ("mode", "values"),
    [("min", [1.0, 0.95, 0.89, 0.85, 0.78]), ("max", [1.0, 1.05, 1.11, 1.15, 1.22])],
)
def test_changes_beyond_min_delta_reset_the_patience_counter(mode, values) -> None:
    stopper = EarlyStopping("m", mode=mode, patience=2, min_delta=0.1)
    assert feed(stopper, values) == [False] * 5
    assert stopper.best == values[4] and stopper.best_epoch == 4
    assert stopper.epochs_without_improvement == 0
    assert stopper.update(values[4]) is False
    assert stopper.update(values[4]) is True


def test_patience_zero_stops_at_the_first_epoch_without_improvement() -> None:
    stopper = EarlyStopping("val_loss", mode="min", patience=0)
    assert feed(stopper, [3.0, 2.0, 2.0]) == [False, False, True]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metric_stops_at_once_regardless_of_patience(bad: float) -> None:
    stopper = EarlyStopping("val_loss", mode="min", patience=100)
    assert stopper.update(1.0) is False
    assert stopper.update(bad) is True
    assert stopper.stop_reason == "non_finite"
    assert stopper.best == 1.0 and stopper.best_epoch == 0


def test_non_finite_first_value_stops_with_no_best() -> None:
    stopper = EarlyStopping("val_loss", mode="max", patience=5)
    assert stopper.update(torch.tensor(float("nan"))) is True
    assert stopper.stop_reason == "non_finite" and stopper.best is None


def test_after_stopping_updates_change_nothing() -> None:
    stopper = EarlyStopping("val_loss", mode="min", patience=0)
    feed(stopper, [1.0, 2.0])
    assert stopper.update(0.1) is True
    assert (stopper.best, stopper.stop_reason) == (1.0, "patience")


def test_accepts_one_element_tensors() -> None:
    stopper = EarlyStopping("val_loss", mode="min", patience=1)
    assert stopper.update(torch.tensor(0.5)) is False
    assert stopper.best == 0.5 and isinstance(stopper.best, float)


def test_restore_best_weights_restores_the_exact_tensors_of_the_best_epoch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    stopper = EarlyStopping("val_loss", mode="min", patience=2, restore_best_weights=True)
    snapshots = []
    for value in [1.0, 0.5, 0.7, 0.6]:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(8, 3))  # moves the batch norm running statistics too
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        stopped = stopper.update(value, model)
    assert stopped and stopper.best_epoch == 1
    stopper.restore(model)
    restored = model.state_dict()
    assert list(restored) == list(snapshots[1])
    for key, tensor in snapshots[1].items():
        assert torch.equal(restored[key], tensor), key
    assert not torch.equal(restored["0.weight"], snapshots[3]["0.weight"])


def test_kept_weights_are_copies_not_views_of_the_live_model() -> None:
    model = nn.Linear(2, 2)
    stopper = EarlyStopping("val_loss", mode="min", patience=1, restore_best_weights=True)
    stopper.update(1.0, model)
    best_weight = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.mul_(3.0)
    stopper.restore(model)
    assert torch.equal(model.weight, best_weight)


def test_restore_best_weights_needs_the_model_in_update() -> None:
    stopper = EarlyStopping("val_loss", mode="min", patience=1, restore_best_weights=True)
    with pytest.raises(ValueError, match=r"restore_best_weights=True: pass the model"):
        stopper.update(1.0)


def test_restore_without_kept_weights_is_an_error() -> None:
    with pytest.raises(ValueError, match="keeps no weights"):
        EarlyStopping("val_loss", mode="min", patience=1).restore(nn.Linear(1, 1))
    stopper = EarlyStopping("val_loss", mode="min", patience=1, restore_best_weights=True)
    with pytest.raises(ValueError, match="has no best weights yet"):
        stopper.restore(nn.Linear(1, 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": ""}, "metric must be a non-empty string, got ''"),
        ({"mode": "minimum"}, "mode must be one of min, max, got 'minimum'"),
        ({"patience": -1}, "patience must be an int >= 0, got -1"),
        ({"patience": 2.5}, "patience must be an int >= 0, got 2.5"),
        ({"min_delta": -0.1}, "min_delta must be a finite number >= 0, got -0.1"),
        ({"min_delta": math.nan}, "min_delta must be a finite number >= 0, got nan"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message) -> None:
    arguments = {"metric": "val_loss", "mode": "min", "patience": 3} | kwargs
    with pytest.raises(ValueError) as error:
        EarlyStopping(**arguments)
    assert str(error.value) == message
