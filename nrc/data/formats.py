"""File formats of the real data sets, parsed with NumPy: idx (MNIST, Fashion-MNIST) and CIFAR-10's pickles.

Nothing here touches the network. A truncated or corrupt file raises :class:`DataFileError`
naming the file and how to replace it.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # NumPy < 1.26 has no numpy._core
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

__all__ = ["CIFAR10_DIR", "CIFAR10_SHAPE", "CIFAR10_TARBALL", "CIFAR10_TEST", "CIFAR10_TRAIN",
           "DataFileError", "IDX_FILES", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "corrupt",
           "extract_cifar10", "find_idx", "read_cifar_batch", "read_idx"]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)

# Base names (without ``.gz``) of the four idx files, shared by MNIST and Fashion-MNIST.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR10_SHAPE = (3, 32, 32)


class DataFileError(ValueError):
    """A data file on disk is truncated or corrupt; the message names it and how to fix it."""


def corrupt(path: Path, why: str) -> DataFileError:
    return DataFileError(
        f"{path} is truncated or corrupt ({why}). Fix: delete it and load again with "
        f"download=True (`nrc sweep --download` on the command line), or copy an intact file there."
    )


def _open_maybe_gzip(path: Path) -> BinaryIO:
    # Sniff the gzip magic instead of trusting the suffix: people gunzip files and keep names.
    with open(path, "rb") as fh:
        is_gzip = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte idx file (big-endian header) and check its magic number."""
    try:
        with _open_maybe_gzip(path) as fh:
            raw = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    if len(raw) < 4:
        raise corrupt(path, f"too short to be an idx file: {len(raw)} bytes")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: idx magic number is {found}, expected {magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt(path, "truncated idx header")
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != math.prod(shape):
        raise corrupt(path, f"header announces shape {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def find_idx(directory: Path) -> dict[str, Path]:
    """Map each idx role to its file in ``directory`` (``.gz`` or not); absent roles are omitted."""
    found = {}
    for role, base in IDX_FILES.items():
        for candidate in (directory / f"{base}.gz", directory / base):
            if candidate.is_file():
                found[role] = candidate
                break
    return found


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


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as fh:
        # latin1 is how NumPy arrays pickled by Python 2 (the published files) must be decoded.
        try:
            batch = _CifarUnpickler(fh, encoding="latin1").load()
        except EOFError as exc:
            raise corrupt(path, "the pickle ends early") from exc
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != math.prod(CIFAR10_SHAPE):
        raise ValueError(f"{path}: data has shape {data.shape}, expected (n, 3072)")
    # Rows store the red, green and blue 32x32 planes one after the other: channel-first.
    return data.reshape(-1, *CIFAR10_SHAPE), labels


def extract_cifar10(tarball: Path, batch_dir: Path) -> None:
    with tarfile.open(tarball, "r:gz") as tar:
        for name in (*CIFAR10_TRAIN, CIFAR10_TEST):
            target = batch_dir / name
            if target.is_file():
                continue
            # Extract only the known members under names chosen here, so a crafted archive cannot
            # write outside the root; temp file + os.replace keeps each file all-or-nothing.
            src = tar.extractfile(f"{CIFAR10_DIR}/{name}")
            if src is None:
                raise RuntimeError(f"{tarball} has no regular file {CIFAR10_DIR}/{name}")
            fd, tmp_name = tempfile.mkstemp(dir=batch_dir, prefix=f".{name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.replace(tmp_name, target)
            finally:
                Path(tmp_name).unlink(missing_ok=True)
