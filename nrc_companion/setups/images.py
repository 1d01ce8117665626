"""The rank-against-lambda sweeps on image data (E1 per data set, E3) and E6's low-rank truncations."""
from __future__ import annotations

from dataclasses import dataclass

from nrc.data import Dataset
from nrc.models import Architecture
from nrc.train import TrainConfig

from .inputs import bound_terms, initial_nc1, vacuous_terms


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
    an = analyze(sweep, data, device=device, store=store)  # kept: E6 measures E1's MNIST sweep again
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

    from ..verdicts import COLLAPSE_NC1

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
