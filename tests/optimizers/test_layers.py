"""Dropout and BatchNorm1d/2d against their definitions and against torch.nn."""

import math

import pytest
import torch
from torch import nn

from optimizers.layers import BatchNorm1d, BatchNorm2d, Dropout

DTYPE = torch.float64
RTOL = 1e-10


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=0.0)


# ---------------------------------------------------------------- Dropout


def nonzero_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    # No exact zeros, so (output != 0) recovers the mask.
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator, dtype=DTYPE) + 0.5) * (
        torch.randint(0, 2, shape, generator=generator) * 2 - 1
    )


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_output_is_input_times_mask_over_keep_probability(p: float) -> None:
    x = nonzero_input((64, 33))
    torch.manual_seed(1)
    y = Dropout(p)(x)
    mask = (y != 0).to(DTYPE)
    assert_close(y, x * mask / (1 - p))
    assert 0 < mask.sum() < mask.numel()


def test_dropout_mask_is_reproducible_from_the_seed() -> None:
    x = nonzero_input((50, 20))
    torch.manual_seed(3)
    first = Dropout(0.3)(x)
    torch.manual_seed(3)
    second = Dropout(0.3)(x)
    assert torch.equal(first, second)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_preserves_the_mean_and_drops_a_fraction_p(p: float) -> None:
    n = 200_000
    x = torch.full((n,), 3.0, dtype=DTYPE)
    torch.manual_seed(4)
    y = Dropout(p)(x)
    # Each output is 3/(1-p) with probability 1-p, else 0: variance 9·p/(1-p) per element.
    standard_error_of_mean = math.sqrt(9.0 * p / (1 - p) / n)
    assert abs(y.mean().item() - 3.0) < 5 * standard_error_of_mean
    dropped = (y == 0).to(DTYPE).mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_dropout_gradient_flows_only_through_kept_units() -> None:
    p = 0.4
    x = nonzero_input((40, 25)).requires_grad_()
    torch.manual_seed(5)
    y = Dropout(p)(x)
    upstream = torch.linspace(-1, 1, y.numel(), dtype=DTYPE).view_as(y)
    (y * upstream).sum().backward()
    mask = (y.detach() != 0).to(DTYPE)
    assert_close(x.grad, upstream * mask / (1 - p))
    assert torch.all(x.grad[mask == 0] == 0)


def test_dropout_is_identity_in_eval_mode() -> None:
    x = nonzero_input((10, 10))
    layer = Dropout(0.7).eval()
    assert layer(x) is x


def test_dropout_p_zero_is_identity_and_p_one_is_zeros_in_training() -> None:
    x = nonzero_input((10, 10)).requires_grad_()
    assert torch.equal(Dropout(0.0)(x), x)
    y = Dropout(1.0)(x)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_dropout_inplace_overwrites_the_input() -> None:
    x = nonzero_input((30, 30))
    original = x.clone()
    torch.manual_seed(6)
    y = Dropout(0.5, inplace=True)(x)
    assert y.data_ptr() == x.data_ptr()
    mask = (y != 0).to(DTYPE)
    assert_close(y, original * mask / 0.5)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True])
def test_dropout_rejects_p_outside_zero_one(p: object) -> None:
    with pytest.raises(ValueError, match=r"dropout probability p must be a number in \[0, 1\]"):
        Dropout(p)  # type: ignore[arg-type]


def test_dropout_repr_matches_torch() -> None:
    assert repr(Dropout(0.25)) == repr(nn.Dropout(0.25))


# ---------------------------------------------------------------- BatchNorm

BATCHNORM_CASES = [
    (BatchNorm1d, nn.BatchNorm1d, (16, 5)),
    (BatchNorm1d, nn.BatchNorm1d, (8, 5, 7)),
    (BatchNorm2d, nn.BatchNorm2d, (4, 5, 6, 3)),
]
SETTINGS = [
    {},
    {"momentum": 0.3, "eps": 1e-3},
    {"momentum": None},
    {"affine": False},
    {"bias": False},
    {"track_running_stats": False},
]


