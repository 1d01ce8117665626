"""One call from a trained sweep to the tidy tables every notebook plots.

:func:`analyze` combines spectra (:mod:`nrc.spectra`), collapse metrics (:mod:`nrc.collapse`)
and the Theorem A quantities (:mod:`nrc.theorem`) for every member and weight matrix.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import spectra
from .data import Dataset
from .models import Architecture, forward, is_decayed
from .theorem import is_partition_list, site_tables
from .timing import timed
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


#: The modules whose code determines an analysis: a change to any of them invalidates cached analyses.
_ANALYSIS_CODE = ("analysis.py", "theorem.py", "collapse.py", "spectra.py", "models.py", "train.py")


def _analysis_key(sweep: Sweep, datasets, partition, member_info, device, member_chunk, seed) -> str:
    """Content hash of everything an analysis depends on: the parameters, the data, the settings,
    the code of ``_ANALYSIS_CODE`` and the torch / numpy versions."""
    h = hashlib.sha256()
    for name in _ANALYSIS_CODE:
        h.update((Path(__file__).parent / name).read_bytes())
    settings = {"arch": sweep.arch.to_dict(), "loss": sweep.config.loss, "bias": sweep.config.regularize_bias,
                "members": sweep.members, "diverged": np.asarray(sweep.diverged, dtype=bool).tolist(),
                "partition": partition, "info": member_info, "device": str(device), "chunk": member_chunk,
                "seed": seed, "torch": torch.__version__, "numpy": np.__version__}
    h.update(repr(sorted((k, repr(v)) for k, v in settings.items())).encode())
    tensors = [sweep.params[k] for k in sorted(sweep.params)]
    for d in datasets:
        tensors += [d.x_train, d.y_train, d.x_test, d.y_test]
    for t in tensors:
        h.update(f"{tuple(t.shape)} {t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _frame_dict(df: pd.DataFrame) -> dict:
    return {"columns": [str(c) for c in df.columns], "dtypes": [str(t) for t in df.dtypes],
            "values": [df[c].tolist() for c in df.columns]}


def _frame(d: dict) -> pd.DataFrame:
    df = pd.DataFrame(dict(zip(d["columns"], d["values"])), columns=d["columns"])
    return df.astype(dict(zip(d["columns"], d["dtypes"]))) if len(df) else df


def _load_analysis(path: Path) -> Analysis | None:
    from .safeload import load_or_set_aside

    entry = load_or_set_aside(path, "cached analysis", required=("sites", "members", "spectra"))
    return None if entry is None else Analysis(*(_frame(entry[k]) for k in ("sites", "members", "spectra")))


def _save_analysis(path: Path, an: Analysis) -> None:
    """Write atomically (a unique temporary file, then a rename): a concurrent reader sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save({k: _frame_dict(getattr(an, k)) for k in ("sites", "members", "spectra")}, tmp)
    os.replace(tmp, path)


@timed("analysis")
def analyze(sweep: Sweep, data, *, partition="labels", member_info: list[dict] | None = None,
            device=None, member_chunk: int = 8, seed: int = 0, store=None) -> Analysis:
    """Measure every member of a trained sweep on its training data.

    Parameters
    ----------
    sweep : Sweep
        From :func:`nrc.train` or :meth:`nrc.ResultStore.train`.
    data : Dataset or list of Dataset
        The training data of the sweep (one per member if it was trained that way). The test
        split, if present, gives the test accuracy.
    partition : {"labels", "kmeans", "random"}, callable, Tensor, or a list of names
        Partition used for the within-class residuals ``R`` of Theorem A (any partition gives a
        bound): see :func:`nrc.site_quantities`. A tensor of group labels of shape (M, N) has one
        row per member of the sweep (diverged members' rows are dropped with them). A list of
        names (``["kmeans", "random"]``) gives a list of analyses, one per partition, each equal to
        the analysis of that partition alone, at the cost of one forward and backward pass.
    member_info : list of dict, optional
        Extra per-member columns (e.g. the data spread of each member).
    device : optional
        Where to compute (default: CPU); float64 throughout.
    member_chunk : int
        Members measured at once.
    seed : int
        Seed of the ``"kmeans"`` and ``"random"`` partitions.
    store : nrc.ResultStore, optional
        Keep the analysis under ``store.root / "analyses"``, keyed by a hash of the parameters,
        the data, every argument above and the code of the analysis modules, and load it from
        there when asked again: the notebooks that measure the same sweep (T2, T3, T4, T8 of the
        full profile) compute it once. Partitions given as a callable or a tensor are not cached.

    Returns
    -------
    Analysis, or a list of them for a list of partitions
        Diverged members are listed in ``members`` (``diverged=True``) and left out of
        ``sites`` and ``spectra``.
    """
    device = torch.device(device or "cpu")
    per_member = not isinstance(data, Dataset)
    datasets = list(data) if per_member else [data]
    several = is_partition_list(partition)
    partitions = list(partition) if several else [partition]
    paths, found = [None] * len(partitions), [None] * len(partitions)
    for k, part in enumerate(partitions):
        if store is not None and isinstance(part, str):
            key = _analysis_key(sweep, datasets, part, member_info, device, member_chunk, seed)
            paths[k] = Path(store.root) / "analyses" / f"{key}.pt"
            found[k] = _load_analysis(paths[k]) if paths[k].exists() else None
    missing = [k for k, an in enumerate(found) if an is None]
    if missing:
        fresh = _analyze(sweep, data, datasets, per_member, [partitions[k] for k in missing], member_info, device,
                         member_chunk, seed)
        for k, an in zip(missing, fresh):
            found[k] = an
            if paths[k] is not None:
                _save_analysis(paths[k], an)
    return found if several else found[0]


