"""L1 and L2 penalties added to the training loss, and the usual choice of what to penalise.

These are *loss terms*: the caller adds them to the loss before ``backward()``, so every
optimizer sees their gradient as part of g. Weight decay applied inside an optimizer
(coupled or decoupled, as in AdamW) lives in ``optimizers/weight_decay.py``.

The ½ in the L2 penalty: the gradient of (λ/2)·‖p‖² is λ·p, which is exactly the term that
coupled weight decay adds to the gradient (g ← g + λ·p, torch.optim's ``weight_decay=λ``).
So for SGD, ``loss + l2_penalty(params, λ)`` with ``weight_decay=0`` takes the same steps as
``loss`` with ``weight_decay=λ``. The equivalence is specific to coupled decay: decoupled
decay (AdamW) is not the gradient of any penalty once the update is rescaled by Adam.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn


def _check_coefficient(coefficient: float) -> None:
    if (
        isinstance(coefficient, bool)
        or not isinstance(coefficient, int | float)
        or not math.isfinite(coefficient)
        or coefficient < 0
    ):
        raise ValueError(f"coefficient must be a finite number >= 0, got {coefficient!r}")


def l1_penalty(params: Iterable[Tensor], coefficient: float) -> Tensor:
    """L1 penalty λ·Σᵢ|pᵢ| over every element of every tensor in ``params`` (lasso;
    Tibshirani 1996).

    Its gradient is λ·sign(p), with sign(0) = 0: autograd's subgradient at a zero weight.

    Args:
        params: the tensors to penalise, e.g. the first list of :func:`decay_parameters`.
        coefficient: λ ≥ 0.

    Returns:
        A scalar tensor (0 for no parameters) to add to the loss.
    """
    _check_coefficient(coefficient)
    total = sum((p.abs().sum() for p in params), start=torch.zeros(()))
    return coefficient * total


def l2_penalty(params: Iterable[Tensor], coefficient: float) -> Tensor:
    """L2 penalty (λ/2)·Σᵢ pᵢ² over every element of every tensor in ``params`` (ridge /
    Tikhonov; Krogh & Hertz 1991 for neural networks).

    The ½ makes the gradient λ·p, the same as coupled ``weight_decay=λ`` in torch.optim.SGD
    (see the module docstring).

    Args:
        params: the tensors to penalise, e.g. the first list of :func:`decay_parameters`.
        coefficient: λ ≥ 0.

    Returns:
        A scalar tensor (0 for no parameters) to add to the loss.
    """
    _check_coefficient(coefficient)
    total = sum((p.square().sum() for p in params), start=torch.zeros(()))
    return coefficient / 2 * total


def decay_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split a model's parameters into (decay, no_decay).

    ``decay`` holds the weight matrices and convolution kernels (``p.ndim >= 2``);
    ``no_decay`` holds biases and normalisation scales and shifts (``p.ndim < 2``), which
    are commonly left unpenalised: they are few, and shrinking them towards 0 constrains the
    function rather than its complexity. Shared parameters appear once, in
    ``model.parameters()`` order.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay
