"""Activation functions against torch.nn.functional and, in the tails, against 50-digit
references computed with mpmath."""

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optimizers.activations import ACTIVATIONS, Activation, build_activation

DTYPE = torch.float64

# name, settings, torch reference (same settings)
CASES = [
    ("relu", {}, F.relu),
    ("elu", {}, F.elu),
    ("elu", {"alpha": 0.3}, lambda x: F.elu(x, alpha=0.3)),
    ("leaky_relu", {}, F.leaky_relu),
    ("leaky_relu", {"negative_slope": 0.2}, lambda x: F.leaky_relu(x, negative_slope=0.2)),
    ("tanh", {}, torch.tanh),
    ("sigmoid", {}, torch.sigmoid),
    ("softmax", {}, lambda x: F.softmax(x, dim=-1)),
    ("softmax", {"dim": 0}, lambda x: F.softmax(x, dim=0)),
    ("gelu", {}, F.gelu),
    ("gelu", {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh")),
    ("silu", {}, F.silu),
]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in s.items()) for name, s, _ in CASES]


def value_and_gradient(function, x: torch.Tensor, upstream: torch.Tensor):
    x = x.clone().requires_grad_()
    y = function(x)
    (y * upstream).sum().backward()
    return y.detach(), x.grad


def moderate_inputs() -> torch.Tensor:
    # Rows of 7 so softmax has a real dimension to normalise over; exact 0 included.
    grid = torch.linspace(-4, 4, 301, dtype=DTYPE)
    noise = torch.rand(394, generator=torch.Generator().manual_seed(0), dtype=DTYPE) * 8 - 4
    tiny = torch.tensor([0.0, 1e-12, -1e-12, 1e-300, -1e-300], dtype=DTYPE)
    return torch.cat([grid, noise, tiny]).view(-1, 7)


@pytest.mark.parametrize(("name", "settings", "reference"), CASES, ids=CASE_IDS)
def test_values_and_gradients_match_torch(name, settings, reference) -> None:
    # Over |x| ≤ 4 torch's own formulas lose no precision, so rtol 1e-10 with no atol.
    x = moderate_inputs()
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    y, grad = value_and_gradient(build_activation(name, **settings), x, upstream)
    y_ref, grad_ref = value_and_gradient(reference, x, upstream)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=0.0)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=0.0)


mpmath.mp.dps = 50


def mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def mp_normal_cdf(x):
    # mpmath's erfc overflows past |x| ≈ 1e100; Φ(±100) is 0 or 1 far below float64's
    # resolution (Φ(−40) ≈ 4e-350 is already under the smallest subnormal).
    if abs(x) > 100:
        return mpmath.mpf(1 if x > 0 else 0)
    return mpmath.ncdf(x)


def mp_gelu_tanh_inner(x):
    return mpmath.sqrt(2 / mpmath.pi) * (x + mpmath.mpf("0.044715") * x**3)


# name, settings, value(x), derivative(x) at 50 digits
MP_REFERENCES = [
    ("relu", {}, lambda x: max(x, 0), lambda x: 1 if x > 0 else 0),
    (
        "elu",
        {},
        lambda x: x if x > 0 else mpmath.expm1(x),
        lambda x: 1 if x > 0 else mpmath.exp(x),
    ),
    (
        "leaky_relu",
        {},
        lambda x: x if x > 0 else x / 100,
        lambda x: 1 if x > 0 else mpmath.mpf(1) / 100,
    ),
    ("tanh", {}, mpmath.tanh, lambda x: mpmath.sech(x) ** 2),
    ("sigmoid", {}, mp_sigmoid, lambda x: mp_sigmoid(x) * mp_sigmoid(-x)),
    ("silu", {}, lambda x: x * mp_sigmoid(x), lambda x: mp_sigmoid(x) * (1 + x * mp_sigmoid(-x))),
    ("gelu", {}, lambda x: x * mp_normal_cdf(x), lambda x: mp_normal_cdf(x) + x * mpmath.npdf(x)),
    (
        "gelu",
        {"approximate": "tanh"},
        lambda x: x * mp_sigmoid(2 * mp_gelu_tanh_inner(x)),
        lambda x: (
            mp_sigmoid(2 * mp_gelu_tanh_inner(x))
            + x
            * mp_sigmoid(2 * mp_gelu_tanh_inner(x))
            * mp_sigmoid(-2 * mp_gelu_tanh_inner(x))
            * 2
            * mpmath.sqrt(2 / mpmath.pi)
            * (1 + 3 * mpmath.mpf("0.044715") * x**2)
        ),
    ),
]
LARGE = [5.0, 8.0, 12.0, 20.0, 40.0, 100.0, 700.0, 1e3, 1e10, 1e100, 1e300]


