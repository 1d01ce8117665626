"""The :class:`Dataset` container every loader returns, and the argument checks the loaders share."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Dataset", "check_dtype", "check_float", "check_int"]


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


def check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass, but ``per_class=True`` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(name: str, value: Any, minimum: float, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if strict and not value > minimum:
        raise ValueError(f"{name} must be > {minimum:g}, got {value:g}")
    if not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value:g}")
    return float(value)


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    return dtype
