"""The structured inputs of the registry's checks (:mod:`nrc_companion.verdicts`) that several notebooks share.

One rule reads one kind of table everywhere: the rank trend and its reported ranks (T8, E1, E3:
:func:`rank_trend_inputs`), Theorem A's rows with its two terms (:func:`bound_terms`,
:func:`bound_inputs`, :func:`bound_summary`, :func:`vacuous_terms`), NC1 at initialisation and at
the end (:func:`initial_nc1`, :func:`collapse_inputs`) and the scale-free trend of claim 14
(:func:`scale_free_inputs`).
"""
from __future__ import annotations

from collections.abc import Sequence

from nrc.data import Dataset
from nrc.models import Architecture
from nrc.train import TrainConfig


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

    from ..verdicts import spearman0

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

    from ..verdicts import spearman0

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
