"""run_trial: statuses, history, determinism, divergence, failures, reporter, schedules,
early stopping, penalties, time-to-target and config validation."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from services import trainer
from services.trainer import EpochMetrics, TrialConfig, run_trial
from services.workloads import WORKLOADS, DataFileMissing

QUADRATIC_STEPS_PER_EPOCH = 8192 // 128


def quadratic(**overrides: Any) -> dict[str, Any]:
    return {
        "workload": "quadratic",
        "optimizer": "adam",
        "hparams": {"lr": 0.01},
        "epochs": 2,
        **overrides,
    }


def digits_cnn(**overrides: Any) -> dict[str, Any]:
    return {
        "workload": "digits-cnn",
        "optimizer": "momentum",
        "hparams": {"lr": 0.05, "momentum": 0.9},
        "model": {"dropout": 0.25, "batch_norm": True},
        "epochs": 2,
        "batch_size": 64,
        **overrides,
    }


def replace_workload(monkeypatch: pytest.MonkeyPatch, name: str, **changes: Any) -> None:
    monkeypatch.setitem(WORKLOADS, name, dataclasses.replace(WORKLOADS[name], **changes))


def learning_curve(history: list[EpochMetrics]) -> list[tuple]:
    """Everything in the history except wall-clock times."""
    return [(m.epoch, m.step, m.train_loss, m.val_metric, m.val_loss, m.lr) for m in history]


# --- a completed trial ----------------------------------------------------------------------


def test_completed_trial_reports_history_and_final_metrics() -> None:
    result = run_trial(quadratic())

    assert result.status == "completed" and result.error is None
    assert [m.epoch for m in result.history] == [1, 2]
    assert [m.step for m in result.history] == [
        QUADRATIC_STEPS_PER_EPOCH,
        2 * QUADRATIC_STEPS_PER_EPOCH,
    ]
    assert result.steps == 2 * QUADRATIC_STEPS_PER_EPOCH
    assert result.final_val_metric == result.history[-1].val_metric
    assert result.best_val_metric == min(m.val_metric for m in result.history)
    assert result.test_metric is not None and math.isfinite(result.test_metric)
    assert result.history[1].val_metric < result.history[0].val_metric  # it learns
    assert result.train_time_s == pytest.approx(sum(m.epoch_time_s for m in result.history))
    assert result.samples_per_s == pytest.approx(result.steps * 128 / result.train_time_s)
    assert all(m.lr == 0.01 for m in result.history)
    assert (result.metric, result.direction) == ("excess_loss", "min")
    assert result.config["batch_size"] == 128  # the workload default, resolved
    assert result.device == "cpu"


def test_result_to_dict_is_strict_json() -> None:
    result = run_trial(quadratic(epochs=1))
    encoded = json.dumps(result.to_dict(), allow_nan=False)
    decoded = json.loads(encoded)
    assert decoded["status"] == "completed"
    assert decoded["history"][0]["step"] == QUADRATIC_STEPS_PER_EPOCH
    assert TrialConfig.from_dict(decoded["config"]) == TrialConfig.from_dict(quadratic(epochs=1))


def test_max_steps_caps_the_trial_mid_epoch() -> None:
    result = run_trial(quadratic(epochs=5, max_steps=10))
    assert result.status == "completed"
    assert result.steps == 10
    assert [m.step for m in result.history] == [10]


# --- determinism ----------------------------------------------------------------------------


def test_same_config_and_seed_give_a_bit_identical_history() -> None:
    first = run_trial(digits_cnn(seed=3))
    second = run_trial(digits_cnn(seed=3))
    assert first.status == second.status == "completed"
    assert learning_curve(first.history) == learning_curve(second.history)
    assert first.test_metric == second.test_metric


def test_another_seed_gives_another_history() -> None:
    first = run_trial(digits_cnn(seed=3, epochs=1))
    other = run_trial(digits_cnn(seed=4, epochs=1))
    assert first.history[0].train_loss != other.history[0].train_loss


def test_seed_controls_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    # Same initialisation and data order, dropout on: the global generator the trial
    # seeds must drive the dropout masks, or the two runs would differ.
    first = run_trial(digits_cnn(seed=9, epochs=1, model={"dropout": 0.5}))
    second = run_trial(digits_cnn(seed=9, epochs=1, model={"dropout": 0.5}))
    no_dropout = run_trial(digits_cnn(seed=9, epochs=1, model={"dropout": 0.0}))
    assert first.history[0].train_loss == second.history[0].train_loss
    assert first.history[0].train_loss != no_dropout.history[0].train_loss


def test_trial_leaves_the_callers_generator_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_trial(quadratic(epochs=1, max_steps=3))
    assert torch.equal(torch.rand(3), expected)


# --- divergence and failure -----------------------------------------------------------------


def nan_on_training_call(step: int, loss: Any) -> Any:
    """The workload's loss, but NaN on the ``step``-th training call (1-based)."""
    calls = {"n": 0}

    def wrapped(output: Tensor, target: Tensor) -> Tensor:
        value = loss(output, target)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == step:
                return value * float("nan")
        return value

    return wrapped


