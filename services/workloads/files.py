"""Datasets read from their standard files: MNIST and Fashion-MNIST (IDX), CIFAR-10 (python
pickled batches), with optional download and checksum verification.

Files live under the data directory (``datasets.data_root``)::

    <data_dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data_dir>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch}

A missing file raises ``DataFileMissing``, whose message names the file, the folder it was
looked for in and how to get it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.workloads.datasets import Dataset, Split, carve_validation

IDX_MAGIC_UINT8 = 0x08  # third byte of the IDX magic number: unsigned bytes
IDX_IMAGES_NDIM = 3  # magic 0x00000803
IDX_LABELS_NDIM = 1  # magic 0x00000801
GZIP_MAGIC = b"\x1f\x8b"

# Validation carve-outs as fractions of the training split: 5,000 of MNIST's 60,000 and of
# CIFAR-10's 50,000 training images (the fraction keeps tiny test files usable).
MNIST_VALIDATION_DIVISOR = 12
CIFAR10_VALIDATION_DIVISOR = 10


class DataFileMissing(FileNotFoundError):
    """A dataset file is not in the data directory (and was not downloaded)."""


@dataclass(frozen=True)
class Resource:
    """A downloadable file and the MD5 digest its publisher lists for it."""

    filename: str
    url: str
    md5: str


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(resource: Resource, folder: Path) -> Path:
    """Download ``resource`` into ``folder`` unless it is already there, verifying its MD5.

    The download goes to a temporary file that is renamed only after the checksum matches,
    so an interrupted or corrupted download never leaves a file that looks complete.
    """
    target = folder / resource.filename
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as tmp:
        try:
            with urllib.request.urlopen(resource.url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as error:
            tmp.close()
            os.unlink(tmp.name)
            raise DataFileMissing(
                f"could not download {resource.url} to {folder}: {error}"
            ) from error
    actual = md5_of(Path(tmp.name))
    if actual != resource.md5:
        os.unlink(tmp.name)
        raise ValueError(
            f"checksum mismatch for {resource.url}: MD5 {actual}, expected {resource.md5}"
        )
    os.replace(tmp.name, target)
    return target


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed or raw, detected from the content).

    Layout (big-endian): two zero bytes, the type code 0x08, the number of dimensions, one
    uint32 per dimension, then the data in C order.
    """
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_MAGIC_UINT8:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {raw[:4].hex()})")
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header_len], dtype=">u4"))
    data = np.frombuffer(raw[header_len:], dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} bytes of data")
    return data.reshape(shape)


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset lives under the data directory and where it can be downloaded."""

    name: str
    subdir: str
    base_url: str
    md5: dict[str, str]  # gzip file name -> MD5
    mean: float  # pixel mean / std of the training set after scaling to [0, 1]
    std: float


MNIST = IdxSource(
    name="MNIST",
    subdir="mnist",
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    mean=0.1307,
    std=0.3081,
)
FASHION_MNIST = IdxSource(
    name="Fashion-MNIST",
    subdir="fashion-mnist",
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    mean=0.2860,
    std=0.3530,
)


def _idx_file(source: IdxSource, folder: Path, stem: str, download: bool) -> Path:
    """The path of ``stem`` (gzip or raw) in ``folder``, downloading the gzip if asked."""
    gz_name = f"{stem}.gz"
    for candidate in (folder / gz_name, folder / stem):
        if candidate.exists():
            return candidate
    resource = Resource(gz_name, source.base_url + gz_name, source.md5[gz_name])
    if download:
        return fetch(resource, folder)
    raise DataFileMissing(
        f"{source.name} file {gz_name} (or uncompressed {stem}) not found in {folder}. "
        f"Download it from {resource.url} (MD5 {resource.md5}) into that folder, "
        f"or run with download enabled (--set download=true)."
    )


def read_idx_dataset(source: IdxSource, data_dir: Path, download: bool = False) -> Dataset:
    """MNIST or Fashion-MNIST as (1, 28, 28) float32 images normalised with the usual
    training-set mean and std; the validation split is a fixed 5,000 of the 60,000 training
    images (55,000 / 5,000 / 10,000)."""
    folder = data_dir / source.subdir

    def read(prefix: str) -> Split:
        images = read_idx(_idx_file(source, folder, f"{prefix}-images-idx3-ubyte", download))
        labels = read_idx(_idx_file(source, folder, f"{prefix}-labels-idx1-ubyte", download))
        if images.ndim != IDX_IMAGES_NDIM or labels.ndim != IDX_LABELS_NDIM:
            raise ValueError(
                f"{source.name} {prefix}: expected images of 3 dims and labels of 1 dim, "
                f"got shapes {images.shape} and {labels.shape}"
            )
        x = (images.astype(np.float32) / 255.0 - source.mean) / source.std
        return Split(x[:, None, :, :], labels.astype(np.int64))

    full_train, test = read("train"), read("t10k")
    n_val = len(full_train) // MNIST_VALIDATION_DIVISOR
    train, val = carve_validation(full_train.x, full_train.y, n_val)
    return Dataset(source.subdir, train, val, test, num_classes=10)


# --- CIFAR-10 --------------------------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = Resource(
    "cifar-10-python.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
)
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def read_cifar10_batch(path: Path) -> Split:
    """One CIFAR-10 python batch: a pickled dict with ``b"data"`` (N, 3072) uint8 in
    channel-major order and ``b"labels"`` (N,), returned as (N, 3, 32, 32) uint8 images."""
    with path.open("rb") as stream:
        batch = pickle.load(stream, encoding="bytes")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    return Split(data.reshape(-1, 3, 32, 32), labels)


def _download_cifar10(data_dir: Path) -> None:
    archive = fetch(CIFAR10_ARCHIVE, data_dir)
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(CIFAR10_FOLDER + "/")]
        tar.extractall(data_dir, members=members, filter="data")


def read_cifar10(data_dir: Path, download: bool = False) -> Dataset:
    """CIFAR-10 as (3, 32, 32) float32 images normalised per channel; the validation split
    is a fixed 5,000 of the 50,000 training images (45,000 / 5,000 / 10,000)."""
    folder = data_dir / CIFAR10_FOLDER
    names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    if download and not all((folder / name).exists() for name in names):
        _download_cifar10(data_dir)
    for name in names:
        if not (folder / name).exists():
            raise DataFileMissing(
                f"CIFAR-10 file {name} not found in {folder}. Download "
                f"{CIFAR10_ARCHIVE.url} (MD5 {CIFAR10_ARCHIVE.md5}) and extract it into "
                f"{data_dir}, or run with download enabled (--set download=true)."
            )
    mean = np.asarray(CIFAR10_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(CIFAR10_STD, dtype=np.float32)[:, None, None]

    def normalise(s: Split) -> Split:
        return Split((s.x.astype(np.float32) / 255.0 - mean) / std, s.y)

    batches = [read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_BATCHES]
    full_x = np.concatenate([b.x for b in batches])
    full_y = np.concatenate([b.y for b in batches])
    n_val = len(full_x) // CIFAR10_VALIDATION_DIVISOR
    train, val = carve_validation(full_x, full_y, n_val)
    test = read_cifar10_batch(folder / CIFAR10_TEST_BATCH)
    return Dataset("cifar10", normalise(train), normalise(val), normalise(test), num_classes=10)
