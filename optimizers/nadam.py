"""NAdam: Adam with Nesterov momentum and a momentum schedule."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optimizers.base import (
    Optimizer,
    ParamsT,
    check_betas,
    check_nonnegative,
    foreach_addcdiv_scaled_,
    increment_steps,
    new_scalar_state,
    new_step_count,
    scalar_value,
)


class NAdam(Optimizer):
    """NAdam (torch.optim.NAdam's algorithm).

    Update rule (g = gradient after ``maximize`` and weight decay, t = step count from 1,
    ψ = momentum_decay; m and v start at 0, the product Π at 1)::

        μ_t = β1·(1 − 0.5·0.96^(t·ψ)),  μ_{t+1} = β1·(1 − 0.5·0.96^((t+1)·ψ))
        Π ← Π·μ_t
        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        d = √v / √(1 − β2ᵗ) + eps
        p ← p − lr·(1 − μ_t)/(1 − Π)·g/d − lr·μ_{t+1}/(1 − Π·μ_{t+1})·m/d

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 2e-3).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)).
        eps: ≥ 0, added to the denominator (default 1e-8).
        weight_decay: λ ≥ 0 (default 0).
        momentum_decay: ψ ≥ 0 (default 4e-3).
        decoupled_weight_decay: p ← p·(1 − lr·λ) before the update instead of g ← g + λ·p.
        foreach: True for the multi-tensor kernel, False for the per-tensor one; None picks
            multi-tensor on CUDA and per-tensor elsewhere (see :class:`optimizers.Optimizer`).
        maximize: ascend the objective instead of descending it.

    State per parameter: ``step``, ``mu_product`` (Π, a CPU scalar like ``step``),
    ``exp_avg`` (m) and ``exp_avg_sq`` (v).

    Example::

        >>> opt = NAdam(model.parameters(), lr=2e-3)

    Reference:
        Dozat 2016, "Incorporating Nesterov Momentum into Adam", ICLR workshop.
    """

    _scalar_state_keys = ("mu_product",)

    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    @classmethod
    def _check_hyperparameters(cls, hparams: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hparams)
        check_betas(hparams["betas"])
        check_nonnegative("eps", hparams["eps"])
        check_nonnegative("momentum_decay", hparams["momentum_decay"])

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq", "mu_product", "step")

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        return {
            "step": new_step_count(),
            "mu_product": new_scalar_state(1.0),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Any]],
        foreach: bool,
    ) -> None:
        kernel = _nadam_foreach if foreach else _nadam_reference
        beta1, beta2 = group["betas"]
        kernel(
            params,
            grads,
            state["exp_avg"],
            state["exp_avg_sq"],
            state["mu_product"],
            state["step"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            momentum_decay=group["momentum_decay"],
        )


def _momentum_coefficient(beta1: float, t: float, momentum_decay: float) -> float:
    """μ_t = β1·(1 − 0.5·0.96^(t·ψ)), Dozat's warming-up momentum schedule."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (t * momentum_decay)))


def _nadam_reference(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    momentum_decay: float,
) -> None:
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(
        zip(params, grads, exp_avgs, exp_avg_sqs, strict=True)
    ):
        steps[i] += 1
        t = scalar_value(steps[i])
        mu = _momentum_coefficient(beta1, t, momentum_decay)
        mu_next = _momentum_coefficient(beta1, t + 1, momentum_decay)
        mu_products[i] *= mu
        mu_product = scalar_value(mu_products[i])
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**t) ** 0.5).add_(eps)
        param.addcdiv_(grad, denom, value=-(lr * (1 - mu) / (1 - mu_product)))
        param.addcdiv_(exp_avg, denom, value=-(lr * mu_next / (1 - mu_product * mu_next)))


def _nadam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    momentum_decay: float,
) -> None:
    increment_steps(steps)
    ts = [scalar_value(step) for step in steps]
    mus = [_momentum_coefficient(beta1, t, momentum_decay) for t in ts]
    mu_nexts = [_momentum_coefficient(beta1, t + 1, momentum_decay) for t in ts]
    torch._foreach_mul_(mu_products, mus)
    products = [scalar_value(mu_product) for mu_product in mu_products]
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, [(1 - beta2**t) ** 0.5 for t in ts])
    torch._foreach_add_(denoms, eps)
    grad_coefficients = [
        -(lr * (1 - mu) / (1 - product)) for mu, product in zip(mus, products, strict=True)
    ]
    exp_avg_coefficients = [
        -(lr * mu_next / (1 - product * mu_next))
        for mu_next, product in zip(mu_nexts, products, strict=True)
    ]
    foreach_addcdiv_scaled_(params, grads, denoms, grad_coefficients)
    foreach_addcdiv_scaled_(params, exp_avgs, denoms, exp_avg_coefficients)
