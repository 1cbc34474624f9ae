"""L1/L2 penalties: values, gradients, the L2 ↔ coupled weight decay equivalence, and the
decay/no-decay parameter split."""

import pytest
import torch
from torch import nn

from optimizers.layers import BatchNorm1d
from optimizers.regularizers import decay_parameters, l1_penalty, l2_penalty

DTYPE = torch.float64


def tensors() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(4, 3, generator=generator, dtype=DTYPE).requires_grad_(),
        torch.randn(5, generator=generator, dtype=DTYPE).requires_grad_(),
        torch.tensor([0.0, -2.0, 3.0], dtype=DTYPE, requires_grad=True),
    ]


def test_l1_penalty_value_and_gradient() -> None:
    params = tensors()
    penalty = l1_penalty(params, 0.3)
    expected = 0.3 * sum(p.detach().abs().sum().item() for p in params)
    assert penalty.item() == pytest.approx(expected, rel=1e-14)
    penalty.backward()
    for p in params:
        # sign(0) = 0: a weight at exactly zero gets no push either way.
        torch.testing.assert_close(p.grad, 0.3 * torch.sign(p.detach()), rtol=1e-14, atol=0)
    assert params[2].grad[0].item() == 0.0


def test_l2_penalty_value_and_gradient_use_the_half_convention() -> None:
    params = tensors()
    penalty = l2_penalty(params, 0.3)
    expected = 0.3 / 2 * sum((p.detach() ** 2).sum().item() for p in params)
    assert penalty.item() == pytest.approx(expected, rel=1e-14)
    penalty.backward()
    for p in params:
        torch.testing.assert_close(p.grad, 0.3 * p.detach(), rtol=1e-14, atol=0)


def test_penalties_of_no_parameters_are_zero() -> None:
    assert l1_penalty([], 1.0).item() == 0.0
    assert l2_penalty(iter([]), 1.0).item() == 0.0


def test_penalties_accept_a_generator_and_keep_the_parameter_dtype() -> None:
    model = nn.Linear(3, 2).to(DTYPE)
    penalty = l2_penalty(model.parameters(), 0.1)
    assert penalty.dtype == DTYPE
    expected = 0.05 * (model.weight.detach().square().sum() + model.bias.detach().square().sum())
    torch.testing.assert_close(penalty.detach(), expected, rtol=1e-14, atol=0)


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).to(DTYPE)


def train(model, optimizer, penalty=None, steps: int = 25) -> None:
    generator = torch.Generator().manual_seed(2)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=generator, dtype=DTYPE)
        target = torch.randn(16, 3, generator=generator, dtype=DTYPE)
        optimizer.zero_grad()
        loss = (model(x) - target).square().mean()
        if penalty is not None:
            loss = loss + penalty(model)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    "sgd_settings", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}]
)
def test_l2_penalty_equals_coupled_weight_decay_in_sgd(sgd_settings) -> None:
    coefficient = 0.05
    penalised = make_model()
    train(
        penalised,
        torch.optim.SGD(penalised.parameters(), lr=0.1, **sgd_settings),
        penalty=lambda m: l2_penalty(m.parameters(), coefficient),
    )
    decayed = make_model()
    train(
        decayed,
        torch.optim.SGD(decayed.parameters(), lr=0.1, weight_decay=coefficient, **sgd_settings),
    )
    for p, p_decayed in zip(penalised.parameters(), decayed.parameters(), strict=True):
        torch.testing.assert_close(p, p_decayed, rtol=1e-12, atol=0)
    # And the penalty did something: training without it ends elsewhere.
    plain = make_model()
    train(plain, torch.optim.SGD(plain.parameters(), lr=0.1, **sgd_settings))
    assert not torch.allclose(plain[0].weight, decayed[0].weight, rtol=1e-6, atol=0)


def test_penalising_only_decay_parameters_equals_per_group_weight_decay() -> None:
    coefficient = 0.05
    penalised = make_model()
    decay, _ = decay_parameters(penalised)
    train(
        penalised,
        torch.optim.SGD(penalised.parameters(), lr=0.1),
        penalty=lambda m: l2_penalty(decay, coefficient),
    )
    grouped = make_model()
    decay_grouped, no_decay_grouped = decay_parameters(grouped)
    groups = [
        {"params": decay_grouped, "weight_decay": coefficient},
        {"params": no_decay_grouped, "weight_decay": 0.0},
    ]
    train(grouped, torch.optim.SGD(groups, lr=0.1))
    for p, p_grouped in zip(penalised.parameters(), grouped.parameters(), strict=True):
        torch.testing.assert_close(p, p_grouped, rtol=1e-12, atol=0)


def test_decay_parameters_splits_matrices_from_biases_and_norm_parameters() -> None:
    model = make_model()
    decay, no_decay = decay_parameters(model)
    assert [id(p) for p in decay] == [id(model[0].weight), id(model[3].weight)]
    assert [id(p) for p in no_decay] == [
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
        id(model[3].bias),
    ]


def test_decay_parameters_lists_a_shared_parameter_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    decay, no_decay = decay_parameters(model)
    assert len(decay) == 1 and len(no_decay) == 1


@pytest.mark.parametrize("coefficient", [-0.1, float("nan"), float("inf"), "0.1", None, True])
@pytest.mark.parametrize("penalty", [l1_penalty, l2_penalty])
def test_bad_coefficients_are_rejected(penalty, coefficient) -> None:
    with pytest.raises(ValueError) as error:
        penalty(tensors(), coefficient)
    assert str(error.value) == f"coefficient must be a finite number >= 0, got {coefficient!r}"
