"""Tests for nrc.data: the seeded Gaussian mixture, the file formats, downloads and the loaders.

Real-format files are written by the tests themselves into ``tmp_path``. Downloads are tested end
to end against an HTTP server on 127.0.0.1 serving the offline MNIST files (``../shared/data``,
found as in ``tests/conftest.py``); nothing here reaches the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from nrc import data
from nrc.data import download, images
from nrc.data import (
    DATASETS,
    Dataset,
    data_root,
    gaussian_mixture_centers,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    make_gaussian_mixture,
)

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --------------------------------------------------------------------------------------------
# Gaussian mixture
# --------------------------------------------------------------------------------------------


def test_mixture_is_deterministic_for_a_seed():
    a = make_gaussian_mixture(num_classes=3, dim=5, per_class=7, test_per_class=4, seed=11)
    b = make_gaussian_mixture(num_classes=3, dim=5, per_class=7, test_per_class=4, seed=11)
    c = make_gaussian_mixture(num_classes=3, dim=5, per_class=7, test_per_class=4, seed=12)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (21, 5) and a.x_train.dtype == torch.float32
    assert a.x_test.shape == (12, 5)
    assert a.y_train.dtype == torch.int64
    assert a.y_train.tolist() == [0] * 7 + [1] * 7 + [2] * 7  # class by class
    assert (a.n_train, a.n_test, a.dim, a.num_classes, a.name) == (21, 12, 5, 3, "synthetic")


def test_mixture_float64_is_the_unrounded_float32():
    lo = make_gaussian_mixture(seed=3)
    hi = make_gaussian_mixture(seed=3, dtype=torch.float64)
    assert hi.x_train.dtype == torch.float64
    assert torch.equal(hi.x_train.float(), lo.x_train)


def test_spread_zero_puts_every_sample_on_its_centre():
    ds = make_gaussian_mixture(
        num_classes=4, dim=6, per_class=5, spread=0.0, seed=2, dtype=torch.float64
    )
    centres = gaussian_mixture_centers(num_classes=4, dim=6, center_scale=2.0, seed=2)
    assert torch.equal(ds.x_train, centres.repeat_interleave(5, dim=0))


def test_centres_do_not_depend_on_spread_or_per_class():
    kw = dict(num_classes=3, dim=4, seed=5, dtype=torch.float64)
    centres = make_gaussian_mixture(per_class=2, spread=0.0, **kw).x_train[::2]
    wide = make_gaussian_mixture(per_class=4000, spread=0.5, **kw)
    means = torch.stack([wide.x_train[wide.y_train == k].mean(0) for k in range(3)])
    # Standard error of a class mean is spread / sqrt(per_class) ~ 0.008 per coordinate.
    assert torch.allclose(means, centres, atol=0.05)


def test_spread_sweep_only_rescales_the_same_noise():
    kw = dict(num_classes=3, dim=4, per_class=10, seed=7, dtype=torch.float64)
    centres = make_gaussian_mixture(spread=0.0, **kw).x_train
    small = make_gaussian_mixture(spread=0.2, **kw).x_train - centres
    large = make_gaussian_mixture(spread=1.0, **kw).x_train - centres
    assert torch.allclose(large, 5.0 * small, atol=1e-12)


def test_training_set_ignores_test_per_class():
    a = make_gaussian_mixture(test_per_class=0, seed=1)
    b = make_gaussian_mixture(test_per_class=9, seed=1)
    assert torch.equal(a.x_train, b.x_train)
    assert a.x_test.shape == (0, 10) and a.y_test.shape == (0,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=1), "num_classes must be >= 2, got 1"),
        (dict(dim=0), "dim must be >= 1, got 0"),
        (dict(per_class=0), "per_class must be >= 1, got 0"),
        (dict(spread=-1), "spread must be >= 0, got -1"),
        (dict(spread=float("nan")), "spread must be finite"),
        (dict(test_per_class=-2), "test_per_class must be >= 0, got -2"),
        (dict(center_scale=0.0), "center_scale must be > 0, got 0"),
        (dict(seed=-1), "seed must be >= 0, got -1"),
    ],
)
def test_mixture_validation_names_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_gaussian_mixture(**kwargs)


def test_mixture_rejects_non_integer_counts():
    with pytest.raises(TypeError, match="per_class must be an integer"):
        make_gaussian_mixture(per_class=2.5)


def test_dataset_to_changes_inputs_dtype_only():
    ds = make_gaussian_mixture(test_per_class=2)
    moved = ds.to("cpu", torch.float64)
    assert moved is not ds
    assert moved.x_train.dtype == moved.x_test.dtype == torch.float64
    assert moved.y_train.dtype == moved.y_test.dtype == torch.int64
    assert moved.info == ds.info and moved.info is not ds.info
    assert ds.to("cpu").x_train.dtype == torch.float32
    with pytest.raises(ValueError, match="floating-point"):
        ds.to("cpu", torch.int32)


def test_dataset_rejects_mismatched_rows():
    x, y = torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="x_train has 3 rows but y_train has 2"):
        Dataset(x, y, x[:0], y[:0], 2, "synthetic")


# --------------------------------------------------------------------------------------------
# Files written by the tests: idx (MNIST layout) and CIFAR pickles
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the idx format (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def fake_split(n_per_class: int, rows: int, cols: int, seed: int):
    """Random uint8 images with labels 0..9, classes interleaved, plus one constant pixel."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(10, dtype=np.uint8), n_per_class)
    images = rng.integers(0, 256, size=(labels.size, rows, cols), dtype=np.uint8)
    images[:, 0, 0] = 7  # a constant "border" pixel, which must not blow up standardisation
    return images, labels


