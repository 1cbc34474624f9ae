"""Invalid names and hyperparameters are rejected with exact messages that say what is allowed."""

import re
from typing import Any

import pytest
import torch

import optimizers

NAMES = "adagrad, adam, adamw, amsgrad, lion, momentum, nadam, nesterov, rmsprop, sgd"
ADAM_HPARAMS = "amsgrad, betas, decoupled_weight_decay, eps, foreach, lr, maximize, weight_decay"
SGD_HPARAMS = (
    "dampening, decoupled_weight_decay, foreach, lr, maximize, momentum, nesterov, weight_decay"
)
PAIR = "betas must be a pair of real numbers (beta1, beta2), got"
NESTEROV = "nesterov=True requires momentum > 0 and dampening = 0, got"

# (id, optimizer name, hyperparameters, exact message); the value checks run in the
# constructors, so each of these rows also fails the same way when the class is called directly
INVALID_VALUES: list[tuple[str, str, dict[str, Any], str]] = [
    ("negative-lr", "adam", {"lr": -1e-3}, "lr must be >= 0, got -0.001"),
    ("nan-lr", "sgd", {"lr": float("nan")}, "lr must be >= 0, got nan"),
    ("string-lr", "sgd", {"lr": "fast"}, "lr must be a real number, got 'fast'"),
    ("bool-lr", "adagrad", {"lr": True}, "lr must be a real number, got True"),
    (
        "tensor-lr",
        "adam",
        {"lr": torch.tensor(0.1)},
        "lr must be a real number, got tensor(0.1000)",
    ),
    ("negative-eps", "adam", {"eps": -1e-8}, "eps must be >= 0, got -1e-08"),
    ("negative-eps-rmsprop", "rmsprop", {"eps": -1.0}, "eps must be >= 0, got -1.0"),
    ("beta1-is-one", "adam", {"betas": (1.0, 0.999)}, "betas[0] must be in [0, 1), got 1.0"),
    ("beta2-negative", "nadam", {"betas": (0.9, -0.1)}, "betas[1] must be in [0, 1), got -0.1"),
    ("beta2-above-one-lion", "lion", {"betas": (0.9, 1.5)}, "betas[1] must be in [0, 1), got 1.5"),
    ("betas-not-a-pair", "adamw", {"betas": 0.9}, f"{PAIR} 0.9"),
    ("betas-a-triple", "lion", {"betas": (0.9, 0.99, 0.999)}, f"{PAIR} (0.9, 0.99, 0.999)"),
    ("betas-of-strings", "amsgrad", {"betas": ("0.9", 0.99)}, f"{PAIR} ('0.9', 0.99)"),
    ("negative-momentum", "sgd", {"momentum": -0.5}, "momentum must be >= 0, got -0.5"),
    (
        "negative-momentum-rmsprop",
        "rmsprop",
        {"momentum": -0.1},
        "momentum must be >= 0, got -0.1",
    ),
    (
        "nesterov-without-momentum",
        "sgd",
        {"nesterov": True},
        f"{NESTEROV} momentum=0.0, dampening=0.0",
    ),
    (
        "nesterov-momentum-zero",
        "nesterov",
        {"momentum": 0},
        f"{NESTEROV} momentum=0, dampening=0.0",
    ),
    (
        "nesterov-with-dampening",
        "nesterov",
        {"dampening": 0.1},
        f"{NESTEROV} momentum=0.9, dampening=0.1",
    ),
    (
        "dampening-above-one",
        "momentum",
        {"dampening": 1.5},
        "dampening must be in [0, 1], got 1.5",
    ),
    ("dampening-negative", "sgd", {"dampening": -0.1}, "dampening must be in [0, 1], got -0.1"),
    ("alpha-is-one", "rmsprop", {"alpha": 1.0}, "alpha must be in [0, 1), got 1.0"),
    ("alpha-negative", "rmsprop", {"alpha": -0.5}, "alpha must be in [0, 1), got -0.5"),
    ("negative-lr-decay", "adagrad", {"lr_decay": -0.1}, "lr_decay must be >= 0, got -0.1"),
    (
        "negative-initial-accumulator",
        "adagrad",
        {"initial_accumulator_value": -1},
        "initial_accumulator_value must be >= 0, got -1",
    ),
    (
        "negative-momentum-decay",
        "nadam",
        {"momentum_decay": -4e-3},
        "momentum_decay must be >= 0, got -0.004",
    ),
    (
        "negative-weight-decay",
        "amsgrad",
        {"weight_decay": -0.01},
        "weight_decay must be >= 0, got -0.01",
    ),
    (
        "negative-weight-decay-lion",
        "lion",
        {"weight_decay": -1.0},
        "weight_decay must be >= 0, got -1.0",
    ),
    (
        "decoupled-not-bool",
        "sgd",
        {"decoupled_weight_decay": 1},
        "decoupled_weight_decay must be a bool, got 1",
    ),
    ("amsgrad-not-bool", "adam", {"amsgrad": "yes"}, "amsgrad must be a bool, got 'yes'"),
    ("centered-not-bool", "rmsprop", {"centered": None}, "centered must be a bool, got None"),
    ("nesterov-not-bool", "sgd", {"nesterov": "true"}, "nesterov must be a bool, got 'true'"),
    ("maximize-not-bool", "nadam", {"maximize": 0}, "maximize must be a bool, got 0"),
    (
        "foreach-not-bool",
        "adagrad",
        {"foreach": "auto"},
        "foreach must be a bool or None, got 'auto'",
    ),
]

