"""Dataset readers and generators: formats, splits, normalisation, caching, downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import (
    CIFAR_PER_BATCH,
    CIFAR_TEST,
    MNIST_TEST,
    MNIST_TRAIN,
    idx_bytes,
    write_cifar10,
    write_idx_set,
)

from services.workloads import datasets, files, get_workload
from services.workloads.datasets import Split, carve_validation, noisy_quadratic
from services.workloads.files import (
    FASHION_MNIST,
    MNIST,
    DataFileMissing,
    IdxSource,
    Resource,
    fetch,
    read_cifar10,
    read_idx,
    read_idx_dataset,
)

REPO = Path(__file__).resolve().parents[2]


def rows(x: np.ndarray) -> set[bytes]:
    return {sample.tobytes() for sample in x}


# --- IDX -----------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("shape", [(5, 28, 28), (7,)], ids=["images", "labels"])
def test_read_idx_round_trips_gzip_and_raw(tmp_path: Path, compress: bool, shape: tuple) -> None:
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = idx_bytes(array)
    path = tmp_path / "file"
    path.write_bytes(gzip.compress(data) if compress else data)
    np.testing.assert_array_equal(read_idx(path), array)


def test_idx_header_is_the_standard_magic() -> None:
    # The fixture writer itself must produce the published magic numbers.
    assert idx_bytes(np.zeros((2, 28, 28)))[:4] == bytes.fromhex("00000803")
    assert idx_bytes(np.zeros(2))[:4] == bytes.fromhex("00000801")


def test_read_idx_rejects_a_non_idx_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x01" + b"\x00" * 4)  # float type
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is not an IDX file"):
        read_idx(path)


def test_read_idx_rejects_truncated_data(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28)))[:-10])
    with pytest.raises(ValueError, match=r"shape \(3, 28, 28\)"):
        read_idx(path)


@pytest.mark.parametrize("source", [MNIST, FASHION_MNIST], ids=["mnist", "fashion"])
def test_idx_dataset_splits_and_normalisation(data_dir: Path, source: IdxSource) -> None:
    written = write_idx_set(data_dir / source.subdir, seed=11, compress=source is MNIST)
    dataset = read_idx_dataset(source, data_dir)

    n_val = MNIST_TRAIN // files.MNIST_VALIDATION_DIVISOR
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (
        MNIST_TRAIN - n_val,
        n_val,
        MNIST_TEST,
    )
    assert dataset.input_shape == (1, 28, 28)
    assert dataset.train.x.dtype == np.float32 and dataset.train.y.dtype == np.int64
    expected = (written["t10k-images-idx3-ubyte"] / 255.0 - source.mean) / source.std
    np.testing.assert_allclose(dataset.test.x[:, 0], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(dataset.test.y, written["t10k-labels-idx1-ubyte"])

    # Train and validation partition the training file: same images, no overlap.
    def pixels(x: np.ndarray) -> np.ndarray:
        return np.rint((x[:, 0] * source.std + source.mean) * 255).astype(np.uint8)

    train, val = pixels(dataset.train.x), pixels(dataset.val.x)
    assert rows(np.concatenate([train, val])) == rows(written["train-images-idx3-ubyte"])
    assert not rows(train) & rows(val)


def test_missing_idx_file_names_file_folder_and_source(data_dir: Path) -> None:
    folder = data_dir / "mnist"
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFileMissing) as error:
        read_idx_dataset(MNIST, data_dir)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert str(folder) in message
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz" in message
    assert "download=true" in message


# --- CIFAR-10 -------------------------------------------------------------------------------


def test_cifar10_reads_channel_major_batches(data_dir: Path) -> None:
    batches = write_cifar10(data_dir / "cifar-10-batches-py", seed=5)
    dataset = read_cifar10(data_dir)

    n_train = 5 * CIFAR_PER_BATCH
    n_val = n_train // files.CIFAR10_VALIDATION_DIVISOR
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (
        n_train - n_val,
        n_val,
        CIFAR_TEST,
    )
    assert dataset.input_shape == (3, 32, 32)
    raw = batches["test_batch"][b"data"]
    mean, std = np.array(files.CIFAR10_MEAN), np.array(files.CIFAR10_STD)
    # Row layout: 1024 red values, then green, then blue, each row-major over 32x32.
    for sample, channel, row, col in [(0, 0, 0, 0), (3, 1, 5, 17), (7, 2, 31, 30)]:
        byte = raw[sample, channel * 1024 + row * 32 + col]
        expected = (byte / 255.0 - mean[channel]) / std[channel]
        assert dataset.test.x[sample, channel, row, col] == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(dataset.test.y, batches["test_batch"][b"labels"])


def test_missing_cifar10_batch_names_file_folder_and_source(data_dir: Path) -> None:
    folder = data_dir / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataFileMissing) as error:
        read_cifar10(data_dir)
    message = str(error.value)
    assert "data_batch_3" in message and str(folder) in message
    assert files.CIFAR10_ARCHIVE.url in message


@pytest.mark.parametrize(
    "workload", ["mnist-mlp", "mnist-cnn", "fashion-mnist-cnn", "cifar10-resnet"]
)
def test_file_workloads_load_from_the_data_dir(data_dir: Path, workload: str) -> None:
    dataset = get_workload(workload).load_data(data_dir)
    assert dataset.input_shape == get_workload(workload).input_shape
    assert len(dataset.train) > 0 and len(dataset.val) > 0 and len(dataset.test) > 0


# --- downloads ------------------------------------------------------------------------------


def file_resource(path: Path, md5: str | None = None) -> Resource:
    digest = md5 or hashlib.md5(path.read_bytes()).hexdigest()
    return Resource(path.name, path.as_uri(), digest)


def test_fetch_downloads_and_verifies_the_checksum(tmp_path: Path) -> None:
    source = tmp_path / "remote" / "blob.gz"
    source.parent.mkdir()
    source.write_bytes(b"payload" * 100)
    target = fetch(file_resource(source), tmp_path / "local")
    assert target == tmp_path / "local" / "blob.gz"
    assert target.read_bytes() == source.read_bytes()


def test_fetch_rejects_a_checksum_mismatch_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "remote" / "blob.gz"
    source.parent.mkdir()
    source.write_bytes(b"payload")
    local = tmp_path / "local"
    with pytest.raises(ValueError, match=r"checksum mismatch.*expected 0{32}"):
        fetch(file_resource(source, md5="0" * 32), local)
    assert list(local.iterdir()) == []


def test_fetch_reports_an_unreachable_url(tmp_path: Path) -> None:
    resource = Resource("x.gz", (tmp_path / "nowhere" / "x.gz").as_uri(), "0" * 32)
    with pytest.raises(DataFileMissing, match="could not download"):
        fetch(resource, tmp_path / "local")
    assert list((tmp_path / "local").iterdir()) == []


def test_idx_dataset_download_fetches_missing_files(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    write_idx_set(remote, seed=4, compress=True)
    source = IdxSource(
        name="MNIST",
        subdir="mnist",
        base_url=remote.as_uri() + "/",
        md5={p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in remote.iterdir()},
        mean=MNIST.mean,
        std=MNIST.std,
    )
    dataset = read_idx_dataset(source, tmp_path / "data", download=True)
    assert len(dataset.test) == MNIST_TEST
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(source.md5)


def test_cifar10_download_extracts_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = tmp_path / "staging"
    write_cifar10(staging / "cifar-10-batches-py", seed=6)
    archive = tmp_path / "remote" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive.write_bytes(buffer.getvalue())
    monkeypatch.setattr(files, "CIFAR10_ARCHIVE", file_resource(archive))

    dataset = read_cifar10(tmp_path / "data", download=True)
    assert len(dataset.test) == CIFAR_TEST
    assert (tmp_path / "data" / "cifar-10-batches-py" / "batches.meta").exists()


# --- generated and bundled datasets ---------------------------------------------------------


def test_carve_validation_is_fixed_and_partitions() -> None:
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.arange(100)
    train_a, val_a = carve_validation(x, y, 20)
    _, val_b = carve_validation(x, y, 20)
    np.testing.assert_array_equal(val_a.y, val_b.y)
    assert len(val_a) == 20 and len(train_a) == 80
    assert sorted(np.concatenate([train_a.y, val_a.y])) == list(range(100))
    assert not set(val_a.y) & set(train_a.y)
    assert not np.array_equal(val_a.y, np.arange(80, 100))  # a permutation, not the tail


def test_split_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="x has 3 samples but y has 2"):
        Split(np.zeros((3, 1)), np.zeros(2))


def test_noisy_quadratic_excess_loss_is_zero_at_the_split_optimum() -> None:
    dataset = noisy_quadratic(dim=10, n_train=4000, n_val=50, n_test=50)
    h = datasets.noisy_quadratic_curvature(10)
    for split in (dataset.train, dataset.val):
        x = split.x.astype(np.float64)
        optimum = x.mean(axis=0)
        delta = np.linspace(-1, 1, 10)

        def excess(theta: np.ndarray, x: np.ndarray = x, split: Split = split) -> float:
            return float(np.mean(0.5 * ((theta - x) ** 2 @ h) - split.y))

        assert excess(optimum) == pytest.approx(0.0, abs=1e-4)
        assert excess(optimum + delta) == pytest.approx(0.5 * delta**2 @ h, rel=1e-4)


def test_noisy_quadratic_gradient_noise_has_covariance_h() -> None:
    dataset = noisy_quadratic(dim=5, n_train=200_000, n_val=10, n_test=10)
    h = datasets.noisy_quadratic_curvature(5)
    # Per-sample gradient at θ = 0 is −h ⊙ x; its covariance must be H = diag(h).
    gradients = -h * dataset.train.x.astype(np.float64)
    np.testing.assert_allclose(gradients.var(axis=0), h, rtol=0.02)


def test_digits_splits_are_fixed_and_standardised() -> None:
    dataset = datasets.digits()
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (1077, 360, 360)
    assert dataset.input_shape == (1, 8, 8)
    assert float(dataset.train.x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(dataset.train.x.std()) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(datasets.digits().val.y, dataset.val.y)


def test_mnist1d_default_sizes_and_validation_carve_out(mnist1d_cache: Path) -> None:
    dataset = datasets.mnist1d(mnist1d_cache)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (3500, 500, 1000)
    assert dataset.input_shape == (40,)
    assert set(np.unique(dataset.train.y)) == set(range(10))


def test_mnist1d_is_generated_once_then_read_from_the_cache(
    mnist1d_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist1d.data

    def regenerate(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated although the cache holds the arrays")

    monkeypatch.setattr(mnist1d.data, "make_dataset", regenerate)
    assert len(list(mnist1d_cache.glob("mnist1d-*.npz"))) == 1
    assert len(datasets.mnist1d(mnist1d_cache).test) == 1000


def test_a_cached_mnist1d_read_does_not_import_the_generator(mnist1d_cache: Path) -> None:
    # mnist1d imports matplotlib and SciPy: over a second in every fresh worker process.
    code = (
        "import sys; from pathlib import Path; from services.workloads.datasets import mnist1d; "
        f"mnist1d(Path({str(mnist1d_cache)!r})); print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('mnist1d', 'matplotlib', 'scipy')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[]"


def test_mnist1d_generation_leaves_the_global_generators_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist1d.data

    def fake_make_dataset(args: object) -> dict[str, np.ndarray]:
        np.random.seed(42)  # what the real generator does
        random.seed(42)
        rng = np.random.default_rng(0)
        return {
            "x": rng.standard_normal((4000, 40)),
            "y": rng.integers(0, 10, 4000),
            "x_test": rng.standard_normal((1000, 40)),
            "y_test": rng.integers(0, 10, 1000),
        }

    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset)
    np.random.seed(7)
    random.seed(7)
    expected = (np.random.random(), random.random())
    np.random.seed(7)
    random.seed(7)
    datasets.mnist1d(tmp_path)
    assert (np.random.random(), random.random()) == expected
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1


def test_data_root_prefers_argument_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "env"))
    assert datasets.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert datasets.data_root() == tmp_path / "env"
    monkeypatch.delenv(datasets.DATA_DIR_ENV)
    assert datasets.data_root() == Path(".optarena/data")