def test_nan_loss_ends_the_trial_as_diverged_at_that_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps_per_epoch = 8192 // 16
    bad_step = steps_per_epoch + 40  # in the second epoch
    loss = WORKLOADS["quadratic"].loss
    replace_workload(monkeypatch, "quadratic", loss=nan_on_training_call(bad_step, loss))

    result = run_trial(quadratic(batch_size=16, epochs=3))

    assert result.status == "diverged"
    assert result.diverged_at_step == bad_step
    assert [m.epoch for m in result.history] == [1]  # the history so far
    assert result.final_val_metric is None and result.test_metric is None
    # The guard cut the second epoch short instead of running all of its steps.
    assert result.steps < 2 * steps_per_epoch
    assert result.steps >= bad_step


def test_exploding_learning_rate_diverges_without_raising() -> None:
    result = run_trial(quadratic(optimizer="sgd", hparams={"lr": 1e4}, epochs=1))
    assert result.status == "diverged"
    assert 1 <= result.diverged_at_step <= QUADRATIC_STEPS_PER_EPOCH
    assert result.history == []


class ExplodingModel(nn.Module):
    """A digits MLP whose forward raises on its ``fail_at``-th training call."""

    def __init__(self, input_shape: tuple, num_classes: int, fail_at: int) -> None:
        super().__init__()
        self.linear = nn.Linear(64, num_classes)
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("boom inside the model")
        return self.linear(x.flatten(1))


def test_exception_in_the_model_is_a_failed_result(monkeypatch: pytest.MonkeyPatch) -> None:
    steps_per_epoch = 1077 // 64

    def factory(input_shape: tuple, num_classes: int) -> nn.Module:
        return ExplodingModel(input_shape, num_classes, fail_at=steps_per_epoch + 3)

    replace_workload(monkeypatch, "digits-mlp", model=factory, model_defaults={})

    result = run_trial({"workload": "digits-mlp", "optimizer": "sgd", "epochs": 3})

    assert result.status == "failed"
    assert result.error == "RuntimeError: boom inside the model"
    assert "in forward" in result.traceback
    assert [m.epoch for m in result.history] == [1]
    assert result.test_metric is None


