"""Stochastic gradient descent, with optional heavy-ball or Nesterov momentum."""

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
)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (torch.optim.SGD's algorithm).

    Update rule (g = gradient after ``maximize`` and weight decay, μ = momentum,
    τ = dampening, b = momentum buffer)::

        without momentum:  p ← p − lr·g
        with momentum:     b ← g on the first step, else b ← μ·b + (1 − τ)·g
                           d = g + μ·b  if nesterov  else  b
                           p ← p − lr·d

    Args:
        params: parameters or parameter groups to optimize.
        lr: learning rate (default 1e-3).
        momentum: μ ≥ 0 (default 0, plain SGD).
        dampening: τ in [0, 1] (default 0).
        weight_decay: λ ≥ 0 (default 0).
        nesterov: use Nesterov momentum; needs momentum > 0 and dampening = 0.
        maximize: ascend the objective instead of descending it.
        foreach: True for the multi-tensor kernel, False for the per-tensor one; None picks
            multi-tensor on CUDA and per-tensor elsewhere (see :class:`optimizers.Optimizer`).
        decoupled_weight_decay: p ← p·(1 − lr·λ) before the update instead of g ← g + λ·p.

    Example::

        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()

    References:
        Robbins & Monro 1951, "A Stochastic Approximation Method";
        Polyak 1964, "Some methods of speeding up the convergence of iteration methods";
        Nesterov 1983, "A method for solving the convex programming problem with convergence
        rate O(1/k²)"; Sutskever et al. 2013, "On the importance of initialization and
        momentum in deep learning" (the form of Nesterov momentum used here).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    @classmethod
    def _check_hyperparameters(cls, hparams: Mapping[str, Any]) -> None:
        super()._check_hyperparameters(hparams)
        check_nonnegative("momentum", hparams["momentum"])
        check_in_unit_interval("dampening", hparams["dampening"], closed=True)
        check_bool("nesterov", hparams["nesterov"])
        if hparams["nesterov"] and (hparams["momentum"] <= 0 or hparams["dampening"] != 0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={hparams['momentum']}, dampening={hparams['dampening']}"
            )

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        # the momentum buffer starts as the first gradient, so the update creates it
        return {}

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        state: dict[str, list[Any]],
        foreach: bool,
    ) -> None:
        momentum = group["momentum"]
        if momentum == 0:
            kernel = _sgd_foreach if foreach else _sgd_reference
            kernel(params, grads, lr=group["lr"])
            return
        buffers = state["momentum_buffer"]
        kernel = _momentum_sgd_foreach if foreach else _momentum_sgd_reference
        kernel(
            params,
            grads,
            buffers,
            lr=group["lr"],
            momentum=momentum,
            dampening=group["dampening"],
            nesterov=group["nesterov"],
        )
        for param, buffer in zip(params, buffers, strict=True):
            self.state[param]["momentum_buffer"] = buffer


class Momentum(SGD):
    """SGD with heavy-ball momentum (Polyak 1964): :class:`SGD` with momentum=0.9 by default.

    Same update rule and arguments as :class:`SGD`; only the default of ``momentum`` differs.

    Example::

        >>> opt = Momentum(model.parameters(), lr=0.01)
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
            maximize=maximize,
            foreach=foreach,
            decoupled_weight_decay=decoupled_weight_decay,
        )


class Nesterov(SGD):
    """SGD with Nesterov momentum: :class:`SGD` with nesterov=True and momentum=0.9 by default.

    Same update rule and arguments as :class:`SGD` (d = g + μ·b); only the defaults of
    ``momentum`` and ``nesterov`` differ. References: Nesterov 1983; Sutskever et al. 2013.

    Example::

        >>> opt = Nesterov(model.parameters(), lr=0.01)
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
            maximize=maximize,
            foreach=foreach,
            decoupled_weight_decay=decoupled_weight_decay,
        )


def _sgd_reference(params: list[Tensor], grads: list[Tensor], *, lr: float) -> None:
    for param, grad in zip(params, grads, strict=True):
        param.add_(grad, alpha=-lr)


def _sgd_foreach(params: list[Tensor], grads: list[Tensor], *, lr: float) -> None:
    torch._foreach_add_(params, grads, alpha=-lr)


def _momentum_sgd_reference(
    params: list[Tensor],
    grads: list[Tensor],
    buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> None:
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        buffer = buffers[i]
        if buffer is None:
            buffer = buffers[i] = grad.clone()
        else:
            buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
        if nesterov:
            # p − lr·(g + μ·b) as two in-place steps: no temporary for g + μ·b
            param.add_(grad, alpha=-lr).add_(buffer, alpha=-lr * momentum)
        else:
            param.add_(buffer, alpha=-lr)


def _momentum_sgd_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
) -> None:
    if all(buffer is not None for buffer in buffers):
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, grads, alpha=1 - dampening)
    else:
        # a first step for some parameters: their buffers start as their gradients
        for i, grad in enumerate(grads):
            buffer = buffers[i]
            if buffer is None:
                buffers[i] = grad.clone()
            else:
                buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
    if nesterov:
        # p − lr·(g + μ·b) as two in-place steps: the same memory traffic as torch.optim,
        # which writes g + μ·b into the gradients, without touching them or allocating
        torch._foreach_add_(params, grads, alpha=-lr)
        torch._foreach_add_(params, buffers, alpha=-lr * momentum)
    else:
        torch._foreach_add_(params, buffers, alpha=-lr)
