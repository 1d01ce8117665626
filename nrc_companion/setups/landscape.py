"""The landscape experiments' set-up (E4, E4b, E5): float64 training tensors and the trained starts."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Setup


@dataclass
class TrainedStarts:
    """The trained networks of a landscape notebook (:func:`trained_starts`).

    Attributes
    ----------
    x, y : Tensor
        The training inputs in float64 and the labels, on the notebook's device.
    sweep : nrc.Sweep
    n_cached : int
        Members loaded from the cache instead of trained.
    seconds : float
        Wall time of the cache look-up and the training.
    starts : list of dict
        Per non-diverged member, in member order: ``member``, ``weight_decay``, ``seed``,
        ``params`` (unstacked float64 on the device, :func:`nrc.landscape.member_params`),
        ``train_acc`` and ``train_loss`` (:func:`nrc.landscape.fit`).
    """

    x: object
    y: object
    sweep: object
    n_cached: int
    seconds: float
    starts: list


def float64_training(nb: Setup) -> tuple:
    """``(x, y)``: the training inputs of ``nb.data`` in float64 and its labels, on ``nb.device``."""
    import torch

    return nb.data.x_train.to(nb.device, torch.float64), nb.data.y_train.to(nb.device)


def trained_starts(nb: Setup, members: list[dict] | None = None) -> TrainedStarts:
    """Train ``members`` (default ``nb.members``) with ``nb.config`` through ``nb.store``, and measure each.

    Every non-diverged member's parameters are taken in float64 to ``nb.device`` and its training
    accuracy and loss measured there (the starts of E4, the networks of E4b, E5's trained spectra).
    """
    import time

    from nrc import landscape

    members = nb.members if members is None else members
    t0 = time.perf_counter()
    n_cached = sum(nb.store.cached(nb.arch, nb.config, nb.data, members))
    sweep = nb.store.train(nb.arch, nb.data, members, nb.config, device=nb.device, progress=False)
    seconds = time.perf_counter() - t0
    x, y = float64_training(nb)
    starts = []
    for m, mem in enumerate(sweep.members):
        if sweep.diverged[m]:
            continue
        p = landscape.member_params(sweep, m, device=nb.device)
        starts.append({"member": m, "weight_decay": mem["weight_decay"], "seed": mem["seed"], "params": p,
                       **landscape.fit(nb.arch, p, x, y, loss=nb.config.loss)})
    return TrainedStarts(x, y, sweep, n_cached, seconds, starts)
