"""Lion against a plain re-statement of the paper's algorithm (torch.optim has no Lion).

Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2:

    c_t = β1·m_{t−1} + (1 − β1)·g_t
    θ_t = θ_{t−1} − η·(sign(c_t) + λ·θ_{t−1})
    m_t = β2·m_{t−1} + (1 − β2)·g_t
"""

from typing import Any

import pytest
import torch

import optimizers
from optimizers import Lion

STEPS = 150
SHAPES = [(3, 4), (), (0,), (6,)]


def _paper_lion(
    thetas: list[torch.Tensor],
    grads_per_step: list[list[torch.Tensor]],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    decoupled: bool = True,
    maximize: bool = False,
) -> list[torch.Tensor]:
    """Algorithm 2, written out; ``decoupled=False`` instead adds λ·θ to the gradient."""
    thetas = [theta.clone() for theta in thetas]
    ms = [torch.zeros_like(theta) for theta in thetas]
    for grads in grads_per_step:
        for i, g in enumerate(grads):
            if maximize:
                g = -g
            if not decoupled:
                g = g + weight_decay * thetas[i]
            c = beta1 * ms[i] + (1 - beta1) * g
            if decoupled:
                thetas[i] = thetas[i] - lr * (torch.sign(c) + weight_decay * thetas[i])
            else:
                thetas[i] = thetas[i] - lr * torch.sign(c)
            ms[i] = beta2 * ms[i] + (1 - beta2) * g
    return thetas


def _inputs() -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    generator = torch.Generator().manual_seed(2023)
    params = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in SHAPES]
    grads = [
        [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in SHAPES]
        for _ in range(STEPS)
    ]
    return params, grads


def _run_lion(params: list[torch.Tensor], grads_per_step: list[list[torch.Tensor]], **hparams):
    params = [p.clone() for p in params]
    opt = Lion(params, **hparams)
    for grads in grads_per_step:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
    return params, opt


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


SETTINGS = {
    "paper-defaults": {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0},
    "decoupled-decay": {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 1.0},
    "other-betas": {"lr": 3e-3, "betas": (0.95, 0.98), "weight_decay": 0.1},
}


@pytest.mark.parametrize("foreach", [False, True], ids=["reference", "foreach"])
@pytest.mark.parametrize("settings", list(SETTINGS.values()), ids=list(SETTINGS))
def test_matches_the_papers_algorithm(settings: dict[str, Any], foreach: bool):
    params, grads = _inputs()
    ours, opt = _run_lion(params, grads, foreach=foreach, **settings)
    beta1, beta2 = settings["betas"]
    expected = _paper_lion(
        params, grads, lr=settings["lr"], beta1=beta1, beta2=beta2,
        weight_decay=settings["weight_decay"],
    )  # fmt: skip
    torch.testing.assert_close(_flat(ours), _flat(expected), rtol=1e-10, atol=0.0)
    assert sorted(opt.state[ours[0]]) == ["exp_avg"]


@pytest.mark.parametrize("foreach", [False, True], ids=["reference", "foreach"])
def test_coupled_decay_and_maximize_match_the_restatement(foreach: bool):
    params, grads = _inputs()
    ours, _ = _run_lion(
        params, grads, lr=1e-2, weight_decay=0.5, decoupled_weight_decay=False,
        maximize=True, foreach=foreach,
    )  # fmt: skip
    expected = _paper_lion(
        params, grads, lr=1e-2, beta1=0.9, beta2=0.99, weight_decay=0.5, decoupled=False,
        maximize=True,
    )  # fmt: skip
    torch.testing.assert_close(_flat(ours), _flat(expected), rtol=1e-10, atol=0.0)


def test_reference_and_foreach_kernels_agree_exactly():
    params, grads = _inputs()
    settings = {"lr": 1e-2, "weight_decay": 0.3, "betas": (0.8, 0.9)}
    reference, reference_opt = _run_lion(params, grads, foreach=False, **settings)
    foreach, foreach_opt = _run_lion(params, grads, foreach=True, **settings)
    assert torch.equal(_flat(reference), _flat(foreach))
    for p, q in zip(reference, foreach, strict=True):
        assert torch.equal(reference_opt.state[p]["exp_avg"], foreach_opt.state[q]["exp_avg"])


def test_every_coordinate_moves_by_exactly_the_learning_rate():
    # the update is a sign: its size does not depend on the gradient's scale
    param = torch.zeros(1000, dtype=torch.float64)
    opt = Lion([param], lr=0.25)
    param.grad = torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    param.grad[0] = 1e-30
    param.grad[1] = -1e30
    opt.step()
    assert torch.equal(param.abs(), torch.full_like(param, 0.25))
    assert torch.equal(param.sign(), -param.grad.sign())


def test_defaults_are_the_papers():
    opt = optimizers.build_optimizer("lion", [torch.zeros(2)])
    assert opt.defaults == {
        "lr": 1e-4,
        "betas": (0.9, 0.99),
        "weight_decay": 0.0,
        "maximize": False,
        "foreach": None,
        "decoupled_weight_decay": True,
    }