def write_idx_layout(directory: Path, split_arrays: dict, compress: bool) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, array in split_arrays.items():
        raw = idx_bytes(array)
        path = directory / (f"{name}.gz" if compress else name)
        path.write_bytes(gzip.compress(raw) if compress else raw)
        written.append(path)
    return written


@pytest.fixture
def fake_mnist_arrays():
    train_x, train_y = fake_split(6, 5, 4, seed=0)  # 60 training images of 5x4 pixels
    test_x, test_y = fake_split(2, 5, 4, seed=1)
    return {
        "train-images-idx3-ubyte": train_x,
        "train-labels-idx1-ubyte": train_y,
        "t10k-images-idx3-ubyte": test_x,
        "t10k-labels-idx1-ubyte": test_y,
    }


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_idx_loader_shapes_labels_and_scaling(tmp_path, fake_mnist_arrays, compress):
    write_idx_layout(tmp_path / "MNIST" / "raw", fake_mnist_arrays, compress)
    ds = load_mnist(tmp_path, standardize=False)
    train_x = fake_mnist_arrays["train-images-idx3-ubyte"]
    assert ds.x_train.shape == (60, 20) and ds.x_test.shape == (20, 20)
    assert ds.num_classes == 10 and ds.name == "mnist"
    assert ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == fake_mnist_arrays["train-labels-idx1-ubyte"].tolist()
    expected = torch.from_numpy(train_x.reshape(60, 20) / 255.0).float()
    assert torch.allclose(ds.x_train, expected)
    assert ds.info["n_train"] == 60 and len(ds.info["source_files"]) == 4
    assert all(Path(p).exists() for p in ds.info["source_files"])

    image = load_mnist(tmp_path, standardize=False, flatten=False)
    assert image.x_train.shape == (60, 1, 5, 4) and image.dim == 20


