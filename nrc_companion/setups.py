"""The standard set-up of the theory-check notebooks: data, architecture, members, training config.

Every notebook that trains the usual sweep (a bias-free MLP over a grid of weight decay and seed)
builds it through these functions, so identical parameter values give identical
:meth:`nrc.ResultStore.member_key` cache keys and the notebooks share trained members. In
particular, a theory check run with ``dataset="mnist"``, ``hidden=[128, 128, 128]``,
``activation="relu"``, ``bias=False``, ``per_class``, ``epochs``, ``batch_size``, ``lr``,
``refine_steps`` and ``data_seed=0`` equal to E1's parameters (E1's ``momentum`` is 0.9) reuses
E1's trained members for every ``(weight_decay, seed)`` they have in common.

The second half builds the structured inputs of the registry's checks (:mod:`nrc_companion.verdicts`) that
several notebooks share, so that one rule reads one kind of table everywhere: the rank trend and
its reported ranks (T8, E1, E3: :func:`rank_trend_inputs`), Theorem A's rows with its two terms
(:func:`bound_terms`, :func:`bound_inputs`, :func:`bound_summary`, :func:`vacuous_terms`), NC1 at
initialisation and at the end (:func:`initial_nc1`, :func:`collapse_inputs`) and the scale-free
trend of claim 14 (:func:`scale_free_inputs`).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from time import perf_counter

from nrc.data import Dataset, load_dataset, make_gaussian_mixture
from nrc.models import Architecture
from nrc.train import TrainConfig, grid

__all__ = ["prepare", "Setup", "device_for", "data_for", "load_data", "architecture", "members", "train_config", "train_and_analyze", "scale_text",
           "theorem_sweep", "TheoremSweep", "rank_trend_inputs", "bound_terms",
           "bound_inputs", "bound_summary", "vacuous_terms", "initial_nc1", "collapse_inputs",
           "scale_free_inputs", "ImageSweep", "image_sweep", "sweep_values", "TRUNCATIONS", "truncation_ranks",
           "relative_difference",
           "budgets_config"]


@dataclass
class Setup:
    """What every notebook builds first from its validated parameters (:func:`prepare`).

    ``data``, ``arch``, ``members`` and ``config`` are ``None`` where the notebook's parameters do
    not determine one alone (several data sets, several activations, several losses, a list of
    refinement budgets): the notebook builds those itself from the same helpers.
    """

    name: str
    params: object
    device: str
    store: object
    data: Dataset | None = None
    arch: Architecture | None = None
    members: list[dict] | None = None
    config: TrainConfig | None = None

    # theorem group (derivation, T1-T4)
    @property
    def analysis_device(self) -> str | None:
        """The device for :func:`nrc.analyze`: the one the parameters name, ``None`` (the CPU) for ``"auto"``.

        Training resolves ``"auto"`` to the GPU where there is one (:attr:`device`), while the
        notebooks have always measured a sweep on the CPU unless a device is named; this keeps it so.
        """
        return None if dict(self.params).get("device", "auto") == "auto" else self.device

    # synthetic group (T5-T9, E2)
    started: float = field(default_factory=perf_counter)  #: when :func:`prepare` built it (``time.perf_counter``)

    def elapsed(self) -> float:
        """Wall-clock seconds since :func:`prepare` built this set-up (the notebook's run time so far)."""
        return perf_counter() - self.started


def device_for(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` where torch sees a GPU, else ``"cpu"``; any other name unchanged."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def data_for(params, **overrides) -> Dataset:
    """The training data a notebook's parameters describe (``overrides`` replace single fields).

    ``dataset`` (default ``"synthetic"``) picks the Gaussian mixture of :func:`nrc.make_gaussian_mixture`
    (``num_classes``, ``dim``, ``per_class``, ``spread``, ``center_scale``, ``data_seed``) or a
    balanced image subset of :func:`nrc.load_dataset` (``per_class``, ``data_seed``,
    ``test_per_class``: -1 is the whole test split, absent is none). Missing fields take the
    defaults of those loaders, so a notebook and :func:`load_data` with the same values give the
    same tensors (and cache keys).
    """
    p = {**dict(params), **overrides}
    name = p.get("dataset", "synthetic")
    if name in ("synthetic", "gmm"):
        return make_gaussian_mixture(num_classes=int(p.get("num_classes", 4)), dim=int(p.get("dim", 10)),
                                     per_class=int(p.get("per_class", 30)), spread=float(p.get("spread", 0.7)),
                                     center_scale=float(p.get("center_scale", 2.0)), seed=int(p.get("data_seed", 0)))
    test = int(p.get("test_per_class", 0))
    return load_dataset(name, per_class=int(p["per_class"]), test_per_class=None if test < 0 else test,
                        seed=int(p.get("data_seed", 0)), download=True)


def prepare(name: str, namespace: dict, *, residual: bool = False) -> Setup:
    """The first code cell of every notebook: validate the parameters, style the page, build the set-up.

    Parameters
    ----------
    name : str
        The notebook's file stem (its parameter model in :data:`nrc_companion.params.MODELS`).
    namespace : dict
        The notebook's ``globals()``: validated and written back typed
        (:func:`nrc_companion.params.validate_parameters`).
    residual : bool, optional
        Build the ``widths`` network as a residual MLP (:class:`nrc.Architecture` ``residual=True``;
        E3). The parameter models have no such field: the notebook says it.

    Returns
    -------
    Setup
        The validated parameters, the device (``"auto"`` resolved), a :class:`nrc.ResultStore`, and
        what the parameters alone determine: the data (a ``dataset`` or a synthetic mixture with
        one ``spread``), the MLP ``(d_0, *hidden, K)`` or ``widths`` (one ``activation``, default
        ReLU; ``bias`` default off), the ``weight_decays x seeds`` members (``train_weight_decay x seeds``
        where the notebook trains at one lambda), and the SGD + L-BFGS
        configuration of :func:`train_config` (one ``loss``, one ``refine_steps``).
    """
    from nrc.cache import ResultStore

    from .params import validate_parameters
    from .report import page_setup

    params = validate_parameters(name, namespace)
    page_setup()
    p = dict(params)
    setup = Setup(name=name, params=params, device=device_for(p.get("device", "auto")), store=ResultStore())
    single = "datasets" not in p and "spreads" not in p and isinstance(p.get("num_classes", 0), int)
    if single and ("dataset" in p or "spread" in p):
        setup.data = data_for(params)
    activation = p.get("activation", None if "activations" in p else "relu")
    if activation is not None:
        if "widths" in p:
            setup.arch = Architecture(tuple(int(w) for w in p["widths"]), activation=activation,
                                      bias=bool(p.get("bias", False)), residual=bool(residual))
        elif "hidden" in p and setup.data is not None:
            setup.arch = architecture(setup.data, p["hidden"], activation=activation, bias=p.get("bias", False))
    if "train_weight_decay" in p and "seeds" in p:  # E4: trained at one lambda, measured at weight_decays
        setup.members = members([p["train_weight_decay"]], p["seeds"])
    elif "weight_decays" in p and "seeds" in p:
        setup.members = members(p["weight_decays"], p["seeds"])
    if "loss" in p and isinstance(p.get("refine_steps", 0), int) and {"epochs", "batch_size", "lr"} <= p.keys():
        setup.config = train_config(p["loss"], epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                                    refine_steps=p.get("refine_steps", 0), momentum=p.get("momentum", 0.9))
    return setup


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


def budgets_config(loss: str, budgets: Iterable[int], *, epochs: int, batch_size: int, lr: float,
                   momentum: float = 0.9) -> TrainConfig:
    """The one training of :func:`train_budgets`: SGD, then L-BFGS to the largest budget, kept at the others."""
    budgets = sorted({int(b) for b in budgets})
    config = train_config(loss, epochs=epochs, batch_size=batch_size, lr=lr, refine_steps=budgets[-1],
                          momentum=momentum)
    return replace(config, refine_snapshots=tuple(budgets[:-1])) if len(budgets) > 1 else config


def train_budgets(store, arch: Architecture, data: Dataset, members: list[dict], loss: str, budgets: Iterable[int], *,
                  epochs: int, batch_size: int, lr: float, momentum: float = 0.9, device=None) -> dict:
    """SGD, then one L-BFGS refinement to the largest of ``budgets``, kept at every budget (T1, E8).

    Returns ``{budget: Sweep}``, each equal to ``store.train`` with
    ``train_config(loss, ..., refine_steps=budget)`` (budget 0: SGD alone), from one cached
    training instead of one per budget (``TrainConfig.refine_snapshots``, ``Sweep.refined_at``).
    """
    config = budgets_config(loss, budgets, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum)
    sweep = store.train(arch, data, members, config, device=device)
    return {b: sweep.refined_at(b) for b in sorted({int(b) for b in budgets})}


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


def relative_difference(a, b) -> float:
    """``||a - b|| / max(||a||, ||b||)`` of two numbers or tensors, in float64 (0 when both are 0).

    The derivation notebook compares each identity of Theorem A's proof with it.
    """
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = max(float(a.norm()), float(b.norm()), 1e-300)
    return float((a - b).norm()) / scale


def scale_text(data: Dataset, widths: Sequence[int], *, members: int, epochs: int, seeds: Iterable,
               device, seconds: float | None = None, extra: str = "") -> str:
    """One sentence stating the scale of a run (for ``nrc_companion.record`` / glue).

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


# ---------------------------------------------------------------------------------------------
# structured inputs of the registry's checks (nrc_companion.verdicts), shared by T8, E1 and E3
# ---------------------------------------------------------------------------------------------

def _label(row, group: str | None) -> str:
    return str(row["site"]) if group is None else f"{row['site']} ({row[group]})"


def rank_trend_inputs(sites, roles: dict, *, group: str | None = None,
                      taus: Sequence[float] = (1e-2, 1e-3)) -> tuple[dict, dict]:
    """Inputs of ``<prefix>.claim2`` (trend) and ``<prefix>.rank`` (report) of a rank-against-lambda sweep.

    One rule for T8, E1 and E3 (they read the same kind of sweep and must judge it alike).

    Parameters
    ----------
    sites : DataFrame
        One row per member and weight matrix, with ``site``, ``seed``, ``weight_decay``, ``dK_rel``
        and ``rank_1e-2`` / ``rank_1e-3``; every lambda (0 included). Diverged members must already
        be left out (``nrc.analyze`` does).
    roles : dict
        :func:`nrc_companion.verdicts.site_roles` of the architecture: the ``"hidden"`` sites are scored, the
        ``"input"`` site (``W1``) is reported, the ``"output"`` layer (rank <= K by shape) is left out.
    group : str, optional
        A column whose value is appended to the site label (e.g. ``"loss"`` when a sweep has two).
    taus : sequence of float
        The tolerances of the reported numerical ranks (columns ``rank_<tau>``).

    Returns
    -------
    claim2 : dict
        ``{"rows": [{"site", "seed", "x": lambda, "y": d_K^F/||W||_F}], "scored": [...]}``.
    rank : dict
        ``{"value", "text", "detail"}``: per site, the seed mean of the per-seed Spearman correlation
        of lambda and ``rank_tau`` (a constant rank has correlation 0, :func:`nrc_companion.verdicts.spearman0`).
    """
    import numpy as np

    from .verdicts import spearman0

    keep = sites[sites["site"].map(lambda s: roles.get(s) in ("input", "hidden"))]
    if keep.empty:
        raise ValueError("no input or hidden-fed weight matrix in the sites table")
    rows, scored = [], []
    for _, r in keep.iterrows():
        lab = _label(r, group)
        rows.append({"site": lab, "seed": int(r["seed"]), "x": float(r["weight_decay"]), "y": float(r["dK_rel"])})
        if roles[r["site"]] == "hidden" and lab not in scored:
            scored.append(lab)
    if not scored:
        raise ValueError("no hidden-fed weight matrix to score (the network needs >= 2 hidden layers)")
    labels = list(dict.fromkeys(rw["site"] for rw in rows))
    keep = keep.assign(_label=[_label(r, group) for _, r in keep.iterrows()])
    parts, detail, score_means = [], [], []
    for tau in taus:
        col = f"rank_{tau:.0e}".replace("e-0", "e-")
        means = {}
        for lab in labels:
            g = keep[keep["_label"] == lab]
            rhos = [spearman0(s["weight_decay"], s[col]) for _, s in g.groupby("seed") if len(s) >= 2]
            if rhos:
                means[lab] = float(np.mean(rhos))
                detail.append(f"tau={tau:g} {lab}: per seed " + ", ".join(f"{x:.2f}" for x in rhos))
        parts.append(f"$\\tau={tau:g}$: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))
        if tau == taus[0]:
            score_means = [v for k, v in means.items() if k in scored]
    value = float(np.mean(score_means)) if score_means else None
    rank = {"value": value, "text": "seed-mean Spearman of $\\lambda$ and the numerical rank: " + "; ".join(parts),
            "detail": "; ".join(detail)}
    return {"rows": rows, "scored": scored}, rank


def bound_terms(sites):
    """The rows with lambda > 0 and the two terms of the Theorem A bound, relative to ``||W||_F``.

    Adds ``grad_term`` (``||G||_F/lambda``), ``tcv_term`` (``||Delta^T R||_F/(lambda N)``, the bound
    minus the gradient term), ``ratio`` (``d_K^F``/bound), ``bound_rel``, ``grad_rel``, ``tcv_rel``
    (each over ``||W||_F``) and ``vacuous`` (bound >= ``||W||_F``: it then says no more than the
    trivial ``d_K^F(W) <= ||W||_F``).
    """
    t = sites[sites["weight_decay"] > 0].copy()
    t["grad_term"] = t["grad_norm"] / t["weight_decay"]
    t["tcv_term"] = t["bound"] - t["grad_term"]
    t["ratio"] = t["dK"] / t["bound"]
    t["bound_rel"] = t["bound"] / t["frob"]
    t["grad_rel"] = t["grad_term"] / t["frob"]
    t["tcv_rel"] = t["tcv_term"] / t["frob"]
    t["vacuous"] = t["bound_rel"] >= 1
    return t


def bound_inputs(terms) -> dict:
    """Input of a ``bound`` check from :func:`bound_terms`: ``{"rows": [{"d", "bound", "norm", "site",
    "seed", "lambda"}]}``."""
    return {"rows": [{"d": float(r.dK), "bound": float(r.bound), "norm": float(r.frob), "site": str(r.site),
                      "seed": int(r.seed), "lambda": float(r.weight_decay)} for r in terms.itertuples()]}


def bound_summary(terms, by: Sequence[str] = ("weight_decay", "site")):
    """The page's short bound table: per group, the largest ``d_K^F``/bound, the median of bound,
    gradient term and TCV term over ``||W||_F``, and the vacuous rows (of how many)."""
    g = terms.groupby(list(by), sort=True)
    out = g.agg(rows=("ratio", "size"), max_ratio=("ratio", "max"), bound_rel=("bound_rel", "median"),
                grad_rel=("grad_rel", "median"), tcv_rel=("tcv_rel", "median"), vacuous=("vacuous", "sum"))
    out["vacuous"] = out["vacuous"].astype(int)
    return out.reset_index()


def vacuous_terms(terms) -> dict:
    """Which term makes the bound vacuous: counts over the vacuous rows.

    Returns ``{"n_rows", "n_vacuous", "n_grad_alone", "n_tcv_alone", "n_neither_alone",
    "median_grad_rel", "median_tcv_rel"}``: of the vacuous rows, those where the gradient term
    alone is >= ``||W||_F``, where the TCV term alone is, and where only their sum is; and the
    medians of both terms over ``||W||_F`` on all rows.
    """
    import numpy as np

    v = terms[terms["vacuous"]]
    return {"n_rows": int(len(terms)), "n_vacuous": int(len(v)), "n_grad_alone": int((v["grad_rel"] >= 1).sum()),
            "n_tcv_alone": int((v["tcv_rel"] >= 1).sum()),
            "n_neither_alone": int(((v["grad_rel"] < 1) & (v["tcv_rel"] < 1)).sum()),
            "median_grad_rel": float(np.median(terms["grad_rel"])) if len(terms) else float("nan"),
            "median_tcv_rel": float(np.median(terms["tcv_rel"])) if len(terms) else float("nan")}


def initial_nc1(arch: Architecture, data: Dataset, members: list[dict], config: TrainConfig):
    """NC1 of the last hidden features (the input of the output layer) at initialisation, per member.

    The trainer initialises member ``m`` with ``nrc.init_params(arch, [seed], init_scale=config.init_scale)``
    in float32 (:func:`nrc.train`); the same float32 values are cast to float64 here, so the
    numbers are those of the network training started from (tests/test_nb_experiments.py compares
    them with a zero-epoch run).

    The initialisation depends on the seed alone, so the float64 forward pass is made once per
    distinct seed (a ``weight_decay x seed`` grid of E1 has 7 members per seed) and each member
    reads its seed's value.

    Returns
    -------
    numpy.ndarray, shape (len(members),)
    """
    import torch

    from nrc.collapse import nc1
    from nrc.models import forward, init_params

    member_seeds = [int(m["seed"]) for m in members]
    seeds = list(dict.fromkeys(member_seeds))
    params = init_params(arch, seeds, init_scale=config.init_scale)
    params = {k: v.to(torch.float64) for k, v in params.items()}
    with torch.no_grad():
        _, sites = forward(arch, params, data.x_train.to(torch.float64), record=True)
    z = sites[-1].input  # (seeds, N, d_{L-1}): the features entering the output layer
    per_seed = nc1(z, data.y_train, data.num_classes).cpu().numpy()
    return per_seed[[seeds.index(s) for s in member_seeds]]


def collapse_inputs(sites, members_table, start_nc1, output_site: str) -> tuple[dict, dict]:
    """Inputs of ``<prefix>.claim10`` (collapse) and ``<prefix>.nc1_lambda`` (report).

    Parameters
    ----------
    sites : DataFrame
        ``nrc.analyze(...).sites`` (diverged members already left out).
    members_table : DataFrame
        ``nrc.analyze(...).members`` (column ``member``), in the order of ``start_nc1``.
    start_nc1 : array
        :func:`initial_nc1` of every member of the sweep.
    output_site : str
        Name of the output layer: its ``nc1`` column is NC1 of the last hidden features.

    Returns
    -------
    claim10 : dict
        ``{"rows": [{"member", "start", "end"}]}`` over the members with lambda > 0.
    nc1_lambda : dict
        Report: per seed, the Spearman correlation of lambda and the final NC1 (every member).
    """
    import numpy as np

    from .verdicts import spearman0

    start = dict(zip(members_table["member"], np.asarray(start_nc1, dtype=float)))
    last = sites[sites["site"] == output_site]
    rows = [{"member": f"lambda={r.weight_decay:g}, seed {int(r.seed)}", "start": float(start[r.member]),
             "end": float(r.nc1)} for r in last.itertuples() if r.weight_decay > 0]
    rhos = {int(s): spearman0(g["weight_decay"], g["nc1"]) for s, g in last.groupby("seed") if len(g) >= 2}
    value = float(np.mean(list(rhos.values()))) if rhos else None
    text = ("Spearman of $\\lambda$ and NC1 of the last hidden features, per seed: "
            + (", ".join(f"seed {s}: {v:.2f}" for s, v in rhos.items()) if rhos else "fewer than two lambdas"))
    return {"rows": rows}, {"value": value, "text": text}


def scale_free_inputs(terms, roles: dict) -> dict:
    """Input of a scale-free trend (claim 14): rows ``{"site", "seed", "x": bound/||W||_F,
    "y": d_K^F/||W||_F}`` over lambda > 0 (from :func:`bound_terms`), the hidden-fed sites scored."""
    keep = terms[terms["site"].map(lambda s: roles.get(s) in ("input", "hidden"))]
    rows = [{"site": str(r.site), "seed": int(r.seed), "x": float(r.bound_rel), "y": float(r.dK_rel)}
            for r in keep.itertuples()]
    return {"rows": rows, "scored": [s for s in dict.fromkeys(keep["site"]) if roles[s] == "hidden"]}


# ---------------------------------------------------------------------------------------------
# the rank-against-lambda sweeps on image data (E1 per data set, E3): trained, measured, summarised
# ---------------------------------------------------------------------------------------------

#: Columns of ``Analysis.sites`` that every trained (non-diverged) member must have finite.
_CORE_COLUMNS = ["dK", "dK_rel", "rank_1e-2", "rank_1e-3", "nc1", "tcv1", "tcv2", "tcv_ratio", "frob"]


@dataclass
class ImageSweep:
    """One trained and measured ``weight_decay x seed`` sweep on image data (E1 per data set, E3).

    Attributes
    ----------
    data, sweep, an : Dataset, nrc.Sweep, nrc.Analysis
    n_cached : int
        Members loaded from the cache instead of trained.
    n_diverged : int
    terms : DataFrame
        :func:`bound_terms` of ``an.sites`` (the rows with lambda > 0).
    nc1_start : numpy.ndarray
        :func:`initial_nc1` of every member.
    """

    data: Dataset
    sweep: object
    an: object
    n_cached: int
    n_diverged: int
    terms: object
    nc1_start: object


def image_sweep(store, arch: Architecture, data: Dataset, members: list[dict], config: TrainConfig, *,
                device=None) -> ImageSweep:
    """Train (or load from ``store``) and measure a rank sweep; stop on what would make its checks meaningless.

    Raises
    ------
    RuntimeError
        Naming the data set: every member diverged; a non-finite spectrum or collapse metric
        (:data:`_CORE_COLUMNS`) of a trained member; a non-finite Theorem A bound at lambda > 0.
    """
    import numpy as np

    from nrc.analysis import analyze

    n_cached = sum(store.cached(arch, config, data, members))
    sweep = store.train(arch, data, members, config, device=device, progress=False)
    an = analyze(sweep, data, device=device)
    if an.sites.empty:
        raise RuntimeError(f"{data.name}: every member diverged; lower the learning rate")
    if not np.isfinite(an.sites[_CORE_COLUMNS].to_numpy(dtype=float)).all():
        raise RuntimeError(f"{data.name}: non-finite spectra or collapse metrics for a trained member")
    pos = an.sites["weight_decay"] > 0
    if not np.isfinite(an.sites.loc[pos, ["bound", "bound_cs", "stationarity"]].to_numpy()).all():
        raise RuntimeError(f"{data.name}: non-finite Theorem A bound at lambda > 0")
    return ImageSweep(data, sweep, an, n_cached, int(an.members["diverged"].sum()), bound_terms(an.sites),
                      initial_nc1(arch, data, members, config))


def sweep_values(run: ImageSweep, claim10: dict, nc1_lambda: dict, input_site: str) -> dict:
    """The recorded numbers E1 and E3 share: grid, bound, collapse and accuracy summaries of one sweep.

    Parameters
    ----------
    run : ImageSweep
    claim10, nc1_lambda : dict
        From :func:`collapse_inputs` of the same sweep.
    input_site : str
        The weight matrix fed by the pixels (``W1``): its ``nc1`` is NC1 of the inputs.

    Returns
    -------
    dict
        ``n_members``, ``n_diverged``, ``n_lambdas``, ``n_seeds``, ``lambda_max``; the bound's
        ``n_bound_cases``, ``max_bound_ratio``, ``median_bound_ratio``, ``median_bound_rel``,
        ``n_informative``, ``n_vacuous`` and which term makes it so (:func:`vacuous_terms`:
        ``n_vacuous_grad``, ``n_vacuous_tcv``, ``n_vacuous_sum``, ``median_grad_rel``,
        ``median_tcv_rel``); NC1 of the inputs, of the last hidden features at initialisation
        (``nc1_start_min/max``) and after training at lambda > 0 (``min/max_nc1_last_pos``), how
        many fell and how many reached ``verdicts.COLLAPSE_NC1``, ``nc1_lambda_rho``; the mean
        test accuracy at the smallest and the largest lambda.
    """
    import numpy as np

    from .verdicts import COLLAPSE_NC1

    sites, members_table, terms = run.an.sites, run.an.members, run.terms
    lam = sites["weight_decay"]
    lam_min, lam_max = float(lam.min()), float(lam.max())
    acc = members_table[~members_table["diverged"]].groupby("weight_decay")["test_acc"].mean()
    vac = vacuous_terms(terms)
    ends = np.array([r["end"] for r in claim10["rows"]])
    starts = np.array([r["start"] for r in claim10["rows"]])
    return {
        "n_members": int(len(members_table)), "n_diverged": run.n_diverged, "n_lambdas": int(lam.nunique()),
        "n_seeds": int(members_table["seed"].nunique()), "lambda_max": lam_max,
        "n_bound_cases": int(len(terms)), "max_bound_ratio": float(terms["ratio"].max()),
        "median_bound_ratio": float(terms["ratio"].median()), "median_bound_rel": float(terms["bound_rel"].median()),
        "n_informative": int((~terms["vacuous"]).sum()), "n_vacuous": vac["n_vacuous"],
        "n_vacuous_grad": vac["n_grad_alone"], "n_vacuous_tcv": vac["n_tcv_alone"],
        "n_vacuous_sum": vac["n_neither_alone"], "median_grad_rel": vac["median_grad_rel"],
        "median_tcv_rel": vac["median_tcv_rel"],
        "nc1_input": float(sites.loc[sites["site"] == input_site, "nc1"].iloc[0]),
        "n_collapse_members": int(len(ends)), "nc1_start_min": float(starts.min()),
        "nc1_start_max": float(starts.max()), "min_nc1_last_pos": float(ends.min()),
        "max_nc1_last_pos": float(ends.max()), "n_nc1_fell": int((ends < starts).sum()),
        "n_nc1_collapsed": int((ends <= COLLAPSE_NC1).sum()),
        "nc1_lambda_rho": nc1_lambda["value"] if nc1_lambda["value"] is not None else float("nan"),
        "test_acc_smallest_lambda": float(acc.loc[lam_min]), "test_acc_largest_lambda": float(acc.loc[lam_max]),
    }


# ---------------------------------------------------------------------------------------------
# image group (E1, E3, E6, E7, E8): E6's low-rank truncations
# ---------------------------------------------------------------------------------------------

#: E6's truncations of the hidden-fed weight matrices, in the order of its table and figures.
TRUNCATIONS = ("full", "rank K", "rank K-1", "rank_tau")


def truncation_ranks(strategy: str, s, num_classes: int, tau: float):
    """The rank each member keeps of one weight matrix under one of E6's truncations.

    Parameters
    ----------
    strategy : str
        One of :data:`TRUNCATIONS`: ``"full"`` keeps every singular value, ``"rank K"`` and
        ``"rank K-1"`` keep ``min(K, r)`` and ``min(K - 1, r)``, ``"rank_tau"`` keeps the numerical
        rank ``#{j : s_j > tau * s_1}`` of each member (:func:`nrc.numerical_rank`).
    s : torch.Tensor, shape (M, r)
        The singular values of the matrix of each of ``M`` members, descending.
    num_classes : int
        ``K``.
    tau : float
        The relative threshold of ``"rank_tau"``, in (0, 1).

    Returns
    -------
    numpy.ndarray of int, shape (M,)
    """
    import numpy as np

    from nrc.spectra import numerical_rank

    members, full = s.shape
    if strategy == "full":
        return np.full(members, full)
    if strategy == "rank K":
        return np.full(members, min(num_classes, full))
    if strategy == "rank K-1":
        return np.full(members, min(num_classes - 1, full))
    if strategy == "rank_tau":
        return numerical_rank(s.cpu().numpy(), tau)
    raise ValueError(f"strategy must be one of {TRUNCATIONS}, got {strategy!r}")


# ---------------------------------------------------------------------------------------------
# landscape group (E4, E4b, E5): float64 training tensors and the trained starts on the device
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# synthetic group (T5-T9, E2): one Gaussian mixture per spread; the spectra of members with lambda = 0
# ---------------------------------------------------------------------------------------------

__all__ += ["SpreadSweep", "spread_sweep", "unregularised_tables"]


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

    ``nrc.analyze`` needs lambda > 0 (its stationarity and Theorem A columns divide by it); a
    rank-against-lambda sweep still wants the spectra of its unregularised members. For every
    non-diverged member with ``weight_decay == 0`` and every weight matrix, in that order:

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
