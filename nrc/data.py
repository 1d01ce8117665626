"""Datasets: a seeded Gaussian mixture and offline-first loaders for MNIST, Fashion-MNIST, CIFAR-10.

Every loader returns a :class:`Dataset` whose tensors already sit on the requested device, with
samples as rows (``x`` of shape ``(N, d)``) and ``int64`` labels ``0..K-1`` (see ``DESIGN.md``).

The real datasets are read from files in torchvision's standard layouts under a data root
(``data_root``); nothing touches the network unless ``download=True`` is passed. Downloads come
from the official locations in ``MIRRORS`` or, when ``$NRC_DATA_MIRROR`` (or a loader's
``mirrors=``) names one, from a server laid out like a data root; every file is checked against the
md5 that torchvision checks and lands atomically. The idx and CIFAR pickle formats are parsed here
with NumPy, so torchvision is not a dependency.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import math
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .timing import timed as _timed

try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # NumPy < 1.26 has no numpy._core
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

__all__ = [
    "DATASETS",
    "MIRRORS",
    "MIRROR_ENV_VAR",
    "DataFileError",
    "Dataset",
    "data_root",
    "gaussian_mixture_centers",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "make_gaussian_mixture",
]

#: Canonical dataset names accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = ("synthetic", "mnist", "fashion-mnist", "cifar10")

_ALIASES = {
    "synthetic": "synthetic",
    "gmm": "synthetic",
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
}

#: Where Debian's ``dataset-fashion-mnist`` package installs the four idx ``.gz`` files; searched
#: after the data root so that a machine without network can still load Fashion-MNIST.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_ENV_VAR = "NRC_DATA"

#: Environment variable naming download mirrors (whitespace- or comma-separated base URLs) laid
#: out like a data root (``<url>/MNIST/raw/<file>``, ``<url>/cifar-10-python.tar.gz``). When set,
#: only these are tried, never the official ``MIRRORS``.
MIRROR_ENV_VAR = "NRC_DATA_MIRROR"

#: Official download locations per dataset, tried in order: base URLs to which the published
#: file name is appended (the ones torchvision uses).
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
}

# Tries per URL: a connection that drops mid-file is retried once before the next URL.
_ATTEMPTS = 2
_TIMEOUT_S = 60
_DEFAULT_ROOT = Path("~/.cache/nrc/data")

# Standardisation divides by one global std; the floor only matters for a constant training set,
# where every centred value is already 0 and any positive divisor leaves it so.
_STD_FLOOR = 1e-6

# Rows per chunk when summing squares in float64, so a float32 CIFAR-10 array is never copied
# whole into float64 (50000 x 3072 would need 1.2 GB).
_CHUNK_ROWS = 4096

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)

# Base names (without ``.gz``) of the four idx files, shared by MNIST and Fashion-MNIST.
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class _IdxSource:
    """Where an idx dataset lives under the root and where to download it from."""

    name: str
    title: str
    subdir: tuple[str, ...]
    md5: dict[str, str]  # ``.gz`` file name -> md5 of the published file


_MNIST = _IdxSource(
    name="mnist",
    title="MNIST",
    subdir=("MNIST", "raw"),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)

_FASHION_MNIST = _IdxSource(
    name="fashion-mnist",
    title="Fashion-MNIST",
    subdir=("FashionMNIST", "raw"),
    # The checksums torchvision verifies. Debian's package recompresses the files, so its .gz
    # differ; existing files are therefore never checked, only fresh downloads.
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_TEST = "test_batch"
_CIFAR10_TARBALL = "cifar-10-python.tar.gz"
_CIFAR10_MD5 = {_CIFAR10_TARBALL: "c58f30108f718f92721af3b95e74349a"}
_CIFAR10_SHAPE = (3, 32, 32)

_NUM_CLASSES = 10  # MNIST, Fashion-MNIST and CIFAR-10 all have ten classes


# --------------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A labelled train/test split, tensors already on their device.

    Parameters
    ----------
    x_train : torch.Tensor
        Training inputs, float, shape ``(N, d)`` (or ``(N, C, H, W)`` for images loaded with
        ``flatten=False``).
    y_train : torch.Tensor
        Training labels, ``int64``, shape ``(N,)``, values in ``0..num_classes-1``.
    x_test, y_test : torch.Tensor
        The test split in the same layout; 0 rows when there is no test split.
    num_classes : int
        Number of classes ``K``.
    name : str
        Canonical dataset name, one of ``DATASETS``.
    info : dict
        JSON-friendly provenance: generation parameters or source files, subset sizes,
        standardisation statistics.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if y.dtype != torch.int64 or y.ndim != 1:
                raise ValueError(
                    f"y_{split} must be a 1-d int64 tensor, got {y.dtype} {tuple(y.shape)}"
                )
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}")

    @property
    def n_train(self) -> int:
        """Number of training samples ``N``."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples (0 when there is no test split)."""
        return int(self.x_test.shape[0])

    @property
    def dim(self) -> int:
        """Number of input features per sample (product of the non-sample dimensions)."""
        return math.prod(self.x_train.shape[1:])

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Dataset:
        """Return a copy on ``device``; ``dtype`` (if given) applies to the inputs only.

        Labels stay ``int64`` whatever ``dtype`` is, because losses index with them.
        """
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype}")
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device=device, dtype=dtype),
            y_train=self.y_train.to(device=device),
            x_test=self.x_test.to(device=device, dtype=dtype),
            y_test=self.y_test.to(device=device),
            info=dict(self.info),
        )


