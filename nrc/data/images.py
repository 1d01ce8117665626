"""MNIST, Fashion-MNIST and CIFAR-10: find the files, subset per class, scale, standardise.

Each loader returns a :class:`~nrc.data.Dataset` whose tensors already sit on the requested
device, with samples as rows and ``int64`` labels ``0..9``. Files are read in torchvision's
layouts under the data root (:func:`~nrc.data.download.data_root`) and parsed by
:mod:`nrc.data.formats`; missing ones are fetched by :mod:`nrc.data.download` only when
``download=True``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import Dataset, check_dtype, check_int
from .download import CHECKSUMS, data_root, download_cifar10, download_file, missing_files_error, source_urls
from .formats import (CIFAR10_DIR, CIFAR10_TEST, CIFAR10_TRAIN, IDX_FILES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
                      find_idx, read_cifar_batch, read_idx)

__all__ = ["DEBIAN_FASHION_MNIST_DIR", "load_cifar10", "load_fashion_mnist", "load_mnist"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four idx ``.gz`` files; searched
#: after the data root so that a machine without network can still load Fashion-MNIST.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# Standardisation divides by one global std; the floor only matters for a constant training set,
# where every centred value is already 0 and any positive divisor leaves it so.
_STD_FLOOR = 1e-6

# Rows per chunk when summing squares in float64, so a float32 CIFAR-10 array is never copied
# whole into float64 (50000 x 3072 would need 1.2 GB).
_CHUNK_ROWS = 4096

@dataclass(frozen=True)
class _IdxSource:
    """Where an idx dataset lives under the root (its md5 sums are in ``CHECKSUMS[name]``)."""

    name: str
    title: str
    subdir: tuple[str, ...]


_MNIST = _IdxSource(name="mnist", title="MNIST", subdir=("MNIST", "raw"))
_FASHION_MNIST = _IdxSource(name="fashion-mnist", title="Fashion-MNIST", subdir=("FashionMNIST", "raw"))

_NUM_CLASSES = 10  # MNIST, Fashion-MNIST and CIFAR-10 all have ten classes


def _balanced_subset(
    labels: np.ndarray, n: int | None, rng: np.random.Generator, param: str, what: str
) -> np.ndarray:
    """Indices of the first ``n`` samples of each class after a seeded permutation.

    The indices are returned sorted, i.e. in the file's order, so the subset does not depend on
    how the classes were interleaved by the permutation.
    """
    if n is None:
        return np.arange(labels.shape[0])
    counts = np.bincount(labels, minlength=_NUM_CLASSES)
    if counts.min() < n:
        smallest = int(counts.argmin())
        raise ValueError(
            f"{param}={n} exceeds the {counts[smallest]} samples of class {smallest} in the "
            f"{what}; the maximum {param} is {counts.min()}"
        )
    order = rng.permutation(labels.shape[0])
    permuted = labels[order]
    chosen = [order[permuted == k][:n] for k in range(_NUM_CLASSES)]
    return np.sort(np.concatenate(chosen))


def _assemble(
    name: str,
    images: tuple[np.ndarray, np.ndarray],
    labels: tuple[np.ndarray, np.ndarray],
    *,
    per_class: int | None,
    test_per_class: int | None,
    standardize: bool,
    flatten: bool,
    seed: int,
    device: str | torch.device,
    dtype: torch.dtype,
    info: dict[str, Any],
) -> Dataset:
    """Subset, scale to [0, 1], standardise with training statistics and build a Dataset.

    ``images`` are uint8 arrays ``(N, C, H, W)`` for the train and test split.
    """
    for split, x, y in zip(("train", "test"), images, labels):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: {x.shape[0]} {split} images but {y.shape[0]} {split} labels")
        if y.size and (y.min() < 0 or y.max() >= _NUM_CLASSES):
            raise ValueError(f"{name}: {split} labels outside 0..{_NUM_CLASSES - 1}")

    # Different seed-derived streams for the two splits, so the test subset does not shift
    # when per_class changes.
    train_rng, test_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    train_idx = _balanced_subset(
        labels[0], per_class, train_rng, "per_class", f"{name} training split"
    )
    test_idx = _balanced_subset(
        labels[1], test_per_class, test_rng, "test_per_class", f"{name} test split"
    )
    # Work in float64 only when float64 is requested; otherwise float32 halves the memory.
    work = np.float64 if dtype == torch.float64 else np.float32
    sample_shape = images[0].shape[1:]
    features = math.prod(sample_shape)
    # Subset before converting, so only the selected uint8 rows are ever expanded to floats.
    x_train = images[0][train_idx].reshape(len(train_idx), features).astype(work) / 255
    x_test = images[1][test_idx].reshape(len(test_idx), features).astype(work) / 255

    std = None
    if standardize:
        # Per-pixel mean but one global std: MNIST's border pixels are constant (std 0), and a
        # per-pixel std would divide them by ~0; a global scale keeps the image geometry.
        # Statistics come from the training subset actually returned, so x_train is exactly
        # centred, and the same mean/std are applied to the test split.
        mean = x_train.mean(axis=0, dtype=np.float64).astype(work)
        x_train -= mean
        x_test -= mean
        sq = sum(
            float(np.sum(np.square(x_train[i : i + _CHUNK_ROWS], dtype=np.float64)))
            for i in range(0, len(x_train), _CHUNK_ROWS)
        )
        std = max(math.sqrt(sq / x_train.size), _STD_FLOOR)
        x_train /= work(std)
        x_test /= work(std)

    if not flatten:
        x_train = x_train.reshape(len(train_idx), *sample_shape)
        x_test = x_test.reshape(len(test_idx), *sample_shape)

    def tensors(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(x).to(dtype).to(device),
            torch.from_numpy(y[idx].astype(np.int64)).to(device),
        )

    xt, yt = tensors(x_train, labels[0], train_idx)
    xe, ye = tensors(x_test, labels[1], test_idx)
    info = {
        **info,
        "per_class": per_class,
        "test_per_class": test_per_class,
        "n_train": int(len(train_idx)),
        "n_test": int(len(test_idx)),
        "sample_shape": [int(s) for s in sample_shape],
        "standardize": bool(standardize),
        "std": std,
        "seed": int(seed),
    }
    return Dataset(xt, yt, xe, ye, _NUM_CLASSES, name, info)


def _check_loader_args(
    per_class: int | None, test_per_class: int | None, seed: int, dtype: torch.dtype
) -> None:
    if per_class is not None:
        check_int("per_class", per_class, 1)
    if test_per_class is not None:
        check_int("test_per_class", test_per_class, 0)
    check_int("seed", seed, 0)
    check_dtype(dtype)

def _load_idx_dataset(
    source: _IdxSource,
    root: str | os.PathLike[str] | None,
    fallback_dirs: tuple[Path, ...],
    *,
    per_class: int | None,
    test_per_class: int | None,
    standardize: bool,
    flatten: bool,
    seed: int,
    download: bool,
    mirrors: Any,
    device: str | torch.device,
    dtype: torch.dtype,
) -> Dataset:
    _check_loader_args(per_class, test_per_class, seed, dtype)
    primary = data_root(root).joinpath(*source.subdir)
    searched = [primary, *fallback_dirs]
    files = next((f for f in map(find_idx, searched) if len(f) == len(IDX_FILES)), None)
    if files is None and download:
        present = find_idx(primary)
        for role, base in IDX_FILES.items():
            if role not in present:
                gz = f"{base}.gz"
                urls = source_urls(source.name, "/".join((*source.subdir, gz)), mirrors)
                download_file(urls, primary / gz, CHECKSUMS[source.name].get(gz))
        files = find_idx(primary)
    if files is None:
        names = [f"{base}.gz" for base in IDX_FILES.values()]
        raise missing_files_error(
            source.title,
            names,
            searched,
            "/".join(source.subdir),
            "(or the same names without .gz)",
        )

    images = (
        read_idx(files["train_images"], IDX_IMAGES_MAGIC),
        read_idx(files["test_images"], IDX_IMAGES_MAGIC),
    )
    labels = (
        read_idx(files["train_labels"], IDX_LABELS_MAGIC),
        read_idx(files["test_labels"], IDX_LABELS_MAGIC),
    )
    info = {
        "directory": str(files["train_images"].parent),
        "source_files": [str(files[role]) for role in IDX_FILES],
    }
    return _assemble(
        source.name,
        tuple(x[:, None] for x in images),  # one grey channel: (N, 1, H, W)
        labels,
        per_class=per_class,
        test_per_class=test_per_class,
        standardize=standardize,
        flatten=flatten,
        seed=seed,
        device=device,
        dtype=dtype,
        info=info,
    )


_LOADER_DOC = """
    Parameters
    ----------
    root : path-like, optional
        Data root; defaults to ``$NRC_DATA``, then ``~/.cache/nrc/data`` (see ``data_root``).
    per_class : int, optional
        Take a balanced training subset of this many samples per class: the first ``per_class``
        of each class after a permutation seeded by ``seed``. ``None`` keeps the whole split.
        A class with fewer samples raises ``ValueError`` naming the maximum.
    test_per_class : int, optional
        The same for the test split (``0`` gives an empty test split).
    standardize : bool
        Subtract the per-pixel mean of the returned training set and divide by one global std
        (the root-mean-square of the centred training pixels). A global std keeps constant border
        pixels at 0 instead of dividing them by ~0. The test split uses the training statistics;
        ``info["std"]`` records the std. Pixels are scaled to [0, 1] before this, and left there
        when ``standardize=False``.
    flatten : bool
        Return ``(N, C*H*W)`` inputs; otherwise ``(N, C, H, W)``.
    seed : int
        Seed of the subset permutations.
    download : bool
        Fetch missing files into the root (md5-verified, written atomically); raises
        ``RuntimeError`` naming every URL tried when none delivers. With ``False`` missing files
        raise ``FileNotFoundError`` naming the expected files and the directories searched.
    mirrors : str or list of str, optional
        Download from these base URLs (laid out like a data root) instead of the official
        ``MIRRORS``; default ``$NRC_DATA_MIRROR`` when set.
    device : str or torch.device
        Device of the returned tensors.
    dtype : torch.dtype
        Floating dtype of the inputs; labels are ``int64``.

    Returns
    -------
    Dataset
        Ten classes; ``info`` holds the source files, subset sizes and standardisation std.
