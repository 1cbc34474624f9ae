"""RMSprop: gradients divided by a running root mean square, plain, centered or with momentum."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optimizers.base import (
    Optimizer,
    ParamsT,
    check_bool,
    check_in_unit_interval,
    check_nonnegative,
    increment_steps,
    new_step_count,
)


class RMSprop(Optimizer):
    """RMSprop, plain, centered, or with momentum (torch.optim.RMSprop's algorithm).

    Update rule (g = gradient after ``maximize`` and weight decay, α = alpha, μ = momentum;
    v, ḡ and b start at 0; there is no bias correction)::

        v ← α·v + (1 − α)·g²
        centered:  ḡ ← α·ḡ + (1 − α)·g;  d = √(v − ḡ²) + eps
        else:      d = √v + eps
        momentum > 0:  b ← μ·b + g/d;  p ← p − lr·b
        else:          p ← p − lr·g/d

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-2).
        alpha: smoothing constant α in [0, 1) (default 0.99).
        eps: ≥ 0, added to the denominator (default 1e-8).
        weight_decay: λ ≥ 0 (default 0).
        momentum: μ ≥ 0 (default 0).
        centered: normalize by an estimate of the gradient's variance instead of its
            second moment (default False).
        maximize: ascend the objective instead of descending it.
        foreach: True for the multi-tensor kernel, False for the per-tensor one; None picks
            multi-tensor on CUDA and per-tensor elsewhere (see :class:`optimizers.Optimizer`).
        decoupled_weight_decay: p ← p·(1 − lr·λ) before the update instead of g ← g + λ·p.

    State per parameter: ``step``, ``square_avg`` (v), ``grad_avg`` (ḡ, when centered) and
    ``momentum_buffer`` (b, when momentum > 0).

    Example::

        >>> opt = RMSprop(model.parameters(), lr=1e-3, centered=True, momentum=0.9)

    References:
        Tieleman & Hinton 2012, "Lecture 6.5 — RMSprop", COURSERA: Neural Networks for
        Machine Learning; Graves 2013, "Generating Sequences With Recurrent Neural Networks"
        (the centered variant).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "maximize": maximize,
            "foreach": foreach,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    @classmethod
    def _check_hyperparameters(cls, hparams: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hparams)
        check_in_unit_interval("alpha", hparams["alpha"], closed=False)
        check_nonnegative("eps", hparams["eps"])
        check_nonnegative("momentum", hparams["momentum"])
        check_bool("centered", hparams["centered"])

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        keys = ("square_avg", "step")
        if group["centered"]:
            keys += ("grad_avg",)
        if group["momentum"] > 0:
            keys += ("momentum_buffer",)
        return keys

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {
            "step": new_step_count(),
            "square_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Any]],
        foreach: bool,
    ) -> None:
        kernel = _rmsprop_foreach if foreach else _rmsprop_reference
        kernel(
            params,
            grads,
            state["square_avg"],
            state.get("grad_avg"),
            state.get("momentum_buffer"),
            state["step"],
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            momentum=group["momentum"],
        )


def _rmsprop_reference(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor] | None,
    momentum_buffers: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    momentum: float,
) -> None:
    for i, (param, grad, square_avg) in enumerate(zip(params, grads, square_avgs, strict=True)):
        steps[i] += 1
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if grad_avgs is not None:
            grad_avg = grad_avgs[i].lerp_(grad, 1 - alpha)
            denom = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            denom = square_avg.sqrt()
        denom.add_(eps)
        if momentum_buffers is not None:
            buffer = momentum_buffers[i].mul_(momentum).addcdiv_(grad, denom)
            param.add_(buffer, alpha=-lr)
        else:
            param.addcdiv_(grad, denom, value=-lr)


def _rmsprop_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor] | None,
    momentum_buffers: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    momentum: float,
) -> None:
    increment_steps(steps)
    torch._foreach_mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
    if grad_avgs is not None:
        torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
        denoms = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
        torch._foreach_sqrt_(denoms)
    else:
        denoms = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(denoms, eps)
    if momentum_buffers is not None:
        torch._foreach_mul_(momentum_buffers, momentum)
        torch._foreach_addcdiv_(momentum_buffers, grads, denoms)
        torch._foreach_add_(params, momentum_buffers, alpha=-lr)
    else:
        torch._foreach_addcdiv_(params, grads, denoms, value=-lr)
