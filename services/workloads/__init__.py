"""The workloads by name: dataset, model family, loss, metric and target of each benchmark.

``get_workload(name)`` is the only way in; it rejects unknown names with a ``ValueError``
that lists the known ones. Targets and defaults are documented, with the runs that set them,
in docs/WORKLOADS.md.
"""

from __future__ import annotations

from pathlib import Path

from services.workloads import models
from services.workloads.augmentation import random_crop_flip
from services.workloads.datasets import Dataset, Split, data_root, digits, mnist1d, noisy_quadratic
from services.workloads.files import (
    FASHION_MNIST,
    MNIST,
    DataFileMissing,
    read_cifar10,
    read_idx_dataset,
)
from services.workloads.objectives import (
    ACCURACY,
    EXCESS_LOSS,
    cross_entropy,
    quadratic_excess_loss,
)
from services.workloads.workload import Workload

__all__ = [
    "WORKLOADS",
    "DataFileMissing",
    "Dataset",
    "Split",
    "Workload",
    "data_root",
    "get_workload",
]

# Where a target comes from (the runs or the papers are in docs/WORKLOADS.md).
MEASURED = "measured"  # runs made here
LITERATURE = "literature"  # the data is not available here: from published results


def _quadratic(root: Path, download: bool) -> Dataset:
    return noisy_quadratic()


def _mnist1d(root: Path, download: bool) -> Dataset:
    return mnist1d(cache_dir=root)


def _digits(root: Path, download: bool) -> Dataset:
    return digits()


def _mnist(root: Path, download: bool) -> Dataset:
    return read_idx_dataset(MNIST, root, download)


def _fashion_mnist(root: Path, download: bool) -> Dataset:
    return read_idx_dataset(FASHION_MNIST, root, download)


# Defaults of the options every model family but the quadratic takes.
COMMON_OPTIONS = {"activation": "relu", "dropout": 0.0, "batch_norm": False}

_ALL = (
    Workload(
        name="quadratic",
        description="noisy quadratic model (Zhang et al. 2019), 100 dims, h_i = 1/i",
        load=_quadratic,
        input_shape=(100,),
        num_classes=0,
        model_family="quadratic",
        model=models.QuadraticModel,
        model_defaults={},
        loss=quadratic_excess_loss,
        metric=EXCESS_LOSS,
        target=0.04,
        target_source=MEASURED,
        default_epochs=20,
        default_batch_size=128,
    ),
    Workload(
        name="mnist1d-mlp",
        description="MNIST-1D (Greydanus 2020), MLP 40-100-100-10 (mnist1d's MLPBase)",
        load=_mnist1d,
        input_shape=(40,),
        num_classes=10,
        model_family="mlp",
        model=models.MLP,
        model_defaults={**COMMON_OPTIONS, "width": 100, "depth": 2},
        loss=cross_entropy,
        metric=ACCURACY,
        target=0.62,
        target_source=MEASURED,
        default_epochs=60,
        default_batch_size=100,
    ),
    Workload(
        name="mnist1d-cnn",
        description="MNIST-1D (Greydanus 2020), the paper's 3-layer 1-D CNN (25 channels)",
        load=_mnist1d,
        input_shape=(40,),
        num_classes=10,
        model_family="cnn1d",
        model=models.MNIST1DConvNet,
        model_defaults={**COMMON_OPTIONS, "width": 25},
        loss=cross_entropy,
        metric=ACCURACY,
        target=0.9,
        target_source=MEASURED,
        default_epochs=60,
        default_batch_size=100,
    ),
    Workload(
        name="digits-mlp",
        description="scikit-learn 8x8 digits, MLP 64-128-128-10",
        load=_digits,
        input_shape=(1, 8, 8),
        num_classes=10,
        model_family="mlp",
        model=models.MLP,
        model_defaults={**COMMON_OPTIONS, "width": 128, "depth": 2},
        loss=cross_entropy,
        metric=ACCURACY,
        target=0.96,
        target_source=MEASURED,
        default_epochs=30,
        default_batch_size=64,
    ),
    Workload(
        name="digits-cnn",
        description="scikit-learn 8x8 digits, CNN with 16 and 32 channels",
        load=_digits,
        input_shape=(1, 8, 8),
        num_classes=10,
        model_family="cnn",
        model=models.ConvNet,
        model_defaults={**COMMON_OPTIONS, "width": 16},
        loss=cross_entropy,
        metric=ACCURACY,
        target=0.975,
        target_source=MEASURED,
        default_epochs=40,
        default_batch_size=64,
    ),
    Workload(
        name="mnist-mlp",
        description="MNIST (IDX files), MLP 784-512-512-10",
        load=_mnist,
        input_shape=(1, 28, 28),
        num_classes=10,
        model_family="mlp",
        model=models.MLP,
        model_defaults={**COMMON_OPTIONS, "width": 512, "depth": 2},
        loss=cross_entropy,
        metric=ACCURACY,
        target=0.98,
        target_source=LITERATURE,
        default_epochs=20,
        default_batch_size=128,
    ),
    Workload(
        name="mnist-cnn",
        description="MNIST (IDX files), CNN with 32 and 64 channels",
        load=_mnist,
        input_shape=(1, 28, 28),
        num_classes=10,
        model_family="cnn",
        model=models.ConvNet,
        model_defaults={**COMMON_OPTIONS, "width": 32},
        loss=cross_entropy,
        metric=ACCURACY,
        target=0.99,
        target_source=LITERATURE,
        default_epochs=15,
        default_batch_size=128,
    ),
    Workload(
        name="fashion-mnist-cnn",
        description="Fashion-MNIST (IDX files), CNN with 32 and 64 channels",
        load=_fashion_mnist,
        input_shape=(1, 28, 28),
        num_classes=10,
        model_family="cnn",
        model=models.ConvNet,
        model_defaults={**COMMON_OPTIONS, "width": 32},
        loss=cross_entropy,
        metric=ACCURACY,
        target=0.91,
        target_source=LITERATURE,
        default_epochs=20,
        default_batch_size=128,
    ),
    Workload(
        name="cifar10-resnet",
        description="CIFAR-10 (python batches), ResNet-20 (He et al. 2016), crop+flip",
        load=read_cifar10,
        input_shape=(3, 32, 32),
        num_classes=10,
        model_family="resnet",
        model=models.CifarResNet,
        model_defaults={**COMMON_OPTIONS, "batch_norm": True, "width": 16, "depth": 20},
        loss=cross_entropy,
        metric=ACCURACY,
        target=0.9,
        target_source=LITERATURE,
        default_epochs=182,
        default_batch_size=128,
        augment=random_crop_flip,
    ),
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in _ALL}


def get_workload(name: str) -> Workload:
    """The workload called ``name``; ``ValueError`` naming it and the known ones otherwise."""
    try:
        return WORKLOADS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown workload {name!r}; allowed: {', '.join(WORKLOADS)}") from None