def _analyze(sweep, data, datasets, per_member, partitions, member_info, device, member_chunk,
             seed) -> list[Analysis]:
    """One analysis per partition of ``partitions``; what does not depend on the partition (the
    members' losses and accuracies, the forward and backward pass, the spectra) is computed once."""
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
        return [Analysis(pd.DataFrame(), members.copy(), pd.DataFrame()) for _ in partitions]
    # rows of the members kept, for a tensor of group labels per member
    partitions = [p[idx] if isinstance(p, torch.Tensor) and p.ndim == 2 else p for p in partitions]
    tables = site_tables(sweep.arch, params, xs.to(device), ys.to(device), wd, loss=sweep.config.loss,
                         partitions=partitions, member_chunk=member_chunk, seed=seed)
    ids = members.drop(columns=[c for c in stats.columns if c != "member"] + ["diverged"])
    site_frames = []
    for sites in tables:
        sites["member"] = idx.numpy()[sites["member"].to_numpy()]
        site_frames.append(ids.merge(sites, on="member"))
    spec_rows = []
    for name, _, _ in sweep.arch.sites():
        s = spectra.svdvals(sweep.params[name][idx])
        for row, m in enumerate(idx.tolist()):
            for j, v in enumerate(s[row]):
                spec_rows.append((m, name, j + 1, v, v / s[row][0] if s[row][0] > 0 else 0.0))
    spec = pd.DataFrame(spec_rows, columns=["member", "site", "j", "s", "s_rel"])
    spec = ids.merge(spec, on="member")
    return [Analysis(sites, members.copy(), spec.copy()) for sites in site_frames]


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
                      if is_decayed(k, sweep.config.regularize_bias))
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


def _loss_convention(loss, weight_decay: float, num_classes: int, n_samples: int):
    """(nrc loss name, lambda in nrc's convention, description) for a loss name or torch loss object.

    nrc's losses are means over samples: ``ce`` = ``nn.CrossEntropyLoss()`` and ``mse`` =
    ``(1/N) sum_i 1/2 ||f(x_i) - e_{y_i}||^2``. A model trained on ``c * L_nrc`` with coupled
    weight decay ``lambda`` has the stationary points of ``L_nrc`` with weight decay
    ``lambda / c``: ``nn.MSELoss()`` (mean over all N*K entries) is ``c = 2/K``, so
    ``lambda_nrc = lambda * K / 2``; ``nn.MSELoss(reduction="sum")`` is ``c = 2N``;
    ``nn.CrossEntropyLoss(reduction="sum")`` is ``c = N``.
    """
    if isinstance(loss, str):
        if loss not in ("ce", "mse"):
            raise ValueError(f"loss must be 'ce', 'mse', nn.CrossEntropyLoss() or nn.MSELoss(), got {loss!r}")
        return loss, weight_decay, loss
    reduction = getattr(loss, "reduction", "mean")
    if isinstance(loss, torch.nn.MSELoss):
        scale = {"mean": 2.0 / num_classes, "sum": 2.0 * n_samples}.get(reduction)
        name = "mse"
    elif isinstance(loss, torch.nn.CrossEntropyLoss):
        if getattr(loss, "weight", None) is not None or getattr(loss, "label_smoothing", 0.0):
            raise ValueError("loss: nn.CrossEntropyLoss with class weights or label smoothing is not "
                             "supported (the bound is derived for the plain loss)")
        scale = {"mean": 1.0, "sum": float(n_samples)}.get(reduction)
        name = "ce"
    else:
        raise ValueError(f"loss must be 'ce', 'mse', nn.CrossEntropyLoss() or nn.MSELoss(), "
                         f"got {type(loss).__name__}")
    if scale is None:
        raise ValueError(f"loss: reduction={reduction!r} is not supported; use 'mean' or 'sum'")
    return name, weight_decay / scale, f"{type(loss).__name__}(reduction={reduction!r})"