# --------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass, but ``per_class=True`` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value: Any, minimum: float, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if strict and not value > minimum:
        raise ValueError(f"{name} must be > {minimum:g}, got {value:g}")
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value:g}")
    return float(value)


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    return dtype


# --------------------------------------------------------------------------------------------
# Synthetic Gaussian mixture
# --------------------------------------------------------------------------------------------

# Independent random streams derived from one user seed. Using seed, seed+1, ... directly would
# make the noise of seed s the centres of seed s+1; SeedSequence spawn keys avoid that overlap.
_STREAM_CENTERS, _STREAM_TRAIN_NOISE, _STREAM_TEST_NOISE = 0, 1, 2


def _generator(seed: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence(seed, spawn_key=(stream,)).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state))


def gaussian_mixture_centers(
    num_classes: int = 4, dim: int = 10, center_scale: float = 2.0, seed: int = 0
) -> torch.Tensor:
    """Class centres of :func:`make_gaussian_mixture`, ``center_scale * N(0, I_dim)`` per class.

    They depend only on ``(seed, num_classes, dim, center_scale)``, never on the spread or the
    sample counts, so a sweep over ``spread`` at a fixed seed keeps the same centres.

    Parameters
    ----------
    num_classes : int
        Number of classes ``K >= 2``.
    dim : int
        Input dimension ``d >= 1``.
    center_scale : float
        Standard deviation of each centre coordinate, ``> 0``.
    seed : int
        Non-negative seed.

    Returns
    -------
    torch.Tensor
        Float64 CPU tensor of shape ``(K, d)``.
    """
    num_classes = _check_int("num_classes", num_classes, 2)
    dim = _check_int("dim", dim, 1)
    center_scale = _check_float("center_scale", center_scale, 0.0, strict=True)
    seed = _check_int("seed", seed, 0)
    gen = _generator(seed, _STREAM_CENTERS)
    return center_scale * torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)


