"""One call from a trained sweep to the tidy tables every notebook plots.

:func:`analyze` combines spectra (:mod:`nrc.spectra`), collapse metrics (:mod:`nrc.collapse`)
and the Theorem A quantities (:mod:`nrc.theorem`) for every member and weight matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import spectra
from .data import Dataset
from .models import Architecture, forward
from .theorem import site_quantities
from .train import Sweep, member_losses

__all__ = ["Analysis", "analyze", "analyze_model"]


@dataclass
class Analysis:
    """Tables of one analysed sweep.

    Attributes
    ----------
    sites : DataFrame
        One row per (member, weight matrix): member scalars plus ``SITE_COLUMNS``.
    members : DataFrame
        One row per member: scalars, losses, accuracies, ``diverged``.
    spectra : DataFrame
        One row per (member, site, index j): singular value ``s`` and ``s_rel = s / s_1``.
    """

    sites: pd.DataFrame
    members: pd.DataFrame
    spectra: pd.DataFrame

    def tidy(self) -> pd.DataFrame:
        """The long table ``member x layer x metric`` (columns: member scalars, site, layer, metric, value)."""
        id_cols = [c for c in self.sites.columns if c not in _metric_columns(self.sites)]
        return self.sites.melt(id_vars=id_cols, var_name="metric", value_name="value")


def _metric_columns(df):
    from .theorem import SITE_COLUMNS

    return [c for c in df.columns if c in SITE_COLUMNS]


def _member_frame(members: list[dict], info: list[dict] | None) -> pd.DataFrame:
    df = pd.DataFrame(members)
    df.insert(0, "member", np.arange(len(members)))
    if info:
        extra = pd.DataFrame(info)
        df = pd.concat([df, extra.drop(columns=[c for c in extra.columns if c in df.columns])], axis=1)
    return df


def analyze(sweep: Sweep, data, *, partition: str = "labels", member_info: list[dict] | None = None,
            device=None, member_chunk: int = 8, seed: int = 0) -> Analysis:
    """Measure every member of a trained sweep on its training data.

    Parameters
    ----------
    sweep : Sweep
        From :func:`nrc.train` or :meth:`nrc.ResultStore.train`.
    data : Dataset or list of Dataset
        The training data of the sweep (one per member if it was trained that way). The test
        split, if present, gives the test accuracy.
    partition : {"labels", "kmeans"}
        Partition used for the within-class residuals ``R`` of Theorem A.
    member_info : list of dict, optional
        Extra per-member columns (e.g. the data spread of each member).
    device : optional
        Where to compute (default: CPU); float64 throughout.
    member_chunk : int
        Members measured at once.
    seed : int
        Seed of the k-means partition (``partition="kmeans"``).

    Returns
    -------
    Analysis
        Diverged members are listed in ``members`` (``diverged=True``) and left out of
        ``sites`` and ``spectra``.
    """
    device = torch.device(device or "cpu")
    per_member = not isinstance(data, Dataset)
    datasets = list(data) if per_member else [data]
    x = torch.stack([d.x_train for d in datasets]) if per_member else data.x_train
    y = torch.stack([d.y_train for d in datasets]) if per_member else data.y_train
    keep = ~np.asarray(sweep.diverged, dtype=bool)
    members = _member_frame(sweep.members, member_info)
    members["diverged"] = ~keep
    idx = torch.as_tensor(np.flatnonzero(keep), dtype=torch.long)
    params = {k: v[idx].to(device) for k, v in sweep.params.items()}
    wd = np.array([m["weight_decay"] for m in sweep.members])[keep]
    xs, ys = (x[idx], y[idx]) if per_member else (x, y)
    # member-level quantities: losses and accuracies (float64)
    stats = _member_stats(sweep, params, xs, ys, wd, datasets, idx, per_member, device)
    members = members.merge(stats, on="member", how="left")
    if len(idx) == 0:
        return Analysis(pd.DataFrame(), members, pd.DataFrame())
    sites = site_quantities(sweep.arch, params, xs.to(device), ys.to(device), wd, loss=sweep.config.loss,
                            regularize_bias=sweep.config.regularize_bias, partition=partition,
                            member_chunk=member_chunk, seed=seed)
    sites["member"] = idx.numpy()[sites["member"].to_numpy()]
    ids = members.drop(columns=[c for c in stats.columns if c != "member"] + ["diverged"])
    sites = ids.merge(sites, on="member")
    spec_rows = []
    for name, _, _ in sweep.arch.sites():
        s = spectra.svdvals(sweep.params[name][idx])
        for row, m in enumerate(idx.tolist()):
            for j, v in enumerate(s[row]):
                spec_rows.append((m, name, j + 1, v, v / s[row][0] if s[row][0] > 0 else 0.0))
    spec = pd.DataFrame(spec_rows, columns=["member", "site", "j", "s", "s_rel"])
    spec = ids.merge(spec, on="member")
    return Analysis(sites, members, spec)


def _member_stats(sweep, params, xs, ys, wd, datasets, idx, per_member, device):
    rows = []
    arch, loss = sweep.arch, sweep.config.loss
    with torch.no_grad():
        p64 = {k: v.to(torch.float64) for k, v in params.items()}
        if len(idx):
            logits = forward(arch, p64, xs.to(device, torch.float64))
            yy = ys.to(device) if per_member else ys.to(device).unsqueeze(0).expand(len(idx), -1)
            L0 = member_losses(logits, yy, loss).mean(1)
            acc = (logits.argmax(-1) == yy).double().mean(1)
            reg = sum(0.5 * p.flatten(1).pow(2).sum(1) for k, p in p64.items()
                      if k[0] in "WV" or sweep.config.regularize_bias)
            Llam = L0 + torch.as_tensor(wd, device=device) * reg
            test = _test_accuracy(arch, p64, datasets, idx, per_member, device)
        for row, m in enumerate(idx.tolist()):
            rows.append({"member": m, "train_loss": float(L0[row]), "reg_loss": float(Llam[row]),
                         "train_acc": float(acc[row]), "test_acc": test[row]})
    return pd.DataFrame(rows, columns=["member", "train_loss", "reg_loss", "train_acc", "test_acc"])


def _test_accuracy(arch, p64, datasets, idx, per_member, device):
    if per_member:
        if any(d.x_test.shape[0] == 0 for d in datasets):
            return [float("nan")] * len(idx)
        xt = torch.stack([datasets[i].x_test for i in idx.tolist()]).to(device, torch.float64)
        yt = torch.stack([datasets[i].y_test for i in idx.tolist()]).to(device)
    else:
        d = datasets[0]
        if d.x_test.shape[0] == 0:
            return [float("nan")] * len(idx)
        xt = d.x_test.to(device, torch.float64)
        yt = d.y_test.to(device).unsqueeze(0).expand(len(idx), -1)
    return (forward(arch, p64, xt).argmax(-1) == yt).double().mean(1).tolist()


def analyze_model(model: torch.nn.Module, data: Dataset, *, loss: str = "ce", weight_decay: float,
                  partition: str = "labels") -> Analysis:
    """Analyse a user's own feed-forward torch model (trained anywhere) on a labelled data set.

    Parameters
    ----------
    model : torch.nn.Module
        An ``nn.Sequential`` of ``Linear`` layers and one kind of activation
        (see ``nrc.from_module``).
    data : Dataset
        The training data the model was fitted on (the bound is about the training loss).
    loss : {"ce", "mse"}
        The loss the model was trained with.
    weight_decay : float
        The coupled L2 weight decay ``lambda`` it was trained with (> 0).

    Returns
    -------
    Analysis
        Per-layer spectra, numerical ranks, ``d_K^F``, previous-layer TCV/NC1 and the
        Theorem A bound with the measured gradient term.
    """
    from .models import from_module
    from .train import TrainConfig

    if not weight_decay > 0:
        raise ValueError(f"weight_decay must be > 0 for the Theorem A bound, got {weight_decay}")
    arch, params = from_module(model)
    sweep = Sweep(arch, TrainConfig(loss=loss), [{"weight_decay": float(weight_decay), "seed": 0, "lr": 0.0}],
                  params, {}, np.zeros(1, dtype=bool), 0.0, "cpu")
    return analyze(sweep, data, partition=partition)
