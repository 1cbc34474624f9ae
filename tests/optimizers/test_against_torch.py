"""Every optimizer against its torch.optim counterpart, step by step, over a grid of settings.

Both of our kernels (per-tensor reference and foreach) are run against both of torch's
(for-loop and foreach) for 100 steps on tensors of varied shapes, including a scalar and an
empty tensor, with random gradients from a seeded generator set directly on ``.grad``.
Parameters are compared after every step and the state at the end.
"""

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import optimizers

STEPS = 100
SHAPES = [(3, 4), (), (0,), (7,), (2, 3, 2)]
# float64 must agree to 1e-10 relative, with no atol: every comparison here holds without one.
# float32 gets atol 1e-6 (~8 ulp at the O(1) scale of these parameters) for values that cross
# zero, whose relative error is unbounded: torch's NAdam loop computes √(v/bc2) where its
# foreach path (and ours) computes √v/√bc2, and the float32 roundings of the two differ.
TOLERANCES = {
    torch.float64: {"rtol": 1e-10, "atol": 0.0},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
}


@dataclass(frozen=True)
class Case:
    """One of our optimizers with some settings, and the torch.optim run it must match."""

    id: str
    name: str
    ours: dict[str, Any]
    torch_class: type[torch.optim.Optimizer]
    theirs: dict[str, Any]
    # torch.optim's SGD, Adagrad and RMSprop have no decoupled decay: this λ is applied to the
    # torch run by hand, p ← p·(1 − lr·λ) before each of its steps
    manual_decoupled_decay: float = 0.0
    # settings that differ in a second parameter group (the last three tensors), both runs
    second_group: dict[str, Any] = field(default_factory=dict)


SGD, ADAGRAD, RMSPROP = torch.optim.SGD, torch.optim.Adagrad, torch.optim.RMSprop
ADAM, ADAMW, NADAM = torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam

