"""Fixtures for the service tests: data directories with tiny files in the standard formats
(written by ``dataset_fixtures``), the generated MNIST-1D cache, and one real MLflow tracking
server per session (``mlflow_server``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_fixtures import write_cifar10, write_idx_set
from mlflow_server import mlflow_server  # noqa: F401 (a session fixture shared by modules)

from services.workloads.datasets import mnist1d


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory with tiny MNIST (gzip), Fashion-MNIST (raw) and CIFAR-10 files."""
    write_idx_set(tmp_path / "mnist", seed=1, compress=True)
    write_idx_set(tmp_path / "fashion-mnist", seed=2, compress=False)
    write_cifar10(tmp_path / "cifar-10-batches-py", seed=3)
    return tmp_path


@pytest.fixture(scope="session")
def mnist1d_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the generated MNIST-1D cache, generated once per session."""
    root = tmp_path_factory.mktemp("mnist1d-cache")
    mnist1d(cache_dir=root)
    return root