def test_balanced_subset_is_seeded_and_per_class(tmp_path, fake_mnist_arrays):
    write_idx_layout(tmp_path / "MNIST" / "raw", fake_mnist_arrays, compress=True)
    full = load_mnist(tmp_path, standardize=False)
    a = load_mnist(tmp_path, per_class=3, test_per_class=1, standardize=False, seed=4)
    b = load_mnist(tmp_path, per_class=3, test_per_class=1, standardize=False, seed=4)
    c = load_mnist(tmp_path, per_class=3, test_per_class=1, standardize=False, seed=5)
    assert a.n_train == 30 and a.n_test == 10
    assert torch.bincount(a.y_train, minlength=10).tolist() == [3] * 10
    assert torch.bincount(a.y_test, minlength=10).tolist() == [1] * 10
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    # Every subset row is a row of the full split with the same label.
    for row, label in zip(a.x_train, a.y_train):
        match = (full.x_train == row).all(dim=1).nonzero().flatten()
        assert match.numel() >= 1 and full.y_train[match[0]] == label
    assert a.info["per_class"] == 3 and a.info["test_per_class"] == 1

    with pytest.raises(ValueError, match=r"per_class=7 .*maximum per_class is 6"):
        load_mnist(tmp_path, per_class=7)
    with pytest.raises(ValueError, match="per_class must be >= 1, got 0"):
        load_mnist(tmp_path, per_class=0)


def test_standardisation_uses_training_statistics(tmp_path, fake_mnist_arrays):
    write_idx_layout(tmp_path / "MNIST" / "raw", fake_mnist_arrays, compress=True)
    ds = load_mnist(tmp_path, per_class=4, dtype=torch.float64)
    raw = load_mnist(tmp_path, per_class=4, standardize=False, dtype=torch.float64)
    mean = raw.x_train.mean(0)
    std = (raw.x_train - mean).pow(2).mean().sqrt()
    assert torch.isfinite(ds.x_train).all()
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(20, dtype=torch.float64), atol=1e-12)
    assert ds.x_train.pow(2).mean().item() == pytest.approx(1.0)
    assert ds.info["std"] == pytest.approx(std.item())
    # The test split is transformed with the training mean and std, not its own.
    assert torch.allclose(ds.x_test, (raw.x_test - mean) / std)
    assert ds.x_train[:, 0].abs().max() < 1e-12  # the constant pixel stays at 0


def test_missing_files_error_names_every_file_and_the_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("NRC_DATA", raising=False)
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path)
    message = str(err.value)
    for name in IDX_NAMES:
        assert f"{name}.gz" in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "NRC_DATA" in message and "root=" in message and "download=True" in message


def test_fashion_mnist_searches_root_then_debian_dir(tmp_path, monkeypatch, fake_mnist_arrays):
    debian = tmp_path / "debian"
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST_DIR", debian)
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path / "root")
    assert str(tmp_path / "root" / "FashionMNIST" / "raw") in str(err.value)
    assert str(debian) in str(err.value)

    write_idx_layout(debian, fake_mnist_arrays, compress=True)
    ds = load_fashion_mnist(tmp_path / "root", per_class=2)
    assert ds.name == "fashion-mnist" and ds.n_train == 20
    assert ds.info["directory"] == str(debian)


def test_idx_loader_rejects_a_wrong_magic_number(tmp_path, fake_mnist_arrays):
    paths = write_idx_layout(tmp_path / "MNIST" / "raw", fake_mnist_arrays, compress=False)
    labels = paths[1]  # train labels: swap in an images header
    labels.write_bytes(idx_bytes(fake_mnist_arrays["train-images-idx3-ubyte"]))
    with pytest.raises(ValueError, match="magic number is 2051, expected 2049"):
        load_mnist(tmp_path)


