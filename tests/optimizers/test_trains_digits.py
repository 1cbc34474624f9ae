"""Each optimizer, at its default settings, trains a real model to a sensible accuracy.

The model is multinomial logistic regression on sklearn's 8×8 digits (standardized with the
training set's statistics, a stratified 75/25 split), trained on minibatches of 32 for a
fixed number of steps and scored on the held-out quarter.
"""

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import optimizers

BATCH_SIZE = 32
# steps at each optimizer's default settings and the held-out accuracy it must reach; the
# comment gives the lowest accuracy measured over seeds 0, 1 and 2. sgd (lr 1e-3) and lion
# (lr 1e-4) take small steps by default, so they get more of them and sgd a lower bar.
BUDGETS = {
    "rmsprop": (200, 0.90),  # 0.960
    "nadam": (400, 0.90),  # 0.942
    "adam": (600, 0.90),  # 0.938
    "adamw": (600, 0.90),  # 0.938
    "amsgrad": (600, 0.90),  # 0.938
    "adagrad": (600, 0.90),  # 0.927
    "momentum": (600, 0.90),  # 0.916
    "nesterov": (600, 0.90),  # 0.916
    "lion": (2500, 0.90),  # 0.924
    "sgd": (3000, 0.85),  # 0.887
}


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread():
    """Train on one thread in this module only: the model is too small to gain from more,
    and on a shared machine their synchronisation makes each step several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0  # pixels that are always blank in the training set
    return (
        torch.tensor((x_train - mean) / std, dtype=torch.float32),
        torch.tensor(y_train),
        torch.tensor((x_test - mean) / std, dtype=torch.float32),
        torch.tensor(y_test),
    )


def test_every_optimizer_has_a_budget():
    assert set(BUDGETS) == set(optimizers.OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_trains_logistic_regression_on_digits_with_default_settings(name: str, digits):
    x_train, y_train, x_test, y_test = digits
    steps, min_accuracy = BUDGETS[name]
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    opt = optimizers.build_optimizer(name, model.parameters())
    generator = torch.Generator().manual_seed(0)

    step = 0
    while step < steps:
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            opt.step()
            step += 1
            if step == steps:
                break

    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    assert accuracy >= min_accuracy