@timed("analysis")
def analyze_model(model: torch.nn.Module, data: Dataset, *, loss="ce", weight_decay: float,
                  partition="labels") -> Analysis:
    """Analyse a user's own feed-forward torch model (trained anywhere) on a labelled data set.

    Parameters
    ----------
    model : torch.nn.Module
        An ``nn.Sequential`` of ``Linear`` layers and one kind of activation
        (see ``nrc.from_module``). Its output width must equal the number of classes ``K``.
    data : Dataset
        The training data the model was fitted on (the bound is about the training loss);
        ``data.num_classes`` must equal the model's output width, every class must have training
        samples, and ``data.dim`` must equal the model's input width.
    loss : {"ce", "mse"} or torch loss object
        The loss the model was trained with, in one of two forms:

        * ``"ce"`` = ``nn.CrossEntropyLoss()``; ``"mse"`` = nrc's
          ``(1/N) sum_i 1/2 ||f(x_i) - e_{y_i}||^2`` with one-hot targets;
        * the torch object itself: ``nn.CrossEntropyLoss()``, ``nn.MSELoss()`` (one-hot targets),
          with ``reduction="mean"`` or ``"sum"``. ``nn.MSELoss()`` averages over all ``N*K``
          entries, i.e. it is ``2/K`` times nrc's ``"mse"``, so the weight decay is converted to
          nrc's convention, ``lambda_nrc = lambda * K / 2`` (``"sum"`` reductions: ``lambda / (2N)``
          for MSE, ``lambda / N`` for CE). Pass the object and the ``lambda`` you trained with;
          the conversion is done here.
    weight_decay : float
        The coupled L2 weight decay ``lambda`` it was trained with (> 0), as given to
        ``torch.optim.SGD(weight_decay=...)`` (the gradient of ``lambda/2 ||W||^2``).
    partition : {"labels", "kmeans", "random"}, callable or Tensor
        Partition of the within-class residuals (see :func:`nrc.site_quantities`).

    Returns
    -------
    Analysis
        Per-layer spectra, numerical ranks, ``d_K^F``, previous-layer TCV/NC1 and the
        Theorem A bound with the measured gradient term, all in nrc's loss convention
        (``members.weight_decay`` is ``lambda_nrc``; ``weight_decay_given`` and
        ``loss_convention`` record what was passed).

    Raises
    ------
    ValueError
        ``weight_decay`` not finite and > 0; the model's output width differs from
        ``data.num_classes``; a class without training samples; mismatched input width; an
        unsupported loss.
    """
    from .models import from_module
    from .train import TrainConfig

    if isinstance(weight_decay, bool) or not np.isfinite(float(weight_decay)) or not float(weight_decay) > 0:
        raise ValueError(f"weight_decay must be > 0 and finite for the Theorem A bound, got {weight_decay}")
    arch, params = from_module(model)
    K = int(data.num_classes)
    if arch.num_classes != K:
        raise ValueError(f"the model has {arch.num_classes} outputs but the data have {K} classes "
                         f"(data.num_classes); K must be both")
    if arch.widths[0] != data.dim:
        raise ValueError(f"the model takes inputs of width {arch.widths[0]} but the data have dimension {data.dim}")
    present = torch.unique(data.y_train).tolist()
    if int(data.y_train.min()) < 0 or int(data.y_train.max()) >= K:
        raise ValueError(f"data.y_train must hold labels 0..{K - 1}, got values {present[:10]}")
    if len(present) != K:
        missing = sorted(set(range(K)) - set(present))
        raise ValueError(f"every one of the K={K} classes needs training samples; none for class(es) {missing}")
    name, lam, convention = _loss_convention(loss, float(weight_decay), K, data.n_train)
    sweep = Sweep(arch, TrainConfig(loss=name), [{"weight_decay": lam, "seed": 0, "lr": 0.0}],
                  params, {}, np.zeros(1, dtype=bool), 0.0, "cpu")
    info = [{"weight_decay_given": float(weight_decay), "loss_convention": convention}]
    return analyze(sweep, data, partition=partition, member_info=info)
