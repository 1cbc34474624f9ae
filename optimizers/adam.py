"""Adam, and its AdamW (decoupled decay) and AMSGrad (maximum second moment) variants."""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from optimizers.base import (
    Optimizer,
    ParamsT,
    check_betas,
    check_bool,
    check_nonnegative,
    foreach_addcdiv_scaled_,
    increment_steps,
    new_step_count,
    scalar_value,
)


class Adam(Optimizer):
    """Adam (torch.optim.Adam's algorithm), with optional AMSGrad and decoupled decay.

    Update rule (g = gradient after ``maximize`` and weight decay, t = step count from 1;
    m, v and v_max start at 0)::

        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        bc1 = 1 − β1ᵗ,  bc2 = 1 − β2ᵗ
        amsgrad:  v_max ← max(v_max, v)  (over the raw v), used below in place of v
        d = √v / √bc2 + eps              (eps is added after the bias correction)
        p ← p − (lr / bc1)·m / d

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-3).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)).
        eps: ≥ 0, added to the denominator (default 1e-8).
        weight_decay: λ ≥ 0 (default 0).
        amsgrad: use the AMSGrad variant (default False).
        foreach: True for the multi-tensor kernel, False for the per-tensor one; None picks
            multi-tensor on CUDA and per-tensor elsewhere (see :class:`optimizers.Optimizer`).
        maximize: ascend the objective instead of descending it.
        decoupled_weight_decay: p ← p·(1 − lr·λ) before the update instead of g ← g + λ·p;
            True makes this AdamW.

    State per parameter: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with amsgrad,
    ``max_exp_avg_sq`` (v_max).

    Example::

        >>> opt = Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.98))

    References:
        Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", ICLR;
        Reddi, Kale & Kumar 2018, "On the Convergence of Adam and Beyond", ICLR (AMSGrad);
        Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", ICLR (AdamW).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "foreach": foreach,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    @classmethod
    def _check_hyperparameters(cls, hparams: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hparams)
        check_betas(hparams["betas"])
        check_nonnegative("eps", hparams["eps"])
        check_bool("amsgrad", hparams["amsgrad"])

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        keys = ("exp_avg", "exp_avg_sq", "step")
        return (*keys, "max_exp_avg_sq") if group["amsgrad"] else keys

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {
            "step": new_step_count(),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Any]],
        foreach: bool,
    ) -> None:
        kernel = _adam_foreach if foreach else _adam_reference
        beta1, beta2 = group["betas"]
        kernel(
            params,
            grads,
            state["exp_avg"],
            state["exp_avg_sq"],
            state.get("max_exp_avg_sq"),
            state["step"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
        )


class AdamW(Adam):
    """AdamW: :class:`Adam` with decoupled weight decay, default weight_decay=1e-2.

    Update rule: p ← p·(1 − lr·λ), then Adam's update (see :class:`Adam`). Same arguments
    as :class:`Adam`, with ``decoupled_weight_decay=True`` and ``weight_decay=1e-2`` as
    defaults (torch.optim.AdamW's).

    Example::

        >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    Reference:
        Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", ICLR.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = True,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )


class AMSGrad(Adam):
    """AMSGrad: :class:`Adam` with amsgrad=True by default.

    Update rule: Adam's, with v_max ← max(v_max, v) over the raw second moment used in place
    of v in the denominator (see :class:`Adam`). Same arguments as :class:`Adam`.

    Example::

        >>> opt = AMSGrad(model.parameters(), lr=1e-3)

    Reference:
        Reddi, Kale & Kumar 2018, "On the Convergence of Adam and Beyond", ICLR.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = True,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )


def _adam_reference(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(
        zip(params, grads, exp_avgs, exp_avg_sqs, strict=True)
    ):
        steps[i] += 1
        t = scalar_value(steps[i])
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        second_moment = exp_avg_sq
        if max_exp_avg_sqs is not None:
            second_moment = torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
        denom = (second_moment.sqrt() / bias_correction2**0.5).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))


def _adam_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor] | None,
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    increment_steps(steps)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    ts = [scalar_value(step) for step in steps]
    minus_step_sizes = [-(lr / (1 - beta1**t)) for t in ts]
    bias_correction2_sqrts = [(1 - beta2**t) ** 0.5 for t in ts]
    second_moments = exp_avg_sqs
    if max_exp_avg_sqs is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        second_moments = max_exp_avg_sqs
    denoms = torch._foreach_sqrt(second_moments)
    torch._foreach_div_(denoms, bias_correction2_sqrts)
    torch._foreach_add_(denoms, eps)
    foreach_addcdiv_scaled_(params, exp_avgs, denoms, minus_step_sizes)
