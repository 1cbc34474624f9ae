"""Weight decay as two composable pieces, each with a per-tensor and a foreach form.

Notation: g = gradient, p = parameter, λ = weight_decay, lr = learning rate.

- Coupled ("L2") decay adds the gradient of (λ/2)·‖p‖² to the gradient before the
  algorithm sees it, so it flows through the algorithm's state (momentum, second moments):
  g ← g + λ·p. This is what torch.optim's ``weight_decay`` means unless it says otherwise.
- Decoupled decay (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization")
  shrinks the parameter directly before the algorithm's update, bypassing its state:
  p ← p·(1 − lr·λ). AdamW is Adam with this piece; every optimizer here accepts
  ``decoupled_weight_decay=True`` to use it.

Every optimizer calls :func:`apply` (reference path) or :func:`apply_foreach` (multi-tensor
path) once per step from :class:`optimizers.base.Optimizer`, so no algorithm carries its own
copy of these rules.
"""

import torch
from torch import Tensor


def add_decayed_weights(grad: Tensor, param: Tensor, weight_decay: float) -> Tensor:
    """Coupled decay: return g + λ·p as a new tensor (``grad`` is left untouched)."""
    return grad.add(param, alpha=weight_decay)


def add_decayed_weights_foreach(
    grads: list[Tensor], params: list[Tensor], weight_decay: float, *, in_place: bool
) -> list[Tensor]:
    """Coupled decay on lists: g + λ·p, in place only where ``grads`` are scratch copies."""
    if in_place:
        torch._foreach_add_(grads, params, alpha=weight_decay)
        return grads
    return torch._foreach_add(grads, params, alpha=weight_decay)


def decay_weights_(param: Tensor, lr: float, weight_decay: float) -> None:
    """Decoupled decay: p ← p·(1 − lr·λ), in place."""
    param.mul_(1 - lr * weight_decay)


def decay_weights_foreach_(params: list[Tensor], lr: float, weight_decay: float) -> None:
    """Decoupled decay on lists: p ← p·(1 − lr·λ), in place."""
    torch._foreach_mul_(params, 1 - lr * weight_decay)


def apply(
    grad: Tensor, param: Tensor, *, lr: float, weight_decay: float, decoupled: bool
) -> Tensor:
    """Apply the chosen decay to one parameter and return the gradient the algorithm uses."""
    if weight_decay == 0:
        return grad
    if decoupled:
        decay_weights_(param, lr, weight_decay)
        return grad
    return add_decayed_weights(grad, param, weight_decay)


def apply_foreach(
    grads: list[Tensor],
    params: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    decoupled: bool,
    grads_are_private: bool,
) -> list[Tensor]:
    """Apply the chosen decay to lists of parameters; return the gradients to use.

    ``grads_are_private`` says ``grads`` are scratch copies (e.g. negated for ``maximize``)
    that may be overwritten; otherwise they are the parameters' ``.grad`` tensors, which
    are never modified.
    """
    if weight_decay == 0:
        return grads
    if decoupled:
        decay_weights_foreach_(params, lr, weight_decay)
        return grads
    return add_decayed_weights_foreach(grads, params, weight_decay, in_place=grads_are_private)