def write_cifar(root: Path, per_batch: int = 20) -> dict[str, np.ndarray]:
    """Tiny fake CIFAR-10 batches in the published pickle layout (bytes keys)."""
    batch_dir = root / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [int(k) for k in np.tile(np.arange(10), per_batch // 10)]
        with open(batch_dir / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"data": x, b"labels": y}, fh)
        arrays[name] = x
    return arrays


def test_cifar10_pickle_layout(tmp_path):
    arrays = write_cifar(tmp_path)
    ds = load_cifar10(tmp_path, standardize=False)
    assert ds.x_train.shape == (100, 3072) and ds.x_test.shape == (20, 3072)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert torch.bincount(ds.y_train).tolist() == [10] * 10
    first = torch.from_numpy(arrays["data_batch_1"] / 255.0).float()
    last = torch.from_numpy(arrays["data_batch_5"] / 255.0).float()
    assert torch.allclose(ds.x_train[:20], first) and torch.allclose(ds.x_train[80:], last)

    image = load_cifar10(tmp_path, standardize=False, flatten=False, per_class=2)
    assert image.x_train.shape == (20, 3, 32, 32)
    full = load_cifar10(tmp_path, standardize=False, flatten=False)
    # Rows hold the red, green and blue planes in turn: channel 1 starts at column 1024.
    assert full.x_train[0, 1, 0, 0] == pytest.approx(arrays["data_batch_1"][0, 1024] / 255)


def test_cifar10_refuses_pickles_that_are_not_arrays(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": os.getcwd, b"labels": []}, fh)  # a global that is not NumPy
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar10(tmp_path)


def test_cifar10_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path)
    message = str(err.value)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        assert name in message
    assert str(tmp_path / "cifar-10-batches-py") in message and "NRC_DATA" in message


# --------------------------------------------------------------------------------------------
# Downloads, end to end against a local HTTP server on 127.0.0.1 (never the internet)
# --------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files under ``server.root``; ``server.mode`` says how to misbehave."""

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append(self.path)
        path = Path(srv.root) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        payload = path.read_bytes()
        mode = srv.mode
        if mode == "cut-once":
            mode = "cut" if srv.requests.count(self.path) == 1 else "ok"
        if mode == "corrupt":  # same length, one byte flipped
            payload = payload[:100] + bytes([payload[100] ^ 0xFF]) + payload[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if mode == "cut":  # announce the whole file, send half, hang up
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


@pytest.fixture
def serve(monkeypatch):
    """Start ``serve(root, mode="ok")`` -> base URL; servers are shut down after the test."""
    monkeypatch.delenv("NRC_DATA_MIRROR", raising=False)
    servers = []

    def start(root: Path, mode: str = "ok"):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.root, srv.mode, srv.requests = str(root), mode, []
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv, f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def mnist_root(need_data) -> Path:
    """A data root holding the real MNIST files (fetched when online; the test skips offline)."""
    return need_data("mnist")


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_download_from_a_mirror_fetches_verified_files(tmp_path, serve, mnist_root):
    source = mnist_root
    srv, url = serve(source)
    root = tmp_path / "cache"
    ds = load_mnist(root, download=True, mirrors=url, per_class=3, test_per_class=2)
    raw = root / "MNIST" / "raw"
    assert leftovers(raw) == sorted(f"{n}.gz" for n in IDX_NAMES)  # no .part files left
    for name in IDX_NAMES:  # byte-identical to the served files, md5 recomputed here
        assert md5_of(raw / f"{name}.gz") == md5_of(source / "MNIST" / "raw" / f"{name}.gz")
    assert sorted(srv.requests) == sorted(f"/MNIST/raw/{n}.gz" for n in IDX_NAMES)
    reference = load_mnist(source, per_class=3, test_per_class=2)
    assert torch.equal(ds.x_train, reference.x_train) and torch.equal(ds.y_test, reference.y_test)
    load_mnist(root, download=True, mirrors=url)  # files present: nothing fetched again
    assert len(srv.requests) == 4


def test_download_mirror_from_the_environment_and_the_official_list(tmp_path, serve, monkeypatch, mnist_root):
    srv, url = serve(mnist_root)
    monkeypatch.setenv("NRC_DATA_MIRROR", url)
    assert load_dataset("mnist", root=tmp_path / "a", download=True, per_class=1).n_train == 10
    monkeypatch.delenv("NRC_DATA_MIRROR")
    # Without an override the official list is used, file name appended to each base URL.
    monkeypatch.setitem(data.MIRRORS, "mnist", [f"{url}/nowhere/", f"{url}/MNIST/raw/"])
    assert load_mnist(tmp_path / "b", download=True, per_class=1).n_train == 10
    assert "/nowhere/train-images-idx3-ubyte.gz" in srv.requests


def test_cli_download_flag_fetches_from_the_mirror(tmp_path, serve, monkeypatch, capsys, mnist_root):
    from nrc_companion.cli import main

    _, url = serve(mnist_root)
    root = tmp_path / "root"
    argv = ["sweep", "--dataset", "mnist", "--data-root", str(root), "--per-class", "2",
            "--epochs", "1", "--seeds", "0", "--weight-decays", "0.1", "--widths", "8",
            "--no-cache", "--quiet", "--device", "cpu"]
    assert main(argv) == 2  # no files, no --download: one line naming what to set
    err = capsys.readouterr().err
    assert "NRC_DATA" in err and "--download" in err
    monkeypatch.setenv("NRC_DATA_MIRROR", url)
    assert main(argv + ["--download"]) == 0
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(
        f"{n}.gz" for n in IDX_NAMES)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, serve, mnist_root):
    _, url = serve(mnist_root, mode="corrupt")
    with pytest.raises(RuntimeError) as err:
        load_mnist(tmp_path, download=True, mirrors=url)
    message = str(err.value)
    assert "does not match the expected" in message
    assert any(m in message for m in download.CHECKSUMS["mnist"].values())
    assert leftovers(tmp_path / "MNIST" / "raw") == []


def test_download_cut_midway_is_retried_once(tmp_path, serve, mnist_root):
    srv, url = serve(mnist_root, mode="cut-once")
    ds = load_mnist(tmp_path, download=True, mirrors=url, per_class=1)
    assert ds.n_train == 10
    assert len(srv.requests) == 8  # every file: a cut transfer, then a complete one
    assert leftovers(tmp_path / "MNIST" / "raw") == sorted(f"{n}.gz" for n in IDX_NAMES)


def test_download_always_cut_is_a_clear_error_without_partial_files(tmp_path, serve, mnist_root):
    srv, url = serve(mnist_root, mode="cut")
    with pytest.raises(RuntimeError) as err:
        load_mnist(tmp_path, download=True, mirrors=url)
    message = str(err.value)
    assert "could not download train-images-idx3-ubyte.gz" in message
    assert "try 2 of 2" in message and "NRC_DATA" in message
    assert len(srv.requests) == 2
    assert leftovers(tmp_path / "MNIST" / "raw") == []


def test_offline_without_files_names_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("NRC_DATA_MIRROR", raising=False)
    with socket.socket() as sock:  # a port nobody listens on: connection refused, like offline
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(RuntimeError) as err:
        load_mnist(tmp_path, download=True, mirrors=dead)
    message = str(err.value)
    assert "$NRC_DATA " in message and "$NRC_DATA_MIRROR" in message
    assert dead in message and leftovers(tmp_path / "MNIST" / "raw") == []
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path)
    message = str(err.value)
    assert "$NRC_DATA" in message and "download=True" in message and "--download" in message


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist, load_cifar10])
def test_failed_download_leaves_no_new_folders(loader, tmp_path, monkeypatch):
    """Offline, a download that fails removes the folders it created: the root is as before."""
    monkeypatch.delenv("NRC_DATA_MIRROR", raising=False)
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    with socket.socket() as sock:  # a port nobody listens on: connection refused, like offline
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    (tmp_path / "root" / "mine").mkdir(parents=True)  # something of the user's, left alone
    with pytest.raises(RuntimeError, match="could not download"):
        loader(tmp_path / "root" / "data", download=True, mirrors=dead)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["root", "root/mine"]
    with pytest.raises(RuntimeError, match="could not download"):  # a root that exists stays
        loader(tmp_path / "root", download=True, mirrors=dead)
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["mine"]