CASES = [
    Case("sgd-defaults", "sgd", {}, SGD, {}),
    Case(
        "sgd-coupled-decay",
        "sgd",
        {"lr": 0.1, "weight_decay": 0.1},
        SGD,
        {"lr": 0.1, "weight_decay": 0.1},
    ),
    Case(
        "sgd-maximize",
        "sgd",
        {"lr": 0.05, "maximize": True, "weight_decay": 0.05},
        SGD,
        {"lr": 0.05, "maximize": True, "weight_decay": 0.05},
    ),
    Case(
        "sgd-decoupled-decay",
        "sgd",
        {"lr": 0.05, "weight_decay": 0.2, "decoupled_weight_decay": True},
        SGD,
        {"lr": 0.05},
        manual_decoupled_decay=0.2,
    ),
    Case(
        "sgd-groups",
        "sgd",
        {"lr": 0.1},
        SGD,
        {"lr": 0.1},
        second_group={"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1},
    ),
    Case(
        "sgd-nesterov-explicit",
        "sgd",
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
        SGD,
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    ),
    Case("momentum-defaults", "momentum", {}, SGD, {"momentum": 0.9}),
    Case(
        "momentum-dampening",
        "momentum",
        {"lr": 0.02, "dampening": 0.3, "weight_decay": 0.01},
        SGD,
        {"lr": 0.02, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
    ),
    Case(
        "momentum-maximize-decoupled",
        "momentum",
        {"lr": 0.02, "maximize": True, "weight_decay": 0.1, "decoupled_weight_decay": True},
        SGD,
        {"lr": 0.02, "momentum": 0.9, "maximize": True},
        manual_decoupled_decay=0.1,
    ),
    Case(
        "momentum-groups",
        "momentum",
        {"lr": 0.02},
        SGD,
        {"lr": 0.02, "momentum": 0.9},
        second_group={"momentum": 0.3, "dampening": 0.5, "maximize": True},
    ),
    Case("nesterov-defaults", "nesterov", {}, SGD, {"momentum": 0.9, "nesterov": True}),
    Case(
        "nesterov-coupled-decay",
        "nesterov",
        {"lr": 0.03, "momentum": 0.5, "weight_decay": 0.1},
        SGD,
        {"lr": 0.03, "momentum": 0.5, "nesterov": True, "weight_decay": 0.1},
    ),
    Case(
        "nesterov-decoupled-decay",
        "nesterov",
        {"lr": 0.03, "weight_decay": 0.1, "decoupled_weight_decay": True},
        SGD,
        {"lr": 0.03, "momentum": 0.9, "nesterov": True},
        manual_decoupled_decay=0.1,
    ),
    Case("adagrad-defaults", "adagrad", {}, ADAGRAD, {}),
    Case(
        "adagrad-lr-decay-accumulator",
        "adagrad",
        {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.1, "eps": 1e-6},
        ADAGRAD,
        {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.1, "eps": 1e-6},
    ),
    Case(
        "adagrad-maximize-coupled-decay",
        "adagrad",
        {"maximize": True, "weight_decay": 0.1},
        ADAGRAD,
        {"maximize": True, "weight_decay": 0.1},
    ),
    Case(
        "adagrad-decoupled-decay",
        "adagrad",
        {"lr": 0.05, "weight_decay": 0.3, "decoupled_weight_decay": True},
        ADAGRAD,
        {"lr": 0.05},
        manual_decoupled_decay=0.3,
    ),
    Case(
        "adagrad-groups",
        "adagrad",
        {},
        ADAGRAD,
        {},
        second_group={"lr": 0.05, "lr_decay": 0.1, "eps": 1e-3},
    ),
    Case("rmsprop-defaults", "rmsprop", {}, RMSPROP, {}),
    Case("rmsprop-centered", "rmsprop", {"centered": True}, RMSPROP, {"centered": True}),
    Case(
        "rmsprop-momentum",
        "rmsprop",
        {"lr": 1e-3, "momentum": 0.9},
        RMSPROP,
        {"lr": 1e-3, "momentum": 0.9},
    ),
    Case(
        "rmsprop-centered-momentum-decay",
        "rmsprop",
        {"alpha": 0.9, "eps": 1e-6, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
        RMSPROP,
        {"alpha": 0.9, "eps": 1e-6, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
    ),
    Case(
        "rmsprop-maximize-decoupled",
        "rmsprop",
        {"maximize": True, "weight_decay": 0.5, "decoupled_weight_decay": True},
        RMSPROP,
        {"maximize": True},
        manual_decoupled_decay=0.5,
    ),
    Case(
        "rmsprop-groups",
        "rmsprop",
        {"momentum": 0.5},
        RMSPROP,
        {"momentum": 0.5},
        second_group={"alpha": 0.5, "lr": 1e-3},
    ),
    Case("adam-defaults", "adam", {}, ADAM, {}),
    Case(
        "adam-betas-eps-coupled-decay",
        "adam",
        {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
        ADAM,
        {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ),
    Case(
        "adam-decoupled-decay",
        "adam",
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        ADAM,
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
    Case(
        "adam-amsgrad-maximize",
        "adam",
        {"amsgrad": True, "maximize": True},
        ADAM,
        {"amsgrad": True, "maximize": True},
    ),
    Case(
        "adam-groups",
        "adam",
        {},
        ADAM,
        {},
        second_group={"lr": 1e-2, "betas": (0.5, 0.9), "weight_decay": 0.1},
    ),
    Case("amsgrad-defaults", "amsgrad", {}, ADAM, {"amsgrad": True}),
    Case(
        "amsgrad-decoupled-decay",
        "amsgrad",
        {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ADAM,
        {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
    Case("adamw-defaults", "adamw", {}, ADAMW, {}),
    Case(
        "adamw-amsgrad-maximize",
        "adamw",
        {"lr": 1e-2, "weight_decay": 0.05, "amsgrad": True, "maximize": True},
        ADAMW,
        {"lr": 1e-2, "weight_decay": 0.05, "amsgrad": True, "maximize": True},
    ),
    Case("adamw-groups", "adamw", {}, ADAMW, {}, second_group={"weight_decay": 0.5, "eps": 1e-4}),
    Case("nadam-defaults", "nadam", {}, NADAM, {}),
    Case(
        "nadam-momentum-decay-coupled-decay",
        "nadam",
        {"momentum_decay": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.95)},
        NADAM,
        {"momentum_decay": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.95)},
    ),
    Case(
        "nadam-decoupled-decay",
        "nadam",
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        NADAM,
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
    Case(
        "nadam-maximize",
        "nadam",
        {"maximize": True, "eps": 1e-4},
        NADAM,
        {"maximize": True, "eps": 1e-4},
    ),
    Case(
        "nadam-groups", "nadam", {}, NADAM, {}, second_group={"lr": 1e-2, "momentum_decay": 0.05}
    ),
]
CASE_IDS = [case.id for case in CASES]
# float32: each optimizer's defaults and one richer setting
FLOAT32_CASES = [
    case for case in CASES if case.id.endswith("-defaults") or case.id.endswith("-groups")
]


def _parameter_groups(params: list[torch.Tensor], second_group: dict[str, Any]) -> list[Any]:
    if not second_group:
        return params
    return [{"params": params[:2]}, {"params": params[2:], **second_group}]


def _run_both(
    case: Case, dtype: torch.dtype, ours_foreach: bool, torch_foreach: bool
) -> tuple[list[torch.Tensor], torch.optim.Optimizer, list[torch.Tensor], torch.optim.Optimizer]:
    """Run our optimizer and torch's side by side, comparing parameters after every step."""
    generator = torch.Generator().manual_seed(1234)
    ours = [torch.randn(shape, generator=generator, dtype=dtype) for shape in SHAPES]
    theirs = [p.clone() for p in ours]
    ours_opt = optimizers.build_optimizer(
        case.name, _parameter_groups(ours, case.second_group), foreach=ours_foreach, **case.ours
    )
    torch_opt = case.torch_class(
        _parameter_groups(theirs, case.second_group), foreach=torch_foreach, **case.theirs
    )
    for step in range(STEPS):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape, generator=generator, dtype=dtype)
            q.grad = p.grad.clone()
        ours_opt.step()
        if case.manual_decoupled_decay:
            with torch.no_grad():
                for group in torch_opt.param_groups:
                    torch._foreach_mul_(
                        group["params"], 1 - group["lr"] * case.manual_decoupled_decay
                    )
        torch_opt.step()
        torch.testing.assert_close(
            _flat(ours), _flat(theirs), **TOLERANCES[dtype], msg=lambda m, s=step: f"step {s}: {m}"
        )
    return ours, ours_opt, theirs, torch_opt


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _assert_same_state(
    ours: list[torch.Tensor],
    ours_opt: torch.optim.Optimizer,
    theirs: list[torch.Tensor],
    torch_opt: torch.optim.Optimizer,
    tolerances: dict[str, float],
) -> None:
    for p, q in zip(ours, theirs, strict=True):
        ours_state, torch_state = ours_opt.state.get(p, {}), torch_opt.state.get(q, {})
        assert sorted(ours_state) == sorted(torch_state)
        for key, value in torch_state.items():
            torch.testing.assert_close(ours_state[key], value, **tolerances, msg=key)


@pytest.mark.parametrize("torch_foreach", [False, True], ids=["torch_loop", "torch_foreach"])
@pytest.mark.parametrize("ours_foreach", [False, True], ids=["ours_reference", "ours_foreach"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_torch_optim_in_float64(case: Case, ours_foreach: bool, torch_foreach: bool):
    ours, ours_opt, theirs, torch_opt = _run_both(case, torch.float64, ours_foreach, torch_foreach)
    _assert_same_state(ours, ours_opt, theirs, torch_opt, TOLERANCES[torch.float64])


@pytest.mark.parametrize("torch_foreach", [False, True], ids=["torch_loop", "torch_foreach"])
@pytest.mark.parametrize("case", FLOAT32_CASES, ids=[case.id for case in FLOAT32_CASES])
def test_matches_torch_optim_in_float32(case: Case, torch_foreach: bool):
    ours, ours_opt, theirs, torch_opt = _run_both(case, torch.float32, True, torch_foreach)
    _assert_same_state(ours, ours_opt, theirs, torch_opt, TOLERANCES[torch.float32])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_reference_and_foreach_kernels_agree_exactly(case: Case):
    # on the CPU both kernels run the same elementwise operations in the same order, so
    # they agree bit for bit
    runs = []
    for foreach in (False, True):
        generator = torch.Generator().manual_seed(99)
        params = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in SHAPES]
        opt = optimizers.build_optimizer(
            case.name, _parameter_groups(params, case.second_group), foreach=foreach, **case.ours
        )
        for _ in range(STEPS):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            opt.step()
        runs.append((params, opt))
    (ref_params, ref_opt), (foreach_params, foreach_opt) = runs
    assert torch.equal(_flat(ref_params), _flat(foreach_params))
    for p, q in zip(ref_params, foreach_params, strict=True):
        assert sorted(ref_opt.state[p]) == sorted(foreach_opt.state[q])
        for key, value in ref_opt.state[p].items():
            assert torch.equal(value, foreach_opt.state[q][key]), key