"""


def _loader_doc(summary: str) -> Any:
    """Give a real-data loader ``summary`` followed by the parameters all three share."""

    def decorate(loader: Any) -> Any:
        loader.__doc__ = summary + _LOADER_DOC
        return loader

    return decorate


@_loader_doc(
    """Load MNIST from ``<root>/MNIST/raw/`` (the four idx files, gzipped or not).
"""
)
def load_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    per_class: int | None = None,
    test_per_class: int | None = None,
    standardize: bool = True,
    flatten: bool = True,
    seed: int = 0,
    download: bool = False,
    mirrors: str | list[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    return _load_idx_dataset(
        _MNIST, root, (), per_class=per_class, test_per_class=test_per_class,
        standardize=standardize, flatten=flatten, seed=seed, download=download,
        mirrors=mirrors, device=device, dtype=dtype,
    )


@_loader_doc(
    """Load Fashion-MNIST from ``<root>/FashionMNIST/raw/``, else Debian's package directory.

    The fallback ``DEBIAN_FASHION_MNIST_DIR`` (``apt-get install dataset-fashion-mnist``) is
    searched only when the root lacks the files; downloads always go to the root.
"""
)
def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    per_class: int | None = None,
    test_per_class: int | None = None,
    standardize: bool = True,
    flatten: bool = True,
    seed: int = 0,
    download: bool = False,
    mirrors: str | list[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    return _load_idx_dataset(
        _FASHION_MNIST, root, (DEBIAN_FASHION_MNIST_DIR,), per_class=per_class,
        test_per_class=test_per_class, standardize=standardize, flatten=flatten, seed=seed,
        download=download, mirrors=mirrors, device=device, dtype=dtype,
    )


@_loader_doc(
    """Load CIFAR-10 from ``<root>/cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``).

    The batches are the published Python pickles; only NumPy arrays are unpickled from them.
    ``download=True`` fetches ``cifar-10-python.tar.gz`` into the root (kept there) and extracts
    the six batches. Images are channel-first, ``(N, 3, 32, 32)`` unflattened.