def test_truncated_gz_on_disk_names_the_file_and_the_fix(tmp_path, fake_mnist_arrays):
    paths = write_idx_layout(tmp_path / "MNIST" / "raw", fake_mnist_arrays, compress=True)
    paths[0].write_bytes(paths[0].read_bytes()[:40])
    with pytest.raises(data.DataFileError) as err:
        load_mnist(tmp_path)
    message = str(err.value)
    assert str(paths[0]) in message and "truncated or corrupt" in message
    assert "delete it" in message and "download=True" in message


def test_cifar10_download_extracts_the_batches(tmp_path, serve, monkeypatch):
    source = tmp_path / "source"
    arrays = write_cifar(source)
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "cifar-10-python.tar.gz", mode="w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setitem(
        download.CHECKSUMS["cifar10"], "cifar-10-python.tar.gz", md5_of(served / "cifar-10-python.tar.gz")
    )
    srv, url = serve(served)
    root = tmp_path / "root"
    ds = load_cifar10(root, download=True, standardize=False, mirrors=[url])
    assert srv.requests == ["/cifar-10-python.tar.gz"]
    assert ds.n_train == 100
    assert torch.allclose(ds.x_test, torch.from_numpy(arrays["test_batch"] / 255.0).float())
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == sorted(arrays)
    # A truncated tarball on disk: a clear error naming it, no batch half-written.
    broken = tmp_path / "broken"
    broken.mkdir()
    tarball = (served / "cifar-10-python.tar.gz").read_bytes()
    (broken / "cifar-10-python.tar.gz").write_bytes(tarball[: len(tarball) // 3])
    with pytest.raises(data.DataFileError, match="cifar-10-python.tar.gz is truncated"):
        load_cifar10(broken, download=True, mirrors=[url])
    assert not any(p.suffix == ".part" for p in broken.rglob("*"))


# --------------------------------------------------------------------------------------------
# Root resolution and dispatch
# --------------------------------------------------------------------------------------------


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.chdir(tmp_path)  # relative values resolve against the caller's directory
    monkeypatch.setenv("NRC_DATA", "rel/data")
    assert data_root() == tmp_path / "rel" / "data" and data_root("x") == tmp_path / "x"
    monkeypatch.delenv("NRC_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "nrc" / "data"


def test_loaders_use_nrc_data(tmp_path, monkeypatch, fake_mnist_arrays):
    write_idx_layout(tmp_path / "MNIST" / "raw", fake_mnist_arrays, compress=True)
    monkeypatch.setenv("NRC_DATA", str(tmp_path))
    assert load_mnist().n_train == 60


def test_load_dataset_dispatch(tmp_path, fake_mnist_arrays):
    assert DATASETS == ("synthetic", "mnist", "fashion-mnist", "cifar10")
    gmm = load_dataset("gmm", num_classes=3, per_class=2)
    assert gmm.name == "synthetic" and gmm.n_train == 6
    same = make_gaussian_mixture(seed=4)
    assert torch.equal(load_dataset("Synthetic", seed=4).x_train, same.x_train)

    write_idx_layout(tmp_path / "MNIST" / "raw", fake_mnist_arrays, compress=True)
    assert load_dataset("mnist", root=tmp_path).name == "mnist"
    write_idx_layout(tmp_path / "FashionMNIST" / "raw", fake_mnist_arrays, compress=True)
    for alias in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        assert load_dataset(alias, root=tmp_path).name == "fashion-mnist"
    write_cifar(tmp_path)
    for alias in ("cifar10", "cifar-10"):
        assert load_dataset(alias, root=tmp_path).name == "cifar10"

    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*synthetic.*mnist.*cifar10"):
        load_dataset("imagenet")


# --------------------------------------------------------------------------------------------
# The real offline files
# --------------------------------------------------------------------------------------------


def test_real_mnist(mnist_root):
    root = mnist_root
    ds = load_mnist(root, per_class=10, test_per_class=10)
    assert ds.x_train.shape == (100, 784) and ds.x_test.shape == (100, 784)
    assert ds.num_classes == 10
    assert torch.bincount(ds.y_train).tolist() == [10] * 10
    assert torch.isfinite(ds.x_train).all()


@pytest.mark.skipif(
    not images.DEBIAN_FASHION_MNIST_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)",
)
def test_real_debian_fashion_mnist(tmp_path):
    ds = load_fashion_mnist(tmp_path, per_class=10, test_per_class=5)  # empty root: Debian's dir
    assert ds.x_train.shape == (100, 784) and ds.x_test.shape == (50, 784)
    assert torch.bincount(ds.y_train).tolist() == [10] * 10
    assert ds.info["directory"] == str(images.DEBIAN_FASHION_MNIST_DIR)
