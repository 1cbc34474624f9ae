"""Fractional GPUs: workers placed with ``gpus_per_trial`` share a GPU, on a real local Ray
instance that declares one GPU. This machine has none, so the GPU is Ray's logical resource
(what Ray schedules by); each worker sees the GPU Ray gave it through
``CUDA_VISIBLE_DEVICES``, and the trials themselves run on the CPU (``device: auto``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from services import cluster
from services.cluster import ClusterInfo, Placement, WorkerPool, placement
from services.search import open_storage
from services.spec import Endpoint, parse_spec
from services.study import RUN_ATTR, run_study


@pytest.fixture(scope="module")
def one_gpu() -> Iterator[ClusterInfo]:
    info = cluster.start_cluster(num_cpus=4, num_gpus=1)
    yield info
    cluster.stop_cluster()


def gpu_worker() -> type:
    class Sharer:
        def __init__(self, slot: int, generation: int) -> None:
            self.slot = slot

        def hold(self, seconds: float) -> dict[str, Any]:
            import ray

            started = time.monotonic()
            time.sleep(seconds)
            return {
                "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "started": started,
                "ended": time.monotonic(),
            }

    return Sharer


@pytest.mark.parametrize(
    ("cpus", "gpus", "cluster_cpus", "cluster_gpus", "fit"),
    [
        (1, 0.25, 4, 1, 4),
        (1, 0.0625, 32, 1, 16),
        (1, 0.1, 16, 1, 10),  # 1 // 0.1 is 9 in floating point; Ray fits ten
        (0.1, None, 2, 0, 20),
        (1, 0.3, 8, 2, 6),
        (2, 0.25, 4, 1, 2),  # the CPUs run out first
    ],
)
def test_how_many_workers_fit(
    cpus: float, gpus: float | None, cluster_cpus: float, cluster_gpus: float, fit: int
) -> None:
    info = ClusterInfo("127.0.0.1:1", True, True, 1, cluster_cpus, cluster_gpus)
    assert placement(cpus, gpus, cluster_gpus).fits(info) == fit


def test_four_quarter_gpu_workers_share_one_gpu_at_once(one_gpu: ClusterInfo) -> None:
    host, _ = one_gpu.address.rsplit(":", 1)
    assert host == "127.0.0.1" and one_gpu.gpus == 1.0
    quarter = placement(1, 0.25, one_gpu.gpus)
    assert quarter == Placement(1, 0.25) and quarter.fits(one_gpu) == 4
    pool = WorkerPool(gpu_worker(), lambda slot, generation: (slot, generation), 4, quarter)
    try:
        for slot in range(4):
            pool.submit(slot, "hold", 3.0)
        events: list[Any] = []
        deadline = time.monotonic() + 120
        while len(events) < 4 and time.monotonic() < deadline:
            events += pool.wait(1.0)
        values = [event.value for event in events]
        assert len(values) == 4, [event.error for event in events]
        assert all(v["gpu_ids"] == ["0"] and v["visible"] == "0" for v in values)
        # All four held the GPU at the same time.
        assert max(v["started"] for v in values) < min(v["ended"] for v in values)
    finally:
        pool.shutdown()


def test_a_study_runs_as_many_gpu_workers_as_fit(
    one_gpu: ClusterInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = parse_spec(
        {
            "study": "gpu-share",
            "workloads": ["quadratic"],
            "optimizers": ["sgd"],
            "search_space": {"learning_rate": {"min": 1e-3, "max": 0.1, "scaling": "log"}},
            "trial": {"epochs": 1},
            "budget": {"trials": 8},
            "sampler": {"name": "random", "seed": 0},
            "final": {"seeds": [1]},
            "resources": {"workers": 6, "cpus_per_trial": 0.5, "gpus_per_trial": 0.25},
        },
        source="test",
    )
    storage = f"journal://{tmp_path / 'optuna.journal'}"
    outcome = run_study(
        spec,
        Endpoint(storage, "flag"),
        Endpoint(f"sqlite:///{tmp_path / 'mlflow.db'}", "flag"),
        quiet=True,
    )
    assert outcome.exit_code == 0, outcome.message
    assert "room for 4 of the 6 workers (0.5 CPU, 0.25 GPU per worker)" in capsys.readouterr().out
    trials = optuna.load_study(
        study_name=spec.arms()[0].study_name, storage=open_storage(storage)
    ).trials
    assert len(trials) == 8
    assert len({trial.user_attrs[RUN_ATTR]["worker"] for trial in trials}) <= 4