"""
)
def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    per_class: int | None = None,
    test_per_class: int | None = None,
    standardize: bool = True,
    flatten: bool = True,
    seed: int = 0,
    download: bool = False,
    mirrors: str | list[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    _check_loader_args(per_class, test_per_class, seed, dtype)
    base = data_root(root)
    batch_dir = base / CIFAR10_DIR
    names = [*CIFAR10_TRAIN, CIFAR10_TEST]
    if download and not all((batch_dir / n).is_file() for n in names):
        download_cifar10(base, batch_dir, mirrors)
    missing = [n for n in names if not (batch_dir / n).is_file()]
    if missing:
        raise missing_files_error(
            "CIFAR-10", names, [batch_dir], CIFAR10_DIR, f"(missing: {', '.join(missing)})"
        )

    train = [read_cifar_batch(batch_dir / n) for n in CIFAR10_TRAIN]
    test = read_cifar_batch(batch_dir / CIFAR10_TEST)
    images = (np.concatenate([x for x, _ in train]), test[0])
    labels = (np.concatenate([y for _, y in train]), test[1])
    info = {"directory": str(batch_dir), "source_files": [str(batch_dir / n) for n in names]}
    return _assemble(
        "cifar10", images, labels, per_class=per_class, test_per_class=test_per_class,
        standardize=standardize, flatten=flatten, seed=seed, device=device, dtype=dtype, info=info,
    )