# (id, optimizer name, hyperparameters, exact message): errors of the registry itself
INVALID_NAMES: list[tuple[str, Any, dict[str, Any], str]] = [
    (
        "misspelt-optimizer",
        "adamm",
        {},
        f"unknown optimizer 'adamm'; allowed: {NAMES}; did you mean 'adam'?",
    ),
    ("unknown-optimizer", "lbfgs", {}, f"unknown optimizer 'lbfgs'; allowed: {NAMES}"),
    (
        "optimizer-name-case",
        "Adam",
        {},
        f"unknown optimizer 'Adam'; allowed: {NAMES}; did you mean 'adam'?",
    ),
    ("optimizer-name-not-a-string", 3, {}, "optimizer name must be a str, got 3"),
    (
        "misspelt-hyperparameter",
        "adam",
        {"bta": (0.9, 0.99)},
        f"unknown hyperparameter 'bta' for optimizer 'adam'; allowed: {ADAM_HPARAMS}; "
        "did you mean 'betas'?",
    ),
    (
        "hyperparameter-of-another-optimizer",
        "sgd",
        {"betas": (0.9, 0.99)},
        f"unknown hyperparameter 'betas' for optimizer 'sgd'; allowed: {SGD_HPARAMS}",
    ),
    (
        "torch-only-argument",
        "adam",
        {"fused": True},
        f"unknown hyperparameter 'fused' for optimizer 'adam'; allowed: {ADAM_HPARAMS}",
    ),
    (
        "keras-style-name",
        "sgd",
        {"learning_rate": 0.1},
        f"unknown hyperparameter 'learning_rate' for optimizer 'sgd'; allowed: {SGD_HPARAMS}",
    ),
]


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _params() -> list[torch.Tensor]:
    return [torch.zeros(3, requires_grad=True)]


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [row[1:] for row in INVALID_VALUES],
    ids=[row[0] for row in INVALID_VALUES],
)
def test_build_optimizer_rejects_invalid_value(name: str, hparams: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=_exactly(message)):
        optimizers.build_optimizer(name, _params(), **hparams)


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [row[1:] for row in INVALID_VALUES],
    ids=[row[0] for row in INVALID_VALUES],
)
def test_constructor_rejects_invalid_value(name: str, hparams: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=_exactly(message)):
        optimizers.OPTIMIZERS[name](_params(), **hparams)


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [row[1:] for row in INVALID_NAMES],
    ids=[row[0] for row in INVALID_NAMES],
)
def test_build_optimizer_rejects_unknown_name(name: Any, hparams: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=_exactly(message)):
        optimizers.build_optimizer(name, _params(), **hparams)


@pytest.mark.parametrize(
    ("name", "group", "message"),
    [
        ("adam", {"lr": -1.0}, "lr must be >= 0, got -1.0"),
        ("nadam", {"betas": (0.9, 1.0)}, "betas[1] must be in [0, 1), got 1.0"),
        ("sgd", {"nesterov": True}, f"{NESTEROV} momentum=0.0, dampening=0.0"),
        ("rmsprop", {"alpha": 2.0}, "alpha must be in [0, 1), got 2.0"),
    ],
    ids=["adam-lr", "nadam-betas", "sgd-nesterov", "rmsprop-alpha"],
)
def test_parameter_group_settings_are_checked(name: str, group: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=_exactly(message)):
        optimizers.build_optimizer(name, [{"params": _params()}, {"params": _params(), **group}])

    opt = optimizers.build_optimizer(name, _params())
    with pytest.raises(ValueError, match=_exactly(message)):
        opt.add_param_group({"params": _params(), **group})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("sgd", {"lr": 0.0, "momentum": 0.0, "dampening": 1.0, "weight_decay": 0.0}),
        ("rmsprop", {"alpha": 0.0, "eps": 0.0}),
        ("adam", {"betas": [0.0, 0.0], "eps": 0.0}),
        ("adagrad", {"lr_decay": 0.0, "initial_accumulator_value": 0.0, "foreach": False}),
        ("nadam", {"momentum_decay": 0.0, "foreach": None}),
    ],
    ids=["sgd", "rmsprop", "adam-betas-as-list", "adagrad", "nadam"],
)
def test_boundary_values_are_accepted(name: str, hparams: dict[str, Any]):
    opt = optimizers.build_optimizer(name, _params(), **hparams)
    for key, value in hparams.items():
        assert opt.param_groups[0][key] == value


def test_complex_parameters_are_rejected_at_their_first_step():
    param = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
    opt = optimizers.build_optimizer("adam", [param])
    param.grad = torch.ones_like(param)
    with pytest.raises(
        RuntimeError, match=_exactly("Adam supports real parameters only, got torch.complex64")
    ):
        opt.step()


def test_sparse_gradients_are_rejected():
    param = torch.zeros(3, requires_grad=True)
    opt = optimizers.build_optimizer("sgd", [param])
    param.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match=_exactly("SGD does not support sparse gradients")):
        opt.step()
