"""Datasets: a seeded Gaussian mixture and offline-first loaders for MNIST, Fashion-MNIST, CIFAR-10.

Every loader returns a :class:`Dataset` whose tensors already sit on the requested device, with
samples as rows (``x`` of shape ``(N, d)``) and ``int64`` labels ``0..K-1`` (see ``DESIGN.md``);
:func:`load_dataset` picks a loader by name. The package is split by job:

* :mod:`nrc.data.dataset`: the :class:`Dataset` container and the argument checks;
* :mod:`nrc.data.synthetic`: the Gaussian mixture;
* :mod:`nrc.data.formats`: the idx and CIFAR-10 pickle file formats, parsed with NumPy;
* :mod:`nrc.data.download`: the data root, mirrors, md5-checked atomic downloads;
* :mod:`nrc.data.images`: the three real-data loaders (find, subset, standardise).

Why not torchvision: its datasets read and download exactly these layouts, but its PyPI wheel
links CUDA libraries and cannot be imported beside the CPU-only torch (``2.x+cpu``) this project
runs on, so the two small formats are parsed here instead. Revisit this when a CPU build of
torchvision matching the installed torch becomes installable: ``formats`` and ``download`` could
then give way to ``torchvision.datasets`` (same layouts under the data root, same md5 sums).
"""

from __future__ import annotations

from typing import Any

from ..timing import timed as _timed
from .dataset import Dataset
from .download import MIRROR_ENV_VAR, MIRRORS, data_root
from .formats import DataFileError
from .images import load_cifar10, load_fashion_mnist, load_mnist
from .synthetic import gaussian_mixture_centers, make_gaussian_mixture

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
