"""Activation functions by name, written from their formulas.

Each function is numerically stable over the whole float range: exponentials are only ever
taken of non-positive numbers (so they cannot overflow), ``expm1``/``erfc`` are used where
``exp(x) − 1`` or ``1 + erf(x)`` would cancel, and softmax subtracts the maximum first.
Autograd differentiates the formulas; the gradients stay finite wherever the values are.

``build_activation(name, **kwargs)`` returns an :class:`Activation` module for a model
definition; ``ACTIVATIONS`` maps each name to its function.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


def _expm1(x: Tensor) -> Tensor:
    """eˣ − 1 with full relative precision in both the value and the gradient.

    The value comes from expm1 (exp(x) − 1 cancels near 0); the gradient comes from
    exp(x) − 1, because torch's expm1 backward computes eˣ as expm1(x) + 1, which cancels
    for x ≪ 0 (at x = −20 only 8 significant digits of the gradient survive). Both terms of
    the sum are within a few ulps of the result, so the sum keeps expm1's precision.
    """
    rough = torch.exp(x) - 1
    return rough + (torch.expm1(x) - rough).detach()


def relu(x: Tensor) -> Tensor:
    """Rectified linear unit: max(x, 0) (Nair & Hinton 2010). The gradient at 0 is 0."""
    return torch.where(x <= 0, 0.0, x)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """Leaky ReLU: x for x > 0, negative_slope·x otherwise (Maas et al. 2013)."""
    return torch.where(x > 0, x, x * negative_slope)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """Exponential linear unit: x for x > 0, alpha·(eˣ − 1) otherwise (Clevert et al. 2016)."""
    # Clamping keeps the unused branch from overflowing for large positive x, which would
    # turn its zero gradient into 0·inf = NaN.
    return torch.where(x > 0, x, alpha * _expm1(x.clamp(max=0.0)))


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid: 1 / (1 + e⁻ˣ).

    Computed as 1/(1 + z) for x ≥ 0 and z/(1 + z) for x < 0 with z = e^(−|x|) ≤ 1, so no
    exponential overflows however large |x| is.
    """
    positive = x >= 0
    z = torch.exp(-torch.where(positive, x, -x))
    return torch.where(positive, 1 / (1 + z), z / (1 + z))


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent: (eˣ − e⁻ˣ) / (eˣ + e⁻ˣ).

    Computed as sign(x)·(1 − e^(−2|x|)) / (1 + e^(−2|x|)), with e^(−2|x|) − 1 from
    :func:`_expm1` so that small |x| keeps full relative precision and large |x| cannot
    overflow.
    """
    positive = x >= 0
    # Not x.abs(): its gradient at 0 is 0, which would make tanh'(0) = 0 instead of 1.
    decay = _expm1(-2 * torch.where(positive, x, -x))
    magnitude = -decay / (2 + decay)
    return torch.where(positive, magnitude, -magnitude)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Softmax along ``dim``: e^(xᵢ) / Σⱼ e^(xⱼ).

    The maximum is subtracted first (softmax is shift invariant), so the largest exponent
    is e⁰ = 1 and nothing overflows. The shift is detached: its gradient is exactly zero in
    theory, and leaving it out of the graph keeps rounding noise out of the gradient.
    """
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    exponentials = torch.exp(shifted)
    return exponentials / exponentials.sum(dim=dim, keepdim=True)


def silu(x: Tensor) -> Tensor:
    """Sigmoid linear unit (swish): x·sigmoid(x) (Hendrycks & Gimpel 2016; Ramachandran et
    al. 2017)."""
    return x * sigmoid(x)


_GELU_TANH_CLAMP = 1e100
GELU_APPROXIMATIONS = ("none", "tanh")


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit: x·Φ(x), Φ the standard normal CDF (Hendrycks & Gimpel
    2016, "Gaussian Error Linear Units (GELUs)").

    ``approximate="none"``: x·Φ(x) = ½·x·erfc(−x/√2). erfc instead of 1 + erf(x/√2) keeps
    the left tail accurate where 1 + erf cancels.

    ``approximate="tanh"``: ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), computed as the equal
    x·sigmoid(2·√(2/π)·(x + 0.044715·x³)), which does not cancel in the left tail either.
    """
    if approximate == "none":
        return 0.5 * x * torch.erfc(-x / math.sqrt(2.0))
    if approximate == "tanh":
        # Past |x| = 1e100 the sigmoid is exactly 0 or 1; clamping the cubic's input there
        # keeps x³ finite so its gradient is 0·finite instead of 0·inf = NaN.
        x_inner = x.clamp(-_GELU_TANH_CLAMP, _GELU_TANH_CLAMP)
        inner = math.sqrt(2.0 / math.pi) * (x_inner + 0.044715 * x_inner**3)
        return x * sigmoid(2 * inner)
    raise ValueError(
        f"gelu approximate must be one of {', '.join(GELU_APPROXIMATIONS)}, got {approximate!r}"
    )


ACTIVATIONS: dict[str, Callable[..., Tensor]] = {
    "relu": relu,
    "elu": elu,
    "leaky_relu": leaky_relu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "softmax": softmax,
    "gelu": gelu,
    "silu": silu,
}


def _allowed_arguments(function: Callable[..., Tensor]) -> list[str]:
    # Every activation takes the input first; the rest are its settings.
    return list(inspect.signature(function).parameters)[1:]


class Activation(nn.Module):
    """An activation function from :data:`ACTIVATIONS` as a module, with fixed settings.

    Args:
        name: a key of :data:`ACTIVATIONS`.
        **kwargs: the function's settings, e.g. ``alpha`` for elu, ``dim`` for softmax.

    Raises:
        ValueError: for an unknown name (the message lists the names and suggests the
            nearest) or an argument the function does not take.
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__()
        if name not in ACTIVATIONS:
            nearest = difflib.get_close_matches(str(name), ACTIVATIONS, n=1)
            hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
            raise ValueError(
                f"unknown activation {name!r}{hint}; allowed: {', '.join(sorted(ACTIVATIONS))}"
            )
        function = ACTIVATIONS[name]
        allowed_arguments = _allowed_arguments(function)
        unknown = sorted(set(kwargs) - set(allowed_arguments))
        if unknown:
            allowed = ", ".join(allowed_arguments) or "none"
            raise ValueError(
                f"activation {name!r} got unknown argument(s) {', '.join(unknown)}; "
                f"allowed: {allowed}"
            )
        if name == "gelu" and kwargs.get("approximate", "none") not in GELU_APPROXIMATIONS:
            # Fail at model construction rather than at the first forward pass.
            raise ValueError(
                f"gelu approximate must be one of {', '.join(GELU_APPROXIMATIONS)}, "
                f"got {kwargs['approximate']!r}"
            )
        self.name = name
        self.function = function
        self.kwargs = kwargs

    def forward(self, x: Tensor) -> Tensor:
        return self.function(x, **self.kwargs)

    def extra_repr(self) -> str:
        settings = "".join(f", {key}={value!r}" for key, value in self.kwargs.items())
        return f"{self.name!r}{settings}"


def build_activation(name: str, **kwargs: Any) -> Activation:
    """Build the activation ``name`` from :data:`ACTIVATIONS` with its settings ``kwargs``.

    Example: ``build_activation("leaky_relu", negative_slope=0.2)``.
    """
    return Activation(name, **kwargs)
