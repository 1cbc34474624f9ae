"""Adagrad: per-coordinate learning rates from the sum of squared gradients."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optimizers.base import (
    Optimizer,
    ParamsT,
    check_nonnegative,
    foreach_addcdiv_scaled_,
    increment_steps,
    new_step_count,
    scalar_value,
)


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad's algorithm).

    Update rule (g = gradient after ``maximize`` and weight decay, t = step count from 1,
    s = sum of squared gradients, starting at ``initial_accumulator_value``)::

        clr = lr / (1 + (t − 1)·lr_decay)
        s ← s + g²
        p ← p − clr·g / (√s + eps)

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-2).
        lr_decay: ≥ 0, decays the learning rate as 1 / (1 + (t − 1)·lr_decay) (default 0).
        weight_decay: λ ≥ 0 (default 0).
        initial_accumulator_value: ≥ 0, the starting value of s (default 0).
        eps: ≥ 0, added to the denominator (default 1e-10).
        foreach: True for the multi-tensor kernel, False for the per-tensor one; None picks
            multi-tensor on CUDA and per-tensor elsewhere (see :class:`optimizers.Optimizer`).
        maximize: ascend the objective instead of descending it.
        decoupled_weight_decay: p ← p·(1 − lr·λ) before the update instead of g ← g + λ·p.

    State per parameter: ``step`` (CPU scalar tensor) and ``sum``, created on the
    parameter's first step with a gradient (torch.optim creates them in the constructor;
    the values are the same).

    Example::

        >>> opt = Adagrad(model.parameters(), lr=0.05)

    Reference:
        Duchi, Hazan & Singer 2011, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR 12.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
            "foreach": foreach,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    @classmethod
    def _check_hyperparameters(cls, hparams: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hparams)
        check_nonnegative("lr_decay", hparams["lr_decay"])
        check_nonnegative("initial_accumulator_value", hparams["initial_accumulator_value"])
        check_nonnegative("eps", hparams["eps"])

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("sum", "step")

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {
            "step": new_step_count(),
            "sum": torch.full_like(
                param, group["initial_accumulator_value"], memory_format=torch.preserve_format
            ),
        }

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Any]],
        foreach: bool,
    ) -> None:
        kernel = _adagrad_foreach if foreach else _adagrad_reference
        kernel(
            params,
            grads,
            state["sum"],
            state["step"],
            lr=group["lr"],
            lr_decay=group["lr_decay"],
            eps=group["eps"],
        )


def _adagrad_reference(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    lr_decay: float,
    eps: float,
) -> None:
    for param, grad, sum_, step in zip(params, grads, sums, steps, strict=True):
        step += 1
        clr = lr / (1 + (scalar_value(step) - 1) * lr_decay)
        sum_.addcmul_(grad, grad, value=1)
        std = sum_.sqrt().add_(eps)
        param.addcdiv_(grad, std, value=-clr)


def _adagrad_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    lr_decay: float,
    eps: float,
) -> None:
    increment_steps(steps)
    minus_clr = [-lr / (1 + (scalar_value(step) - 1) * lr_decay) for step in steps]
    torch._foreach_addcmul_(sums, grads, grads, value=1)
    std = torch._foreach_sqrt(sums)
    torch._foreach_add_(std, eps)
    foreach_addcdiv_scaled_(params, grads, std, minus_clr)