def make_pair(ours_cls, torch_cls, settings):
    ours = ours_cls(5, dtype=DTYPE, **settings)
    reference = torch_cls(5, dtype=DTYPE, **settings)
    # Non-trivial γ and β, the same in both layers.
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p, p_ref in zip(ours.parameters(), reference.parameters(), strict=True):
            p.copy_(torch.randn(5, generator=generator, dtype=DTYPE))
            p_ref.copy_(p)
    return ours, reference


def run_both(ours, reference, x):
    """Forward and backward through both layers; returns outputs and gradients."""
    results = []
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(8), dtype=DTYPE)
    for layer in (ours, reference):
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * upstream).sum().backward()
        grads = [xi.grad] + [p.grad for p in layer.parameters()]
        results.append((y.detach(), grads))
    return results


def assert_same_state(ours, reference):
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert list(ours_state) == list(reference_state)
    for key, value in reference_state.items():
        assert ours_state[key].dtype == value.dtype, key
        if value.is_floating_point():
            assert_close(ours_state[key], value)
        else:
            assert torch.equal(ours_state[key], value), key


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), BATCHNORM_CASES)
@pytest.mark.parametrize("settings", SETTINGS)
def test_batchnorm_matches_torch_over_train_steps_then_eval(
    ours_cls, torch_cls, shape, settings
) -> None:
    ours, reference = make_pair(ours_cls, torch_cls, settings)
    generator = torch.Generator().manual_seed(9)
    for step in range(4):
        x = torch.randn(shape, generator=generator, dtype=DTYPE) * (step + 1) + step
        (y, grads), (y_ref, grads_ref) = run_both(ours, reference, x)
        assert_close(y, y_ref)
        for g, g_ref in zip(grads, grads_ref, strict=True):
            assert_close(g, g_ref)
        assert_same_state(ours, reference)
    ours.eval()
    reference.eval()
    x = torch.randn(shape, generator=generator, dtype=DTYPE) * 2 - 1
    (y, grads), (y_ref, grads_ref) = run_both(ours, reference, x)
    assert_close(y, y_ref)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert_close(g, g_ref)
    assert_same_state(ours, reference)


def test_batchnorm_running_var_uses_unbiased_and_output_uses_biased_variance() -> None:
    x = torch.tensor([[1.0], [2.0], [4.0], [9.0]], dtype=DTYPE)
    layer = BatchNorm1d(1, momentum=1.0, affine=False, eps=0.0, dtype=DTYPE)
    y = layer(x)
    assert_close(layer.running_mean, x.mean(0))
    assert_close(layer.running_var, x.var(0, unbiased=True))
    assert_close(y, (x - x.mean()) / x.var(unbiased=False).sqrt())


def test_batchnorm_momentum_none_is_cumulative_average_of_batch_statistics() -> None:
    layer = BatchNorm1d(3, momentum=None, dtype=DTYPE)
    generator = torch.Generator().manual_seed(10)
    batches = [torch.randn(6, 3, generator=generator, dtype=DTYPE) + i for i in range(5)]
    for x in batches:
        layer(x)
    assert_close(layer.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0))
    assert_close(layer.running_var, torch.stack([x.var(0) for x in batches]).mean(0))
    assert layer.num_batches_tracked.item() == 5


