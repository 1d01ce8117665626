"""The standard set-up of the theory-check notebooks: data, architecture, members, training config.

Every notebook that trains the usual sweep (a bias-free MLP over a grid of weight decay and seed)
builds it through these functions, so identical parameter values give identical
:meth:`nrc.ResultStore.member_key` cache keys and the notebooks share trained members. In
particular, a theory check run with ``dataset="mnist"``, ``hidden=[128, 128, 128]``,
``activation="relu"``, ``bias=False``, ``per_class``, ``epochs``, ``batch_size``, ``lr``,
``refine_steps`` and ``data_seed=0`` equal to E1's parameters (E1's ``momentum`` is 0.9) reuses
E1's trained members for every ``(weight_decay, seed)`` they have in common.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .data import Dataset, load_dataset, make_gaussian_mixture
from .models import Architecture
from .train import TrainConfig, grid

__all__ = ["load_data", "architecture", "members", "train_config", "train_and_analyze", "scale_text",
           "theorem_sweep", "TheoremSweep", "check_image_sweep"]


def load_data(dataset: str = "synthetic", *, num_classes: int = 4, dim: int = 10, per_class: int = 30,
              spread: float = 0.7, data_seed: int = 0, test_per_class: int | None = 0) -> Dataset:
    """The training data of a notebook: the Gaussian mixture, or a balanced image subset.

    Parameters
    ----------
    dataset : str
        ``"synthetic"`` (or ``"gmm"``) for :func:`nrc.make_gaussian_mixture`; otherwise a name
        accepted by :func:`nrc.load_dataset` (``"mnist"``, ``"fashion-mnist"``, ...), loaded
        flattened and standardised, downloaded when missing.
    num_classes, dim, spread : int, int, float
        Classes, input dimension and within-class standard deviation of the mixture (ignored for
        image data).
    per_class : int
        Training samples per class.
    data_seed : int
        Seed of the mixture draw or of the balanced subset.
    test_per_class : int or None
        Test samples per class of an image data set (``None``: the whole test split). The
        training tensors, and so the cache keys, do not depend on it.

    Returns
    -------
    Dataset
    """
    if dataset in ("synthetic", "gmm"):
        return make_gaussian_mixture(num_classes=int(num_classes), dim=int(dim), per_class=int(per_class),
                                     spread=float(spread), seed=int(data_seed))
    return load_dataset(dataset, per_class=int(per_class), test_per_class=test_per_class, seed=int(data_seed),
                        download=True)


def architecture(data: Dataset, hidden: Sequence[int], *, activation: str = "relu",
                 bias: bool = False) -> Architecture:
    """The MLP ``(d_0, *hidden, K)`` for ``data``: input width and class count taken from the data."""
    return Architecture((int(data.dim), *[int(h) for h in hidden], int(data.num_classes)),
                        activation=activation, bias=bool(bias))


def members(weight_decays: Iterable[float], seeds: Iterable[int]) -> list[dict]:
    """The ``weight_decay x seed`` grid, weight decays sorted ascending (floats), seeds as ints."""
    return grid(weight_decay=sorted(float(w) for w in weight_decays), seed=[int(s) for s in seeds])


def train_config(loss: str, *, epochs: int, batch_size: int, lr: float, refine_steps: int = 0,
                 momentum: float = 0.9, regularize_bias: bool = True) -> TrainConfig:
    """SGD with momentum and a cosine schedule, then ``refine_steps`` full-batch L-BFGS steps in float64.

    ``refine_steps = 0`` means SGD only. This is the configuration of E1, of T1-T5, T8, T9 and the
    derivation, and of T7's near-stationary run; ``regularize_bias=False`` leaves biases out of the
    weight decay (T5).
    """
    steps = max(int(refine_steps), 0)
    return TrainConfig(loss=loss, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                       momentum=float(momentum), schedule="cosine", refine="lbfgs" if steps > 0 else "none",
                       refine_steps=steps, refine_dtype="float64", regularize_bias=bool(regularize_bias))


def scale_text(data: Dataset, widths: Sequence[int], *, members: int, epochs: int, seeds: Iterable,
               device, seconds: float | None = None, extra: str = "") -> str:
    """One sentence stating the scale of a run (for ``nrc.record`` / glue).

    Parameters
    ----------
    data : Dataset
    widths : sequence of int
        Layer widths of the network(s).
    members : int
        Trained members in total.
    epochs : int
        SGD epochs per member.
    seeds : iterable
        The seeds used.
    device : str or None
        The device that trained (``None``: automatic).
    seconds : float, optional
        Training wall time in seconds (cached members count the time they took when trained).
    extra : str
        Appended as is.
    """
    seeds = list(seeds)
    text = (f"{data.name}, N = {data.n_train} training samples, K = {data.num_classes} classes; "
            f"widths {tuple(int(w) for w in widths)}; {members} members, {epochs} SGD epochs, "
            f"{len(seeds)} seed(s); device {device or 'auto'}")
    if seconds is not None:
        text += f"; training wall time {seconds:.1f} s"
    return text + (f"; {extra}" if extra else "") + "."


def train_and_analyze(store, arch: Architecture, data: Dataset, members: list[dict], losses: Sequence[str], *,
                      epochs: int, batch_size: int, lr: float, refine_steps: int = 0, device=None):
    """Train (or load from ``store``) one sweep per loss and measure every weight matrix in float64.

    Parameters
    ----------
    store : nrc.ResultStore
    arch, data, members
        From :func:`architecture`, :func:`load_data` and :func:`members`.
    losses : sequence of str
        ``"mse"`` and/or ``"ce"``: one cached sweep each, configured by :func:`train_config`.
    epochs, batch_size, lr, refine_steps
        Passed to :func:`train_config`.
    device : str or None

    Returns
    -------
    sites : DataFrame
        ``Analysis.sites`` of every loss with a ``loss`` column, plus ``collapsed`` (the member's
        weights all shrank to about 0: the product of their Frobenius norms is below 1e-6, the
        trivial critical point) and ``trivial`` (``min(d_out, d_in) <= K``, so the distance to
        rank ``K`` is 0 by shape). Diverged members are left out by ``nrc.analyze``.
    member_table : DataFrame
        ``Analysis.members`` of every loss with a ``loss`` column.
    seconds : float
        Training wall time (as recorded when each member was trained).
    device : str
        The device the sweeps ran on.
    """
    import numpy as np
    import pandas as pd

    from .analysis import analyze

    site_tables, member_tables, seconds, used = [], [], 0.0, None
    for loss in losses:
        sweep = store.train(arch, data, members, train_config(loss, epochs=epochs, batch_size=batch_size, lr=lr,
                                                              refine_steps=refine_steps), device=device)
        seconds += float(sweep.seconds)
        used = sweep.device
        an = analyze(sweep, data, device=device)
        site_tables.append(an.sites.assign(loss=loss))
        member_tables.append(an.members.assign(loss=loss))
    sites = pd.concat(site_tables, ignore_index=True)
    member_table = pd.concat(member_tables, ignore_index=True)
    if sites.empty:
        raise RuntimeError("every member diverged; lower lr or change the grid")
    for col in ["dK", "bound", "bound_cs", "bound_a2", "grad_norm"]:
        if col in sites and not np.isfinite(sites[col]).all():
            raise RuntimeError(f"non-finite values in column {col}")
    weight_scale = sites.groupby(["loss", "member"])["frob"].prod()
    sites["collapsed"] = [bool(weight_scale[(l, m)] < 1e-6) for l, m in zip(sites["loss"], sites["member"])]
    shapes = {name: (d_out, d_in) for name, d_out, d_in in arch.sites()}
    sites["trivial"] = [min(shapes[s]) <= data.num_classes for s in sites["site"]]
    return sites, member_table, seconds, str(used)


@dataclass
class TheoremSweep:
    """What :func:`theorem_sweep` built, trained and measured (the set-up of T2, T3 and T4)."""

    data: Dataset
    arch: Architecture
    members: list[dict]
    store: object
    sites: object
    member_table: object
    seconds: float
    device: str | None
    scale: str


def theorem_sweep(*, dataset: str, num_classes: int, dim: int, per_class: int, spread: float, data_seed: int,
                  hidden: Sequence[int], activation: str, bias: bool, losses: Sequence[str],
                  weight_decays: Sequence[float], seeds: Sequence[int], epochs: int, batch_size: int,
                  lr: float, refine_steps: int, device: str) -> TheoremSweep:
    """Check the parameters of a Theorem A notebook, then build, train (or load) and measure its sweep.

    T2, T3 and T4 share this set-up (and so their cache keys): the data of :func:`load_data`, the
    bias-free (or not) MLP of :func:`architecture`, one cached sweep per loss over
    ``weight_decays x seeds`` (:func:`train_and_analyze`).

    Raises
    ------
    ValueError
        A parameter outside its range (the message names it): ``device`` not auto/cpu/cuda, an
        unknown activation or loss, an empty grid or a ``lambda <= 0`` (the bound divides by
        lambda), non-positive widths, ``refine_steps < 0``.
    """
    from .models import ACTIVATIONS
    from .results import ResultStore

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not weight_decays or any(float(w) <= 0 for w in weight_decays):
        raise ValueError("weight_decays must be a non-empty list of positive numbers (the bound divides by lambda)")
    if not seeds:
        raise ValueError("seeds must be non-empty")
    if not losses or any(l not in ("mse", "ce") for l in losses):
        raise ValueError(f"losses must be a non-empty list of 'mse' and/or 'ce', got {losses}")
    if not hidden or any(int(h) < 1 for h in hidden):
        raise ValueError("hidden must be a non-empty list of positive widths")
    if refine_steps < 0:
        raise ValueError("refine_steps must be >= 0")
    dev = None if device == "auto" else device
    data = load_data(dataset, num_classes=num_classes, dim=dim, per_class=per_class, spread=spread,
                     data_seed=data_seed)
    arch = architecture(data, hidden, activation=activation, bias=bias)
    grid_members = members(weight_decays, seeds)
    store = ResultStore()
    sites, member_table, seconds, used = train_and_analyze(
        store, arch, data, grid_members, losses, epochs=epochs, batch_size=batch_size, lr=lr,
        refine_steps=refine_steps, device=dev)
    scale = scale_text(data, arch.widths, members=len(grid_members) * len(losses), epochs=epochs, seeds=seeds,
                       device=used, seconds=seconds, extra=f"losses {', '.join(losses)}, {refine_steps} L-BFGS steps")
    return TheoremSweep(data, arch, grid_members, store, sites, member_table, seconds, dev, scale)


def check_image_sweep(*, datasets: Sequence[str], loss: str, device: str, weight_decays: Sequence[float],
                      seeds: Sequence[int], widths: Sequence[int], per_class: int, refine_steps: int,
                      min_distinct: int = 2, need_positive: bool = False, residual: bool = False,
                      dataset_key: str = "datasets") -> str:
    """Check the parameters shared by the image-data experiments (E1, E3, E6); return the device.

    Raises
    ------
    ValueError
        Naming the parameter: a data set other than mnist / fashion-mnist (or repeated), a loss
        other than ce / mse, a device other than auto / cpu / cuda, fewer than ``min_distinct``
        weight decays or a negative one, no positive one when ``need_positive`` (the bound divides
        by lambda), no seeds, widths not ``[784, hidden..., 10]`` (``residual``: at least two equal
        hidden widths), ``per_class < 1`` or ``refine_steps < 0``.
    """
    import torch

    if not datasets or any(d not in ("mnist", "fashion-mnist") for d in datasets) or len(set(datasets)) != len(datasets):
        raise ValueError(f"{dataset_key} must be 'mnist' or 'fashion-mnist' (a non-empty list of distinct ones "
                         f"for 'datasets'), got {datasets!r}")
    if loss not in ("ce", "mse"):
        raise ValueError(f"loss must be 'ce' or 'mse', got {loss!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if not weight_decays or any(float(w) < 0 for w in weight_decays):
        raise ValueError("weight_decays must be a non-empty list of numbers >= 0")
    if len(set(float(w) for w in weight_decays)) < min_distinct:
        raise ValueError(f"weight_decays needs at least {min_distinct} distinct values to see a trend")
    if need_positive and not any(float(w) > 0 for w in weight_decays):
        raise ValueError("weight_decays needs at least one lambda > 0 (the bound divides by lambda)")
    if not seeds:
        raise ValueError("seeds must be non-empty")
    if residual and (len(widths) < 4 or widths[0] != 784 or widths[-1] != 10 or len(set(widths[1:-1])) != 1):
        raise ValueError("widths must be [784, h, h, ..., 10] with at least two equal hidden widths "
                         f"(one residual block per extra hidden width), got {widths}")
    if not residual and (len(widths) < 3 or widths[0] != 784 or widths[-1] != 10):
        raise ValueError(f"widths must be [784, hidden..., 10] with at least one hidden layer, got {widths}")
    if per_class < 1 or refine_steps < 0:
        raise ValueError("per_class must be >= 1 and refine_steps >= 0")
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
