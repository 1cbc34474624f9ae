"""Lion: the sign of an interpolated momentum (EvoLved Sign Momentum)."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optimizers.base import Optimizer, ParamsT, check_betas


class Lion(Optimizer):
    """Lion, as in Algorithm 2 of Chen et al. 2023 (torch.optim has no counterpart).

    Update rule (g = gradient after ``maximize`` (and coupled decay, if chosen), m starts at
    0, λ = weight_decay, decoupled as in the paper by default)::

        p ← p·(1 − lr·λ)
        c = β1·m + (1 − β1)·g
        p ← p − lr·sign(c)
        m ← β2·m + (1 − β2)·g

    i.e. the paper's p ← p − lr·(sign(c) + λ·p). Every coordinate moves by exactly lr (plus
    decay), so Lion wants a learning rate 3-10× smaller than AdamW's and a weight decay
    3-10× larger.

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-4).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.99)).
        weight_decay: λ ≥ 0 (default 0).
        maximize: ascend the objective instead of descending it.
        foreach: True for the multi-tensor kernel, False for the per-tensor one; None picks
            multi-tensor on CUDA and per-tensor elsewhere (see :class:`optimizers.Optimizer`).
        decoupled_weight_decay: True (default, the paper's) for p ← p·(1 − lr·λ) before the
            update; False adds λ·p to the gradient instead.

    State per parameter: ``exp_avg`` (m).

    Example::

        >>> opt = Lion(model.parameters(), lr=3e-5, weight_decay=1.0)

    Reference:
        Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", NeurIPS.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        decoupled_weight_decay: bool = True,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    @classmethod
    def _check_hyperparameters(cls, hparams: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hparams)
        check_betas(hparams["betas"])

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg",)

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {"exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Any]],
        foreach: bool,
    ) -> None:
        kernel = _lion_foreach if foreach else _lion_reference
        beta1, beta2 = group["betas"]
        kernel(
            params,
            grads,
            state["exp_avg"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
        )


def _lion_reference(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
) -> None:
    for param, grad, exp_avg in zip(params, grads, exp_avgs, strict=True):
        update = exp_avg.lerp(grad, 1 - beta1).sign_()
        param.add_(update, alpha=-lr)
        exp_avg.lerp_(grad, 1 - beta2)


def _lion_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
) -> None:
    updates = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)
    torch._foreach_sign_(updates)
    torch._foreach_add_(params, updates, alpha=-lr)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)
