"""The seeded Gaussian mixture: class centres and balanced samples with a within-class spread knob."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset, check_dtype, check_float, check_int

__all__ = ["gaussian_mixture_centers", "make_gaussian_mixture"]

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
    num_classes = check_int("num_classes", num_classes, 2)
    dim = check_int("dim", dim, 1)
    center_scale = check_float("center_scale", center_scale, 0.0, strict=True)
    seed = check_int("seed", seed, 0)
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
    per_class = check_int("per_class", per_class, 1)
    test_per_class = check_int("test_per_class", test_per_class, 0)
    spread = check_float("spread", spread, 0.0)
    dtype = check_dtype(dtype)
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