@pytest.mark.parametrize(
    ("name", "settings", "value", "derivative"),
    MP_REFERENCES,
    ids=[name + "".join(f"-{v}" for v in s.values()) for name, s, _, _ in MP_REFERENCES],
)
def test_large_magnitude_inputs_match_high_precision_reference(
    name, settings, value, derivative
) -> None:
    # In the tails torch's own formulas cancel (1 + erf, 1 − tanh², (1 − σ)·σ) and even give
    # NaN gradients (gelu tanh at 1e200), so the reference is the exact function at 50
    # digits. atol is the smallest normal float64: below it values are subnormal or 0.
    xs = [sign * magnitude for magnitude in LARGE for sign in (1.0, -1.0)]
    x = torch.tensor(xs, dtype=DTYPE)
    y, grad = value_and_gradient(build_activation(name, **settings), x, torch.ones_like(x))
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    expected_y = torch.tensor([float(value(mpmath.mpf(v))) for v in xs], dtype=DTYPE)
    expected_grad = torch.tensor([float(derivative(mpmath.mpf(v))) for v in xs], dtype=DTYPE)
    tiny = torch.finfo(DTYPE).tiny
    torch.testing.assert_close(y, expected_y, rtol=1e-10, atol=tiny)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=tiny)


def test_softmax_of_huge_logits_does_not_overflow() -> None:
    x = torch.tensor([[1000.0, 1001.0, 999.0], [-1e300, 0.0, 1e300]], dtype=DTYPE)
    y = build_activation("softmax", dim=1)(x)
    e = [math.exp(-1.0), 1.0, math.exp(-2.0)]
    expected = torch.tensor([[v / sum(e) for v in e], [0.0, 0.0, 1.0]], dtype=DTYPE)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(y, F.softmax(x, dim=1), rtol=1e-12, atol=0.0)


def test_sigmoid_and_tanh_saturate_without_overflow_warnings() -> None:
    x = torch.tensor([-1e308, -800.0, 800.0, 1e308, -math.inf, math.inf], dtype=DTYPE)
    assert build_activation("sigmoid")(x).tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert build_activation("tanh")(x).tolist() == [-1.0, -1.0, 1.0, 1.0, -1.0, 1.0]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_nan_propagates(name: str) -> None:
    x = torch.tensor([1.0, math.nan, -1.0], dtype=DTYPE)
    assert torch.isnan(build_activation(name)(x)).any()


def test_gradient_at_zero_matches_torch_conventions() -> None:
    x = torch.zeros(1, dtype=DTYPE)
    expected = {"relu": 0.0, "leaky_relu": 0.01, "elu": 1.0, "tanh": 1.0, "sigmoid": 0.25}
    for name, slope in expected.items():
        _, grad = value_and_gradient(build_activation(name), x, torch.ones_like(x))
        assert grad.item() == slope, name


def test_float32_stays_float32() -> None:
    x = torch.randn(4, 3)
    for name in ACTIVATIONS:
        assert build_activation(name)(x).dtype == torch.float32, name


def test_activation_is_a_module_with_a_readable_repr() -> None:
    model = nn.Sequential(nn.Linear(3, 3), build_activation("elu", alpha=0.5))
    assert "Activation('elu', alpha=0.5)" in repr(model)
    assert isinstance(Activation("relu"), nn.Module)


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        (
            "relux",
            {},
            "unknown activation 'relux' (did you mean 'relu'?); allowed: elu, gelu, "
            "leaky_relu, relu, sigmoid, silu, softmax, tanh",
        ),
        (
            "swishy_thing",
            {},
            "unknown activation 'swishy_thing'; allowed: elu, gelu, leaky_relu, relu, "
            "sigmoid, silu, softmax, tanh",
        ),
        ("relu", {"alpha": 1.0}, "activation 'relu' got unknown argument(s) alpha; allowed: none"),
        (
            "elu",
            {"negative_slope": 0.1},
            "activation 'elu' got unknown argument(s) negative_slope; allowed: alpha",
        ),
        (
            "gelu",
            {"approximate": "erf"},
            "gelu approximate must be one of none, tanh, got 'erf'",
        ),
    ],
)
def test_bad_names_and_arguments_are_rejected(name, settings, message) -> None:
    with pytest.raises(ValueError) as error:
        build_activation(name, **settings)
    assert str(error.value) == message