class CorruptingModel(nn.Module):
    """A digits linear model that sets its weight to NaN during its ``corrupt_at``-th
    training call, after computing a finite output."""

    def __init__(self, input_shape: tuple, num_classes: int, corrupt_at: int) -> None:
        super().__init__()
        self.linear = nn.Linear(64, num_classes)
        self.corrupt_at = corrupt_at
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        output = self.linear(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls == self.corrupt_at:
                self.linear.weight.data.fill_(float("nan"))
        return output


def test_parameters_broken_by_an_epochs_last_step_diverge_at_that_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps_per_epoch = 1077 // 64

    def factory(input_shape: tuple, num_classes: int) -> nn.Module:
        return CorruptingModel(input_shape, num_classes, corrupt_at=2 * steps_per_epoch)

    replace_workload(monkeypatch, "digits-mlp", model=factory, model_defaults={})

    result = run_trial({"workload": "digits-mlp", "optimizer": "sgd", "epochs": 3})

    assert result.status == "diverged"
    assert result.diverged_at_step == 2 * steps_per_epoch
    assert [m.epoch for m in result.history] == [1]


def test_missing_data_files_raise_before_training(tmp_path: Path) -> None:
    config = {"workload": "mnist-cnn", "optimizer": "adam", "data_dir": str(tmp_path)}
    with pytest.raises(DataFileMissing, match=r"train-images-idx3-ubyte\.gz"):
        run_trial(config)


# --- reporter -------------------------------------------------------------------------------


def test_reporter_sees_every_epoch_and_can_prune() -> None:
    seen: list[EpochMetrics] = []

    def reporter(metrics: EpochMetrics) -> bool:
        seen.append(metrics)
        return metrics.epoch == 2

    result = run_trial(quadratic(epochs=4), reporter=reporter)

    assert result.status == "pruned"
    assert [m.epoch for m in seen] == [1, 2]
    assert seen == result.history
    assert result.final_val_metric == seen[-1].val_metric
    assert result.test_metric is None


def test_reporter_exceptions_reach_the_caller() -> None:
    class Stop(Exception):
        pass

    def reporter(metrics: EpochMetrics) -> None:
        raise Stop("from the reporter")

    with pytest.raises(Stop, match="from the reporter"):
        run_trial(quadratic(epochs=2), reporter=reporter)


def test_one_host_copy_per_epoch_on_the_training_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Counts the trainer's own transfers (the optimizers read their CPU step counters with
    # item(), which is no device synchronisation).
    counts = {"tolist": 0, "item": 0}
    originals = {name: getattr(torch.Tensor, name) for name in counts}

    def counting(name: str) -> Any:
        def method(self: Tensor) -> Any:
            if sys._getframe(1).f_code.co_filename == trainer.__file__:
                counts[name] += 1
            return originals[name](self)

        return method

    for name in counts:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    result = run_trial(quadratic(epochs=3))
    assert result.status == "completed"
    assert counts == {"tolist": 3, "item": 1}  # one copy per epoch, one for the test metric


# --- early stopping, schedules, penalties ---------------------------------------------------


def test_early_stopping_stops_and_restores_the_best_weights() -> None:
    # min_delta so large that no epoch after the first counts as an improvement.
    stopping = {"patience": 1, "min_delta": 1e9, "restore_best_weights": True}
    result = run_trial(quadratic(epochs=10, early_stopping=stopping))
    one_epoch = run_trial(quadratic(epochs=1))

    assert result.status == "early_stopped"
    assert len(result.history) == 2
    assert result.final_val_metric == result.history[0].val_metric
    # Restored weights are the first epoch's: the same test metric as a 1-epoch trial.
    assert result.test_metric == one_epoch.test_metric


def test_early_stopping_can_monitor_validation_loss() -> None:
    stopping = {"patience": 0, "min_delta": 1e9, "monitor": "val_loss"}
    result = run_trial(digits_cnn(epochs=5, early_stopping=stopping))
    assert result.status == "early_stopped"
    assert len(result.history) == 2


def test_step_schedule_fills_total_steps_with_the_trial_length() -> None:
    result = run_trial(quadratic(epochs=2, schedule={"name": "cosine"}))
    total = 2 * QUADRATIC_STEPS_PER_EPOCH
    expected_last_lr = 0.01 * (1 + math.cos(math.pi * (total - 1) / total)) / 2
    assert result.history[-1].lr == pytest.approx(expected_last_lr, rel=1e-6)
    assert result.history[0].lr > result.history[1].lr


def test_epoch_schedule_steps_once_per_epoch() -> None:
    schedule = {"name": "step", "interval": "epoch", "step_size": 1, "gamma": 0.5}
    result = run_trial(quadratic(epochs=3, schedule=schedule))
    assert [m.lr for m in result.history] == pytest.approx([0.01, 0.005, 0.0025])


def test_reduce_on_plateau_reads_the_validation_metric_each_epoch() -> None:
    # A huge absolute threshold makes every epoch after the first a plateau; with patience
    # 0 each one halves the rate for the next epoch.
    schedule = {
        "name": "reduce_on_plateau",
        "patience": 0,
        "factor": 0.5,
        "threshold": 2.0,
        "threshold_mode": "abs",
    }
    result = run_trial(digits_cnn(epochs=3, hparams={"lr": 0.04}, schedule=schedule))
    assert [m.lr for m in result.history] == pytest.approx([0.04, 0.04, 0.02])


@pytest.mark.parametrize(("workload", "mode"), [("digits-cnn", "max"), ("quadratic", "min")])
def test_reduce_on_plateau_mode_defaults_to_the_metric_direction(workload: str, mode: str) -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = {"name": "reduce_on_plateau"}
    scheduler = trainer._build_scheduler(optimizer, schedule, WORKLOADS[workload], 10)
    assert scheduler.mode == mode


def test_penalty_changes_training_but_not_the_reported_loss() -> None:
    plain = run_trial(digits_cnn(max_steps=1, epochs=1))
    penalised = run_trial(digits_cnn(max_steps=1, epochs=1, l1=0.5, l2=5.0))
    # The first step's loss is computed before any update: identical, penalty excluded.
    assert plain.history[0].train_loss == penalised.history[0].train_loss
    two_plain = run_trial(digits_cnn(max_steps=2, epochs=1))
    two_penalised = run_trial(digits_cnn(max_steps=2, epochs=1, l2=5.0))
    assert two_plain.history[0].train_loss != two_penalised.history[0].train_loss


# --- time-to-target -------------------------------------------------------------------------


def test_time_to_target_is_training_time_at_the_first_epoch_reaching_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = run_trial(quadratic(epochs=3))
    # A target between the first and second epoch's metric: reached at epoch 2.
    target = (reference.history[0].val_metric + reference.history[1].val_metric) / 2
    replace_workload(monkeypatch, "quadratic", target=target)

    result = run_trial(quadratic(epochs=3))

    assert result.target == target
    assert result.steps_to_target == result.history[1].step
    assert result.time_to_target_s == result.history[1].train_time_s


def test_unreached_target_has_no_time_to_target(monkeypatch: pytest.MonkeyPatch) -> None:
    replace_workload(monkeypatch, "quadratic", target=-1.0)
    result = run_trial(quadratic(epochs=1))
    assert result.time_to_target_s is None and result.steps_to_target is None


# --- speed options --------------------------------------------------------------------------


def test_bf16_and_channels_last_train_to_similar_accuracy() -> None:
    base = run_trial(digits_cnn(epochs=2, model={}))
    fast = run_trial(digits_cnn(epochs=2, model={}, precision="bf16", channels_last=True))
    assert fast.status == "completed"
    assert fast.final_val_metric == pytest.approx(base.final_val_metric, abs=0.05)


def test_compile_option_compiles_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[nn.Module] = []

    def fake_compile(model: nn.Module) -> nn.Module:
        compiled.append(model)
        return model

    monkeypatch.setattr(trainer.torch, "compile", fake_compile)
    result = run_trial(quadratic(epochs=1, compile=True))
    assert result.status == "completed"
    assert len(compiled) == 1


def test_cuda_without_cuda_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        run_trial(quadratic(device="cuda"))


def test_auto_device_is_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer.resolve_device("auto") == torch.device("cpu")


# --- config validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, r"unknown trial config key 'colour'; allowed: workload, optimizer"),
        ({"workload": "mnist2d"}, r"unknown workload 'mnist2d'; allowed: quadratic, "),
        ({"optimizer": "adamx"}, r"unknown optimizer 'adamx'; allowed: adagrad, adam"),
        ({"hparams": {"lrr": 0.1}}, r"unknown hyperparameter 'lrr' for optimizer 'adam'"),
        ({"hparams": {"lr": -1.0}}, r"lr must be >= 0"),
        ({"model": {"dropout": 0.1}}, r"unknown model option 'dropout'.*allowed: none"),
        ({"epochs": 0}, r"epochs must be an int >= 1, got 0"),
        ({"batch_size": 2.5}, r"batch_size must be an int >= 1, got 2.5"),
        ({"seed": -1}, r"seed must be an int >= 0"),
        ({"device": "tpu"}, r"device must be one of auto, cpu, cuda, got 'tpu'"),
        ({"precision": "fp16"}, r"precision must be one of fp32, bf16, got 'fp16'"),
        ({"channels_last": True}, r"channels_last applies to image workloads only"),
        ({"l2": 0.1}, r"has no weight matrices or kernels to penalise"),
        ({"l1": -0.1}, r"l1 must be a finite number >= 0"),
        ({"max_steps": 0}, r"max_steps must be null or an int >= 1"),
        ({"schedule": {"name": "cosin"}}, r"unknown schedule 'cosin'"),
        ({"schedule": {"interval": "step"}}, r"schedule needs a 'name'"),
        (
            {"schedule": {"name": "reduce_on_plateau", "interval": "step"}},
            r"use interval 'epoch'",
        ),
        ({"early_stopping": {"patience": 1, "after": 3}}, r"unknown early_stopping key 'after'"),
        ({"early_stopping": {"min_delta": 0.1}}, r"early_stopping needs 'patience'"),
        ({"early_stopping": {"patience": 1, "monitor": "acc"}}, r"monitor must be one of"),
    ],
)
def test_invalid_configs_name_the_bad_value(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrialConfig.from_dict(quadratic(**change))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"activation": "relu6"}, r"unknown activation 'relu6'"),
        ({"width": 0}, r"width must be an integer >= 1"),
        ({"batch_norm": "yes"}, r"batch_norm must be true or false"),
        ({"depth": 3}, r"unknown model option 'depth'.*allowed: activation, batch_norm"),
    ],
)
def test_invalid_model_options_name_the_bad_value(model: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrialConfig.from_dict(digits_cnn(model=model))


def test_config_resolves_workload_defaults() -> None:
    config = TrialConfig.from_dict({"workload": "digits-mlp", "optimizer": "sgd"})
    workload = WORKLOADS["digits-mlp"]
    assert config.epochs == workload.default_epochs
    assert config.batch_size == workload.default_batch_size
    assert config.model == dict(workload.model_defaults)


def test_batch_larger_than_the_training_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="batch_size 100000 exceeds the 8192 training"):
        run_trial(quadratic(batch_size=100_000))


def test_schedule_invalid_at_the_trials_real_length_is_rejected_before_training() -> None:
    # one_cycle needs pct_start * total_steps > 1; total_steps filled in as 3 steps here.
    schedule = {"name": "one_cycle", "pct_start": 0.3}
    with pytest.raises(ValueError, match="pct_start"):
        run_trial(quadratic(max_steps=3, schedule=schedule))


def test_trainer_and_workloads_import_no_ray_optuna_or_mlflow() -> None:
    code = (
        "import sys, services.trainer, services.workloads; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', 'mlflow'}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
        check=True,
    )
    assert completed.stdout.strip() == "[]"
