"""The workload registry, model families and their options, losses, metrics, augmentation."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from optimizers.activations import Activation
from optimizers.layers import BatchNorm1d, BatchNorm2d, Dropout
from services.workloads import WORKLOADS, get_workload, models
from services.workloads.augmentation import random_crop_flip
from services.workloads.objectives import ACCURACY, EXCESS_LOSS

EXPECTED = {
    "quadratic",
    "mnist1d-mlp",
    "mnist1d-cnn",
    "digits-mlp",
    "digits-cnn",
    "mnist-mlp",
    "mnist-cnn",
    "fashion-mnist-cnn",
    "cifar10-resnet",
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_holds_every_workload_of_the_issue() -> None:
    assert set(WORKLOADS) == EXPECTED


def test_unknown_workload_names_it_and_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown workload 'mnist2d'; allowed: quadratic, mnist1d"
    ):
        get_workload("mnist2d")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_model_maps_inputs_to_outputs_with_finite_loss(name: str) -> None:
    workload = get_workload(name)
    torch.manual_seed(0)
    model = workload.build_model(workload.resolve_model_options(None))
    x = torch.randn(4, *workload.input_shape)
    output = model(x)
    if workload.num_classes:
        assert output.shape == (4, workload.num_classes)
        y = torch.tensor([0, 1, 2, 3])
    else:
        assert output.shape == (4, *workload.input_shape)
        y = torch.zeros(4)
    loss = workload.loss(output, y)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    assert workload.metric.per_sample(output, y).shape == (4,)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_facts_are_json_and_consistent(name: str) -> None:
    facts = get_workload(name).facts()
    assert json.loads(json.dumps(facts)) == facts
    assert facts["direction"] in ("max", "min")
    assert facts["default_epochs"] >= 1 and facts["default_batch_size"] >= 1
    in_memory = {"quadratic", "mnist1d-mlp", "mnist1d-cnn", "digits-mlp", "digits-cnn"}
    assert facts["target_source"] == ("measured" if name in in_memory else "literature")


def test_unknown_model_option_lists_the_allowed_ones() -> None:
    with pytest.raises(
        ValueError, match=r"'depth' for workload 'digits-cnn'; allowed: activation"
    ):
        get_workload("digits-cnn").resolve_model_options({"depth": 2})
    with pytest.raises(ValueError, match=r"'width' for workload 'quadratic'; allowed: none"):
        get_workload("quadratic").resolve_model_options({"width": 2})


@pytest.mark.parametrize(
    ("option", "value"),
    [("dropout", 1.0), ("dropout", "0.1"), ("batch_norm", 1), ("width", 2.0), ("depth", True)],
)
def test_model_option_values_are_type_checked(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"model option {option} must be"):
        get_workload("mnist1d-mlp").resolve_model_options({option: value})


def test_mlp_options_build_our_layers() -> None:
    workload = get_workload("digits-mlp")
    options = workload.resolve_model_options(
        {"activation": "elu", "dropout": 0.3, "batch_norm": True, "width": 32, "depth": 3}
    )
    model = workload.build_model(options)
    layers = list(model.modules())
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [32, 32, 32, 10]
    assert sum(isinstance(m, BatchNorm1d) for m in layers) == 3
    assert [m.p for m in layers if isinstance(m, Dropout)] == [0.3] * 3
    assert {m.name for m in layers if isinstance(m, Activation)} == {"elu"}
    assert not any(isinstance(m, nn.Dropout | nn.BatchNorm1d | nn.ReLU) for m in layers)


def test_cnn_options_build_our_layers() -> None:
    workload = get_workload("mnist-cnn")
    options = workload.resolve_model_options({"batch_norm": True, "dropout": 0.5, "width": 8})
    layers = list(workload.build_model(options).modules())
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [8, 16]
    assert sum(isinstance(m, BatchNorm2d) for m in layers) == 2
    assert sum(isinstance(m, Dropout) for m in layers) == 2


def test_without_options_there_is_no_dropout_or_batch_norm() -> None:
    workload = get_workload("digits-cnn")
    layers = list(workload.build_model(workload.resolve_model_options({})).modules())
    assert not any(isinstance(m, Dropout | BatchNorm1d | BatchNorm2d) for m in layers)


def test_mnist1d_models_match_the_paper() -> None:
    # Greydanus 2020: MLP 40-100-100-10, ConvBase 3 conv layers of 25 channels + linear(125).
    mlp = get_workload("mnist1d-mlp")
    cnn = get_workload("mnist1d-cnn")
    assert n_params(mlp.build_model(mlp.resolve_model_options({}))) == (
        40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    )
    conv = cnn.build_model(cnn.resolve_model_options({}))
    assert n_params(conv) == (1 * 25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10)


def test_resnet20_has_the_papers_size_and_depth_is_checked() -> None:
    workload = get_workload("cifar10-resnet")
    model = workload.build_model(workload.resolve_model_options({}))
    assert 0.26e6 < n_params(model) < 0.28e6  # ResNet-20: 0.27 M (He et al. 2016, table 6)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 19  # + the linear = 20
    deeper = workload.build_model(workload.resolve_model_options({"depth": 32}))
    assert sum(isinstance(m, nn.Conv2d) for m in deeper.modules()) == 31
    with pytest.raises(ValueError, match="depth must be 6n \\+ 2"):
        workload.build_model(workload.resolve_model_options({"depth": 21}))


def test_resnet_without_batch_norm_has_no_norm_layers() -> None:
    workload = get_workload("cifar10-resnet")
    model = workload.build_model(workload.resolve_model_options({"batch_norm": False}))
    assert not any(isinstance(m, BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_quadratic_model_loss_is_the_noisy_quadratic() -> None:
    model = models.QuadraticModel((3,), 0)
    with torch.no_grad():
        model.theta.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    floor_share = torch.tensor([0.5, 0.0])
    h = torch.tensor([1.0, 1 / 2, 1 / 3])
    expected = 0.5 * ((torch.tensor([1.0, 2.0, 3.0]) - x) ** 2 * h).sum(1) - floor_share
    torch.testing.assert_close(EXCESS_LOSS.per_sample(model(x), floor_share), expected)


def test_metric_direction() -> None:
    assert ACCURACY.reached(0.9, 0.9) and not ACCURACY.reached(0.89, 0.9)
    assert EXCESS_LOSS.reached(0.1, 0.1) and not EXCESS_LOSS.reached(0.11, 0.1)


def test_accuracy_counts_arg_max_hits() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    labels = torch.tensor([0, 1, 1])
    assert ACCURACY.per_sample(logits, labels).tolist() == [1.0, 1.0, 0.0]


def test_crop_flip_yields_windows_of_the_padded_image() -> None:
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(images, generator, padding=2)
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):
        windows = [
            padded[i, :, top : top + 6, left : left + 6] for top in range(5) for left in range(5)
        ]
        candidates = windows + [w.flip(2) for w in windows]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_crop_flip_is_seeded_and_varies() -> None:
    images = torch.randn(64, 3, 8, 8)
    first = random_crop_flip(images, torch.Generator().manual_seed(1))
    again = random_crop_flip(images, torch.Generator().manual_seed(1))
    other = random_crop_flip(images, torch.Generator().manual_seed(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, images)


def test_crop_flip_without_padding_only_flips() -> None:
    images = torch.randn(200, 1, 4, 4)
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=0)
    same = (out == images).flatten(1).all(1)
    flipped = (out == images.flip(3)).flatten(1).all(1)
    assert bool((same | flipped).all())
    assert 60 < int(flipped.sum()) < 140  # about half of them
