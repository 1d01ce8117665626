"""The theory checks' own steps: the sweep of T2-T4, stationarity (T1), the last layer (T5), the
balanced norms (T7), one mixture per spread (T9, E2) and the members with lambda = 0 (T8)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nrc.data import Dataset
from nrc.models import Architecture
from nrc.train import TrainConfig

from .base import Setup, architecture, data_for, scale_text, train_config


def kink_fraction(sweep, x, tol: float) -> dict:
    """Per non-diverged member: the fraction of hidden pre-activations ``a`` with
    ``|a| <= tol * max|a|`` on the inputs ``x`` (float64), as ``{member: fraction}``."""
    import numpy as np
    import torch

    from nrc.models import forward

    keep = np.flatnonzero(~np.asarray(sweep.diverged, dtype=bool))
    if len(keep) == 0:
        return {}
    idx = torch.as_tensor(keep)
    with torch.no_grad():
        p64 = {k: v[idx].to(torch.float64) for k, v in sweep.params.items()}
        _, recorded = forward(sweep.arch, p64, x.to(torch.float64), record=True)
    hidden_out = torch.cat([s.output.flatten(1) for s in recorded[:-1]], dim=1).abs()
    scale = hidden_out.amax(dim=1, keepdim=True).clamp_min(1e-300)
    frac = (hidden_out <= tol * scale).double().mean(1)
    return dict(zip(keep.tolist(), frac.tolist()))


def surviving(an):
    """The analysed members (rows of ``an.members``) that did not diverge; raises if none is left."""
    ok = an.members[~an.members["diverged"]]
    if ok.empty:
        raise RuntimeError("every member diverged; lower lr or change the grid")
    return ok


def last_layer_table(sweep, an, loss: str, site: str, num_classes: int):
    """Corollary A1 (a) per surviving member: the largest and K-th singular values of the weight
    ``site``, the norm of its column sums over sqrt(K), and ``||G||_F / lambda`` (float64)."""
    import numpy as np
    import pandas as pd
    import torch

    K = num_classes
    rows = []
    sites = an.sites[an.sites["site"] == site].set_index("member")
    for m in surviving(an)["member"]:
        W = sweep.params[site][m].double()
        s = torch.linalg.svdvals(W)
        lam = float(sweep.members[m]["weight_decay"])
        rows.append({"loss": loss, "member": int(m), "weight_decay": lam, "seed": sweep.members[m]["seed"],
                     "s_1": float(s[0]), "s_K": float(s[K - 1]), "sK_rel": float(s[K - 1] / s[0]),
                     "colsum_norm": float(W.sum(0).norm() / np.sqrt(K)),
                     "grad_term": float(sites.loc[m, "grad_norm"]) / lam,
                     "stationarity": float(sites.loc[m, "stationarity"])})
    return pd.DataFrame(rows)


def output_term(arch: Architecture, params: dict, x, y, loss: str):
    """``-(1/N) sum_i <grad_f loss_i, f(x_i)>`` per member, in float64 (Lemma A5's right-hand side)."""
    import torch

    from nrc.models import forward
    from nrc.train import member_losses

    p = {k: v.detach().to(torch.float64) for k, v in params.items()}
    x = x.to(torch.float64)
    with torch.no_grad():
        f = forward(arch, p, x)
    f = f.requires_grad_(True)
    per = member_losses(f, y.unsqueeze(0).expand(f.shape[0], -1), loss)
    (delta,) = torch.autograd.grad(per.sum(), f)
    return (-(delta * f).sum((1, 2)) / x.shape[0]).detach().cpu().numpy()


def loss_trajectory(arch: Architecture, data: Dataset, members: list[dict], config: TrainConfig, method: str,
                    device=None) -> list[dict]:
    """Train ``members`` with ``config`` and record, at the start and after every epoch, each member's
    regularised loss ``L_lambda`` and sum of squared weight norms (float64), as rows tagged ``method``."""
    import torch

    from nrc.models import init_params
    from nrc.train import regularized_loss, train

    recs = []
    x64, y = data.x_train.to(torch.float64), data.y_train
    wd64 = torch.tensor([m["weight_decay"] for m in members], dtype=torch.float64)

    def measure(epoch, params):
        with torch.no_grad():
            p = {k: v.detach().to("cpu", torch.float64) for k, v in params.items()}
            llam = regularized_loss(arch, p, x64, y, wd64, config.loss).numpy()
            sq = sum(v.flatten(1).pow(2).sum(1) for k, v in p.items() if k.startswith("W")).numpy()
        for i, m in enumerate(members):
            recs.append({"method": method, "member": i, "weight_decay": m["weight_decay"], "seed": m["seed"],
                         "step": epoch + 1, "L_lam": float(llam[i]), "sum_sq": float(sq[i])})

    measure(-1, init_params(arch, [m["seed"] for m in members], init_scale=config.init_scale))
    train(arch, data, members, config, device=device, progress=False,
          callback=lambda epoch, params, diverged: measure(epoch, params))
    return recs


def train_and_analyze(store, arch: Architecture, data: Dataset, members: list[dict], losses: Sequence[str], *,
                      epochs: int, batch_size: int, lr: float, refine_steps: int = 0, device=None,
                      analysis_device=None):
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
        The device that trains (``None``: the GPU where there is one).
    analysis_device : str or None
        The device of :func:`nrc.analyze` (``None``: the CPU).

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
    sweeps : dict
        ``{loss: nrc.Sweep}``, the trained sweeps.
    """
    import numpy as np
    import pandas as pd

    from nrc.analysis import analyze

    site_tables, member_tables, seconds, used, sweeps = [], [], 0.0, None, {}
    for loss in losses:
        sweep = store.train(arch, data, members, train_config(loss, epochs=epochs, batch_size=batch_size, lr=lr,
                                                              refine_steps=refine_steps), device=device)
        sweeps[loss] = sweep
        seconds += float(sweep.seconds)
        used = sweep.device
        an = analyze(sweep, data, device=analysis_device, store=store)  # T2, T3, T4 share one analysis
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
    return sites, member_table, seconds, str(used), sweeps


@dataclass
class TheoremSweep:
    """What :func:`theorem_sweep` trained and measured (the sweep of T2, T3 and T4).

    ``sites``, ``member_table`` and ``seconds`` are those of :func:`train_and_analyze`; ``sweeps``
    maps each loss to its trained :class:`nrc.Sweep`; ``device`` is the device that trained and
    ``scale`` the sentence of :func:`scale_text`.
    """

    sites: object
    member_table: object
    sweeps: dict
    seconds: float
    device: str
    scale: str


def theorem_sweep(nb: Setup) -> TheoremSweep:
    """Train (or load) and measure the sweep of a Theorem A notebook (T2, T3, T4) from its :func:`prepare` set-up.

    T2, T3 and T4 share this sweep (and so their cache keys): ``nb.data``, ``nb.arch`` and
    ``nb.members`` of :func:`prepare`, one cached sweep per loss in ``nb.params.losses``
    (:func:`train_and_analyze`, with the parameters' ``epochs``, ``batch_size``, ``lr`` and
    ``refine_steps``), measured on :attr:`Setup.analysis_device`. Where members diverged it
    displays a note saying how many were left out. The parameters were checked by the notebook's
    model in :mod:`nrc_companion.params` (e.g. every ``lambda > 0``: the bound divides by it).

    Parameters
    ----------
    nb : Setup
        From :func:`prepare`.

    Returns
    -------
    TheoremSweep
    """
    p = nb.params
    sites, member_table, seconds, used, sweeps = train_and_analyze(
        nb.store, nb.arch, nb.data, nb.members, p.losses, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
        refine_steps=p.refine_steps, device=nb.device, analysis_device=nb.analysis_device)
    scale = scale_text(nb.data, nb.arch.widths, members=len(nb.members) * len(p.losses), epochs=p.epochs,
                       seeds=p.seeds, device=used, seconds=seconds,
                       extra=f"losses {', '.join(p.losses)}, {p.refine_steps} L-BFGS steps")
    diverged = int(member_table["diverged"].sum())
    if diverged:
        from IPython.display import Markdown, display

        display(Markdown(f"**{diverged} member(s) diverged** and are left out."))
    return TheoremSweep(sites, member_table, sweeps, seconds, used, scale)


# one Gaussian mixture per spread (T9, E2); the spectra of members with lambda = 0 (T8)


@dataclass
class SpreadSweep:
    """A stacked sweep in which every member has its own Gaussian mixture (:func:`spread_sweep`).

    Attributes
    ----------
    arch : Architecture
        The MLP ``(dim, *hidden, K)`` of the parameters (``activation`` default ReLU, ``bias`` default off).
    datasets, members, info : list
        One entry per member, in the order ``spread`` (outer) x ``seed`` (inner): the data set, the
        member ``{"weight_decay", "seed"}`` and the ``member_info`` of :func:`nrc.analyze`
        (``{**info, "spread": s}``).
    """

    arch: Architecture
    datasets: list[Dataset]
    members: list[dict]
    info: list[dict]


def spread_sweep(params, spreads: Iterable[float], *, data_seed_per_seed: bool = False, info: dict | None = None,
                 **overrides) -> SpreadSweep:
    """One member per ``spread x seed`` at the notebook's one ``weight_decay``, each on its own mixture (T9, E2).

    Parameters
    ----------
    params : pydantic model or dict
        The notebook's parameters: ``seeds``, ``weight_decay``, ``hidden`` and what
        :func:`data_for` reads (``num_classes``, ``dim``, ``per_class``, ``center_scale``, ``data_seed``).
    spreads : iterable of float
        The within-class standard deviations, in the order the members take.
    data_seed_per_seed : bool
        ``False`` (T9): every mixture is drawn with ``data_seed``, so the centres and noise directions
        are the same at every spread and seed. ``True`` (E2): the member's seed is also the data seed.
    info : dict, optional
        Extra ``member_info`` columns for every member (e.g. ``{"K": K}``).
    **overrides
        Fields of ``params`` replaced for the data and the network (e.g. ``num_classes=K`` when the
        parameters list several).

    Returns
    -------
    SpreadSweep
        Data identical to :func:`data_for` ``(params, spread=s, ...)``, so the cache keys are those of
        a notebook that draws each mixture with :func:`nrc.make_gaussian_mixture` itself.
    """
    p = {**dict(params), **overrides}
    drawn: dict = {}
    datasets, grid_members, infos = [], [], []
    for s in spreads:
        for seed in p["seeds"]:
            data_seed = int(seed) if data_seed_per_seed else int(p.get("data_seed", 0))
            key = (float(s), data_seed)
            if key not in drawn:
                drawn[key] = data_for(p, spread=float(s), data_seed=data_seed)
            datasets.append(drawn[key])
            grid_members.append({"weight_decay": float(p["weight_decay"]), "seed": int(seed)})
            infos.append({**(info or {}), "spread": float(s)})
    arch = architecture(datasets[0], p["hidden"], activation=p.get("activation", "relu"), bias=p.get("bias", False))
    return SpreadSweep(arch, datasets, grid_members, infos)


def unregularised_tables(sweep, num_classes: int, loss: str):
    """The spectral columns of :func:`nrc.analyze`'s tables for the members trained with lambda = 0 (T8).

    T8 analyses its members with lambda > 0 through ``nrc.analyze`` (whose stationarity and Theorem A
    columns divide by lambda, so are infinite at 0, and whose analysis of those members T2 has
    already stored); a rank-against-lambda sweep still wants the spectra of its unregularised
    members. For every non-diverged member with ``weight_decay == 0`` and every weight matrix, in
    that order:

    Returns
    -------
    sites : DataFrame
        Columns ``loss``, ``weight_decay`` (0.0), ``seed``, ``site``, ``layer`` (1-based), ``dK``,
        ``dK_rel``, ``rank_1e-2``, ``rank_1e-3``, ``sK1_ratio`` (:math:`s_{K+1}/s_1`, 0 where there is
        no :math:`s_{K+1}` or the matrix is 0), ``frob``; ``stationarity``, ``tcv2`` and ``bound``
        are NaN.
    spectra : DataFrame
        Columns ``loss``, ``weight_decay``, ``seed``, ``member`` (``10_000 +`` the member's index, apart
        from ``nrc.analyze``'s numbering), ``site``, ``j`` (1-based), ``s`` and ``s_rel`` (:math:`s_j/s_1`).
        Both are empty (no columns) when no member has lambda = 0.
    """
    import numpy as np
    import pandas as pd

    from nrc.spectra import dist_to_rank, numerical_rank, relative_dist_to_rank, svdvals

    K = int(num_classes)
    site_rows, spec_frames = [], []
    for i, m in enumerate(sweep.members):
        if m["weight_decay"] > 0 or sweep.diverged[i]:
            continue
        for layer, (name, _, _) in enumerate(sweep.arch.sites(), start=1):
            sv = svdvals(sweep.params[name][i])
            site_rows.append({
                "loss": loss, "weight_decay": 0.0, "seed": m["seed"], "site": name, "layer": layer,
                "dK": float(dist_to_rank(sv, K)), "dK_rel": float(relative_dist_to_rank(sv, K)),
                "rank_1e-2": int(numerical_rank(sv, 1e-2)), "rank_1e-3": int(numerical_rank(sv, 1e-3)),
                "sK1_ratio": float(sv[K] / sv[0]) if len(sv) > K and sv[0] > 0 else 0.0,
                "frob": float(np.sqrt((np.asarray(sv) ** 2).sum())), "stationarity": np.nan, "tcv2": np.nan,
                "bound": np.nan})
            spec_frames.append(pd.DataFrame({"loss": loss, "weight_decay": 0.0, "seed": m["seed"],
                                             "member": 10_000 + i, "site": name, "j": np.arange(1, len(sv) + 1),
                                             "s": sv, "s_rel": np.asarray(sv) / sv[0]}))
    spectra = pd.concat(spec_frames, ignore_index=True) if spec_frames else pd.DataFrame()
    return pd.DataFrame(site_rows), spectra