def test_batchnorm_eval_uses_running_statistics() -> None:
    layer = BatchNorm2d(2, dtype=DTYPE)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([1.0, -2.0]))
        layer.running_var.copy_(torch.tensor([4.0, 0.25]))
        layer.weight.copy_(torch.tensor([2.0, 3.0]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
    layer.eval()
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(11), dtype=DTYPE)
    mean = torch.tensor([1.0, -2.0], dtype=DTYPE).view(1, 2, 1, 1)
    var = torch.tensor([4.0, 0.25], dtype=DTYPE).view(1, 2, 1, 1)
    weight = torch.tensor([2.0, 3.0], dtype=DTYPE).view(1, 2, 1, 1)
    bias = torch.tensor([0.5, -0.5], dtype=DTYPE).view(1, 2, 1, 1)
    assert_close(layer(x), (x - mean) / torch.sqrt(var + 1e-5) * weight + bias)
    assert layer.num_batches_tracked.item() == 0


@pytest.mark.parametrize(("ours_cls", "torch_cls", "shape"), BATCHNORM_CASES)
def test_batchnorm_state_dict_loads_into_torch_and_back(ours_cls, torch_cls, shape) -> None:
    ours, _ = make_pair(ours_cls, torch_cls, {})
    ours(torch.randn(shape, generator=torch.Generator().manual_seed(12), dtype=DTYPE))
    fresh_torch = torch_cls(5, dtype=DTYPE)
    fresh_torch.load_state_dict(ours.state_dict())
    assert_same_state(ours, fresh_torch)
    fresh_ours = ours_cls(5, dtype=DTYPE)
    fresh_ours.load_state_dict(fresh_torch.state_dict())
    assert_same_state(fresh_ours, fresh_torch)


def test_batchnorm_without_running_stats_has_no_buffers() -> None:
    layer = BatchNorm1d(4, track_running_stats=False, affine=False)
    assert layer.running_mean is None and layer.running_var is None
    assert layer.num_batches_tracked is None
    assert layer.state_dict() == {}
    assert list(layer.parameters()) == []


def test_batchnorm_reset_methods() -> None:
    layer = BatchNorm1d(3, dtype=DTYPE)
    layer(torch.randn(8, 3, generator=torch.Generator().manual_seed(13), dtype=DTYPE) + 5)
    with torch.no_grad():
        layer.weight.mul_(3.0).add_(1.0)
        layer.bias.add_(2.0)
    layer.reset_running_stats()
    assert torch.equal(layer.running_mean, torch.zeros(3, dtype=DTYPE))
    assert torch.equal(layer.running_var, torch.ones(3, dtype=DTYPE))
    assert layer.num_batches_tracked.item() == 0
    assert torch.equal(layer.weight, torch.full((3,), 4.0, dtype=DTYPE))
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(3, dtype=DTYPE))
    assert torch.equal(layer.bias, torch.zeros(3, dtype=DTYPE))


@pytest.mark.parametrize("settings", SETTINGS)
def test_batchnorm_constructor_and_repr_match_torch(settings) -> None:
    pairs = [(BatchNorm1d(7, **settings), nn.BatchNorm1d(7, **settings))]
    pairs.append((BatchNorm2d(3, **settings), nn.BatchNorm2d(3, **settings)))
    for ours, reference in pairs:
        assert repr(ours).split("(", 1)[1] == repr(reference).split("(", 1)[1]
        assert [(n, p.shape, p.dtype) for n, p in ours.named_parameters()] == [
            (n, p.shape, p.dtype) for n, p in reference.named_parameters()
        ]
        assert list(ours.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (BatchNorm1d(3), (2, 3, 4, 5), r"BatchNorm1d expected 2D or 3D input, got 4D input"),
        (BatchNorm1d(3), (3,), r"BatchNorm1d expected 2D or 3D input, got 1D input"),
        (BatchNorm2d(3), (2, 3, 4), r"BatchNorm2d expected 4D input, got 3D input"),
        (BatchNorm2d(3), (2, 4, 5, 5), r"BatchNorm2d expected 3 channels in dimension 1"),
        (BatchNorm1d(3), (1, 3), r"expected more than 1 value per channel"),
    ],
)
def test_batchnorm_rejects_bad_input_shapes(layer, shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        layer(torch.zeros(shape))


def test_batchnorm_single_sample_is_allowed_in_eval_mode() -> None:
    layer = BatchNorm1d(3).eval()
    x = torch.randn(1, 3)
    assert torch.allclose(layer(x), x / math.sqrt(1 + 1e-5))