def make_gaussian_mixture(
    num_classes: int = 4,
    dim: int = 10,
    per_class: int = 30,
    spread: float = 0.7,
    center_scale: float = 2.0,
    test_per_class: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Sample a balanced isotropic Gaussian mixture.

    Each sample is ``centre_k + spread * eps`` with ``eps ~ N(0, I_dim)`` and the centres from
    ``gaussian_mixture_centers``. Samples are ordered class by class.

    Three independent random streams are derived from ``seed``: centres, training noise and test
    noise. Hence the centres ignore ``spread``/``per_class``, the training set ignores
    ``test_per_class``, and for fixed ``(seed, per_class)`` the noise ``eps`` is the same at every
    ``spread`` — a spread sweep only rescales the within-class deviations.

    Everything is drawn in float64 on the CPU, then cast to ``dtype`` and moved to ``device``, so
    CPU and GPU runs see identical data.

    Parameters
    ----------
    num_classes : int
        Number of classes ``K >= 2``.
    dim : int
        Input dimension ``d >= 1``.
    per_class : int
        Training samples per class, ``>= 1``.
    spread : float
        Within-class standard deviation, ``>= 0`` (0 puts every sample on its centre).
    center_scale : float
        Standard deviation of each centre coordinate, ``> 0``.
    test_per_class : int
        Test samples per class, ``>= 0`` (0: empty test split).
    seed : int
        Non-negative seed.
    device : str or torch.device
        Device of the returned tensors.
    dtype : torch.dtype
        Floating dtype of the inputs.

    Returns
    -------
    Dataset
        ``name="synthetic"``; ``info`` records the generation parameters.
    """
    per_class = _check_int("per_class", per_class, 1)
    test_per_class = _check_int("test_per_class", test_per_class, 0)
    spread = _check_float("spread", spread, 0.0)
    dtype = _check_dtype(dtype)
    centers = gaussian_mixture_centers(num_classes, dim, center_scale, seed)

    def sample(n: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = _generator(seed, stream)
        noise = torch.randn(num_classes, n, dim, generator=gen, dtype=torch.float64)
        x = (centers[:, None, :] + spread * noise).reshape(num_classes * n, dim)
        y = torch.arange(num_classes, dtype=torch.int64).repeat_interleave(n)
        return x.to(dtype).to(device), y.to(device)

    x_train, y_train = sample(per_class, _STREAM_TRAIN_NOISE)
    x_test, y_test = sample(test_per_class, _STREAM_TEST_NOISE)
    info = {
        "spread": spread,
        "center_scale": float(center_scale),
        "per_class": per_class,
        "test_per_class": test_per_class,
        "seed": int(seed),
    }
    return Dataset(x_train, y_train, x_test, y_test, int(num_classes), "synthetic", info)


# --------------------------------------------------------------------------------------------
# Data root, file parsing and downloads
# --------------------------------------------------------------------------------------------


class DataFileError(ValueError):
    """A data file on disk is truncated or corrupt; the message names it and how to fix it."""


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data root: ``root`` if given, else ``$NRC_DATA``, else ``~/.cache/nrc/data``.

    A relative path is resolved against the current working directory at the time of the call,
    so the result is always absolute. The directory is not created; loaders create it only when
    they download.
    """
    if root is not None:
        path = Path(root)
    elif os.environ.get(_ENV_VAR):
        path = Path(os.environ[_ENV_VAR])
    else:
        path = _DEFAULT_ROOT
    return path.expanduser().absolute()


def _corrupt(path: Path, why: str) -> DataFileError:
    return DataFileError(
        f"{path} is truncated or corrupt ({why}). Fix: delete it and load again with "
        f"download=True (`nrc sweep --download` on the command line), or copy an intact file there."
    )


def _open_maybe_gzip(path: Path) -> BinaryIO:
    # Sniff the gzip magic instead of trusting the suffix: people gunzip files and keep names.
    with open(path, "rb") as fh:
        is_gzip = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte idx file (big-endian header) and check its magic number."""
    try:
        with _open_maybe_gzip(path) as fh:
            raw = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    if len(raw) < 4:
        raise _corrupt(path, f"too short to be an idx file: {len(raw)} bytes")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: idx magic number is {found}, expected {magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, "truncated idx header")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != math.prod(shape):
        raise _corrupt(path, f"header announces shape {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _mirror_roots(mirrors: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """Override mirrors (data-root URLs): ``mirrors`` if given, else ``$NRC_DATA_MIRROR``."""
    if mirrors is None:
        mirrors = os.environ.get(MIRROR_ENV_VAR) or None
    if mirrors is None:
        return None
    if isinstance(mirrors, str):
        mirrors = mirrors.replace(",", " ").split()
    roots = [str(m).rstrip("/") for m in mirrors if str(m).strip()]
    if not roots:
        raise ValueError(f"mirrors must name at least one URL, got {mirrors!r}")
    return roots


def _urls(dataset: str, layout_path: str, mirrors: Any) -> tuple[str, ...]:
    """Where to fetch the file at ``layout_path`` (relative to a data root) of ``dataset``."""
    roots = _mirror_roots(mirrors)
    if roots is not None:
        return tuple(f"{r}/{layout_path}" for r in roots)
    name = layout_path.rsplit("/", 1)[-1]
    return tuple(base + name for base in MIRRORS[dataset])


class _Retry(Exception):
    """A transfer failed in a way worth one more try (dropped connection, short body)."""


def _fetch(url: str, out: BinaryIO, digest: Any) -> int:
    """Stream ``url`` into ``out``; returns the byte count, raises ``_Retry`` when cut short."""
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
    except urllib.error.HTTPError:
        raise  # the server answered (404, 403...): another try would get the same answer
    except (OSError, http.client.HTTPException) as exc:
        # URLError, resets and timeouts are OSErrors; IncompleteRead is an HTTPException.
        raise _Retry(f"{type(exc).__name__}: {exc} after {received} bytes") from exc
    if expected is not None and received != int(expected):
        raise _Retry(f"connection closed after {received} of {expected} bytes")
    return received


def _download(urls: tuple[str, ...], target: Path, md5: str | None) -> None:
    """Fetch the first working URL into ``target`` atomically, verifying ``md5`` when known.

    Bytes go to a temporary file in the target directory that replaces ``target`` only once
    complete and verified, so an interrupted or corrupt download never leaves a partial file.
    A transfer cut short is retried once (``_ATTEMPTS``) before the next URL is tried; a wrong
    checksum or an HTTP error moves on to the next URL at once. When every URL fails, the folders
    this call created for ``target`` are removed again (those still empty).
    """
    created = _missing_dirs(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download_into(urls, target, md5)
    except BaseException:
        # A failed download (offline, Ctrl-C) leaves no empty folders behind: a later look at
        # the data root must not find FashionMNIST/raw/ and think the data set is half there.
        for folder in created:
            try:
                folder.rmdir()  # only if empty; deepest first
            except OSError:
                break
        raise


def _missing_dirs(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``folder``, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _download_into(urls: tuple[str, ...], target: Path, md5: str | None) -> None:
    """The body of :func:`_download` once ``target.parent`` exists."""
    errors = []
    for url in urls:
        for attempt in range(1, _ATTEMPTS + 1):
            fd, tmp_name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
            tmp = Path(tmp_name)
            try:
                digest = hashlib.md5(usedforsecurity=False)
                with os.fdopen(fd, "wb") as out:
                    _fetch(url, out, digest)
                if md5 is not None and digest.hexdigest() != md5:
                    errors.append(
                        f"{url}: md5 {digest.hexdigest()} does not match the expected {md5}"
                    )
                    break
                os.replace(tmp, target)
                return
            except _Retry as exc:
                errors.append(f"{url} (try {attempt} of {_ATTEMPTS}): {exc}")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                errors.append(f"{url}: {exc}")
                break
            finally:
                tmp.unlink(missing_ok=True)
    raise RuntimeError(
        f"could not download {target.name} into {target.parent}:\n  "
        + "\n  ".join(errors)
        + f"\nFix: set ${_ENV_VAR} (or root=) to a data root that already holds the file, or set "
        f"${MIRROR_ENV_VAR} to a reachable server laid out like a data root."
    )


def _find_idx(directory: Path) -> dict[str, Path]:
    """Map each idx role to its file in ``directory`` (``.gz`` or not); absent roles are omitted."""
    found = {}
    for role, base in _IDX_FILES.items():
        for candidate in (directory / f"{base}.gz", directory / base):
            if candidate.is_file():
                found[role] = candidate
                break
    return found


def _missing_files_error(
    title: str, names: list[str], searched: list[Path], layout: str, note: str
) -> FileNotFoundError:
    lines = [f"{title} files not found. Expected {', '.join(names)} {note}".rstrip()]
    for directory in searched:
        lines.append(f"  searched {directory}")
    lines.append(
        f"Fix: set ${_ENV_VAR} (or root=) to a data root holding {layout}/, or fetch the "
        f"files: download=True in Python, `--download` with `nrc sweep` (from the official "
        f"mirrors, or from ${MIRROR_ENV_VAR} when set)."
    )
    return FileNotFoundError("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Subsetting, standardisation and assembly shared by the real loaders
# --------------------------------------------------------------------------------------------


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
        _check_int("per_class", per_class, 1)
    if test_per_class is not None:
        _check_int("test_per_class", test_per_class, 0)
    _check_int("seed", seed, 0)
    _check_dtype(dtype)


# --------------------------------------------------------------------------------------------
# Real datasets
# --------------------------------------------------------------------------------------------


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
    files = next((f for f in map(_find_idx, searched) if len(f) == len(_IDX_FILES)), None)
    if files is None and download:
        present = _find_idx(primary)
        for role, base in _IDX_FILES.items():
            if role not in present:
                gz = f"{base}.gz"
                urls = _urls(source.name, "/".join((*source.subdir, gz)), mirrors)
                _download(urls, primary / gz, source.md5.get(gz))
        files = _find_idx(primary)
    if files is None:
        names = [f"{base}.gz" for base in _IDX_FILES.values()]
        raise _missing_files_error(
            source.title,
            names,
            searched,
            "/".join(source.subdir),
            "(or the same names without .gz)",
        )

    images = (
        _read_idx(files["train_images"], _IDX_IMAGES_MAGIC),
        _read_idx(files["test_images"], _IDX_IMAGES_MAGIC),
    )
    labels = (
        _read_idx(files["train_labels"], _IDX_LABELS_MAGIC),
        _read_idx(files["test_labels"], _IDX_LABELS_MAGIC),
    )
    info = {
        "directory": str(files["train_images"].parent),
        "source_files": [str(files[role]) for role in _IDX_FILES],
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


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays, since pickle can otherwise run arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            # The published pickles name numpy.core (NumPy 1), newer ones numpy._core (NumPy 2);
            # either way rebuild with this NumPy's own function.
            return _np_reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        # latin1 is how NumPy arrays pickled by Python 2 (the published files) must be decoded.
        try:
            batch = _CifarUnpickler(fh, encoding="latin1").load()
        except EOFError as exc:
            raise _corrupt(path, "the pickle ends early") from exc
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != math.prod(_CIFAR10_SHAPE):
        raise ValueError(f"{path}: data has shape {data.shape}, expected (n, 3072)")
    # Rows store the red, green and blue 32x32 planes one after the other: channel-first.
    return data.reshape(-1, *_CIFAR10_SHAPE), labels


def _download_cifar10(root: Path, batch_dir: Path, mirrors: Any) -> None:
    tarball = root / _CIFAR10_TARBALL
    if not tarball.is_file():
        urls = _urls("cifar10", _CIFAR10_TARBALL, mirrors)
        _download(urls, tarball, _CIFAR10_MD5[_CIFAR10_TARBALL])
    batch_dir.mkdir(parents=True, exist_ok=True)
    try:
        _extract_cifar10(tarball, batch_dir)
    except (tarfile.TarError, EOFError, zlib.error, KeyError) as exc:
        raise _corrupt(tarball, f"{type(exc).__name__}: {exc}") from exc


def _extract_cifar10(tarball: Path, batch_dir: Path) -> None:
    with tarfile.open(tarball, "r:gz") as tar:
        for name in (*_CIFAR10_TRAIN, _CIFAR10_TEST):
            target = batch_dir / name
            if target.is_file():
                continue
            # Extract only the known members under names chosen here, so a crafted archive cannot
            # write outside the root; temp file + os.replace keeps each file all-or-nothing.
            src = tar.extractfile(f"{_CIFAR10_DIR}/{name}")
            if src is None:
                raise RuntimeError(f"{tarball} has no regular file {_CIFAR10_DIR}/{name}")
            fd, tmp_name = tempfile.mkstemp(dir=batch_dir, prefix=f".{name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.replace(tmp_name, target)
            finally:
                Path(tmp_name).unlink(missing_ok=True)


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
    batch_dir = base / _CIFAR10_DIR
    names = [*_CIFAR10_TRAIN, _CIFAR10_TEST]
    if download and not all((batch_dir / n).is_file() for n in names):
        _download_cifar10(base, batch_dir, mirrors)
    missing = [n for n in names if not (batch_dir / n).is_file()]
    if missing:
        raise _missing_files_error(
            "CIFAR-10", names, [batch_dir], _CIFAR10_DIR, f"(missing: {', '.join(missing)})"
        )

    train = [_read_cifar_batch(batch_dir / n) for n in _CIFAR10_TRAIN]
    test = _read_cifar_batch(batch_dir / _CIFAR10_TEST)
    images = (np.concatenate([x for x, _ in train]), test[0])
    labels = (np.concatenate([y for _, y in train]), test[1])
    info = {"directory": str(batch_dir), "source_files": [str(batch_dir / n) for n in names]}
    return _assemble(
        "cifar10", images, labels, per_class=per_class, test_per_class=test_per_class,
        standardize=standardize, flatten=flatten, seed=seed, device=device, dtype=dtype, info=info,
    )


@_timed("data")  # nrc.timing: loading counts as the notebook's "data" phase
def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a dataset by name, forwarding ``kwargs`` to its loader.

    Parameters
    ----------
    name : str
        ``"synthetic"``/``"gmm"`` (:func:`make_gaussian_mixture`), ``"mnist"``,
        ``"fashion-mnist"`` (also ``"fashion_mnist"``, ``"fashionmnist"``) or ``"cifar10"``
        (also ``"cifar-10"``); case-insensitive.
    **kwargs
        Keyword arguments of the chosen loader.

    Returns
    -------
    Dataset
    """
    canonical = _ALIASES.get(str(name).strip().lower())
    if canonical is None:
        raise ValueError(f"unknown dataset {name!r}; allowed names: {', '.join(_ALIASES)}")
    loader = {
        "synthetic": make_gaussian_mixture,
        "mnist": load_mnist,
        "fashion-mnist": load_fashion_mnist,
        "cifar10": load_cifar10,
    }[canonical]
    return loader(**kwargs)
