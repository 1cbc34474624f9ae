"""Writers of tiny dataset files in the exact standard formats, for the service tests.

The files hold a few dozen random images each, written with the real headers (IDX magic
0x00000803 / 0x00000801, big-endian dimensions; CIFAR-10 python batches as pickled dicts of
``b"data"`` (N, 3072) uint8 and ``b"labels"``), so the readers are tested on the formats
without the real data being present.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_TRAIN, MNIST_TEST = 48, 12
CIFAR_PER_BATCH, CIFAR_TEST = 6, 8


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding ``array``: 0x00 0x00 0x08 ndim, dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_set(folder: Path, seed: int, compress: bool) -> dict[str, np.ndarray]:
    """Write the four MNIST-style files into ``folder``; return the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (MNIST_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, MNIST_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (MNIST_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, MNIST_TEST, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def write_cifar10(folder: Path, seed: int) -> dict[str, dict[bytes, object]]:
    """Write ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = CIFAR_TEST if name == "test_batch" else CIFAR_PER_BATCH
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        with (folder / name).open("wb") as stream:
            pickle.dump(batch, stream)
        batches[name] = batch
    meta = {
        b"label_names": [f"class{i}".encode() for i in range(10)],
        b"num_cases_per_batch": CIFAR_PER_BATCH,
        b"num_vis": 3072,
    }
    with (folder / "batches.meta").open("wb") as stream:
        pickle.dump(meta, stream)
    return batches
