"""Study throughput when trials share a GPU (``resources.gpus_per_trial``).

Small models leave most of a GPU idle, so several trials on one GPU finish a study sooner:
REFERENCE.md measured 16 processes sharing an H200 at 15.7× one trial's throughput on an
MLP 784-512-512-10. This runs the same kind of study (``mnist-mlp``: that MLP, batch 512,
on 60,000 MNIST-shaped samples written here, since the device has no network) through
``run_study`` on a local Ray instance with one trial per GPU, then with 0.25 and 0.0625 of a
GPU per trial (4 and 16 workers), and reports the study's throughput in trials per minute
and in training samples per second over the steady state (first trial's start to last
trial's end), each against one trial per GPU.

    python -m benchmarks.gpu_sharing                 # on a machine with a CUDA GPU
    python -m benchmarks.gpu_sharing --logical-gpu --fractions 1 0.25 --trials-per-worker 1 \\
        --epochs 1 --no-write                         # the mechanics, on the CPU

``--logical-gpu`` declares one GPU to Ray on a machine without one (the trials then train on
the CPU): a check of the placement, not a measurement, so it writes nothing.
"""

from __future__ import annotations

import argparse
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import torch

from benchmarks.recording import environment_lines, write_section
from benchmarks.study_overhead import StudyTiming, time_study
from services import cluster
from services.spec import StudySpec, parse_spec
from services.workloads.files import MNIST_VALIDATION_DIVISOR

MNIST_TRAIN, MNIST_TEST = 60_000, 10_000
# mnist-mlp trains on what is left of the 60,000 once its validation split is carved out.
TRAIN_SAMPLES = MNIST_TRAIN - MNIST_TRAIN // MNIST_VALIDATION_DIVISOR


def write_mnist_shaped(folder: Path, seed: int = 0) -> None:
    """The four MNIST IDX files, of random bytes: throughput does not depend on content."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (MNIST_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, MNIST_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (MNIST_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, MNIST_TEST, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        header += struct.pack(f">{array.ndim}I", *array.shape)
        (folder / stem).write_bytes(header + array.tobytes())


def sharing_study(
    fraction: float, workers: int, trials: int, epochs: int, data: Path
) -> StudySpec:
    return parse_spec(
        {
            "study": f"gpu-sharing-{fraction:g}-{os.getpid()}",
            "workloads": ["mnist-mlp"],
            "optimizers": ["adam"],
            "search_space": {"learning_rate": {"min": 1e-4, "max": 1e-3, "scaling": "log"}},
            "trial": {"epochs": epochs, "batch_size": 512, "data_dir": str(data)},
            "budget": {"trials": trials},
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "none"},  # every trial trains all its epochs
            "final": {"seeds": [1]},
            "resources": {"workers": workers, "cpus_per_trial": 1, "gpus_per_trial": fraction},
        },
        source="gpu_sharing",
    )


def samples_per_s(timing: StudyTiming, epochs: int, train_samples: int) -> float:
    return timing.trials * epochs * train_samples / timing.steady_s


def report(
    rows: list[tuple[float, int, StudyTiming]], epochs: int, train_samples: int, logical: bool
) -> str:
    base = rows[0][2]
    base_rate = samples_per_s(base, epochs, train_samples)
    lines = [
        "## Trials sharing a GPU (`benchmarks/gpu_sharing.py`)",
        "",
        "One `mnist-mlp` study per row (MLP 784-512-512-10, batch 512, "
        f"{train_samples:,} training samples, {epochs} epochs a trial, Adam) through "
        "`run_study` on a local Ray instance; throughput over the steady state (first trial's "
        "start to last trial's end).",
        "",
        *environment_lines(torch.device("cpu" if logical else "cuda")),
        "",
        "| GPU per trial | workers | trials | steady s | trials per minute | samples/s (all "
        "trials) | vs one trial per GPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for fraction, workers, timing in rows:
        rate = samples_per_s(timing, epochs, train_samples)
        lines.append(
            f"| {fraction:g} | {workers} | {timing.trials} | {timing.steady_s:.1f} | "
            f"{timing.trials / timing.steady_s * 60:.1f} | {rate / 1e6:.2f} M | "
            f"{rate / base_rate:.1f}× |"
        )
    lines += ["", "Anchor (REFERENCE.md, H200): 16 processes sharing the GPU, 15.7×."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25, 0.0625])
    parser.add_argument("--trials-per-worker", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--logical-gpu", action="store_true", help="declare one GPU to Ray (no real one)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not args.logical_gpu and not torch.cuda.is_available():
        print("benchmarks.gpu_sharing needs a CUDA GPU (or --logical-gpu for a dry check)")
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    workers_needed = max(round(1 / fraction) for fraction in args.fractions)
    with tempfile.TemporaryDirectory(prefix="gpu-sharing-") as temp:
        directory = Path(temp)
        write_mnist_shaped(directory / "mnist")
        info = cluster.start_cluster(
            num_cpus=max(os.cpu_count() or 1, workers_needed),
            num_gpus=1 if args.logical_gpu else None,
        )
        try:
            for fraction in args.fractions:
                workers = min(round(1 / fraction), cluster.Placement(1, fraction).fits(info))
                spec = sharing_study(
                    fraction, workers, workers * args.trials_per_worker, args.epochs, directory
                )
                timing = time_study(spec, directory, None)
                rows.append((fraction, workers, timing))
                print(
                    f"{fraction:g} GPU per trial, {workers} workers: "
                    f"{timing.trials / timing.steady_s * 60:.1f} trials/min",
                    flush=True,
                )
        finally:
            cluster.stop_cluster()
    body = report(rows, args.epochs, TRAIN_SAMPLES, args.logical_gpu)
    print(body)
    if not args.no_write and not args.logical_gpu:
        write_section("gpu_sharing", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
