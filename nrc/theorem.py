"""Everything Theorem A and its lemmas need, per member and per weight matrix (SPEC section 3).

For a weight ``W`` (a *site*: ``a = u W^T + b`` with input embeddings ``u = Z_{l-1}``) write
``Delta`` for the back-propagated errors ``delta_i = d loss_i / d a_i`` (rows = samples),
``R`` for the within-class residuals of the input, ``G = grad_W L_lambda`` for the gradient of the
regularised loss and ``N`` for the number of samples. Since
``lambda W = G - Delta^T U / N`` holds at *any* parameter, for every partition into ``K`` groups

    d_K^F(W) <= ||G||_F / lambda + ||Delta^T R||_F / (lambda N)                  (exact form)
             <= ||G||_F / lambda + ||Delta||_F ||R||_F / (lambda N)              (Cauchy-Schwarz)

and ``d_K^F(W) <= ||G||/lambda + max_i ||delta_i|| TCV_1 / (lambda N)``; Lemma A2 turns the
Cauchy-Schwarz form into ``||G||/lambda + rho sqrt(2 L_0) sqrt(TCV_2 / N) / lambda`` with
``rho_l = Lip^{L-l} prod_{j>l} ||W_j||_2`` (feed-forward networks). The identity
``d_K^F(W - G/lambda) = d_K^F(Delta^T U) / (lambda N)`` holds exactly at any parameter.

All quantities are computed in float64.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import collapse, spectra
from .models import ACTIVATIONS, Architecture, forward
from .timing import timed
from .train import member_losses

__all__ = ["site_quantities", "SITE_COLUMNS"]

#: Columns of the per-site table, with their meaning (also the glossary of the book).
SITE_COLUMNS = {
    "frob": "||W||_F",
    "spec": "||W||_2 = s_1",
    "rank_1e-2": "numerical rank, tau = 1e-2",
    "rank_1e-3": "numerical rank, tau = 1e-3",
    "energy_rank": "energy rank, eps = 1e-2",
    "dK": "d_K^F(W), Frobenius distance to rank K",
    "dK_rel": "d_K^F(W) / ||W||_F",
    "dKm1": "d_{K-1}^F(W)",
    "sK1_ratio": "s_{K+1} / s_1",
    "grad_norm": "||G||_F, gradient of the regularised loss",
    "stationarity": "||G||_F / (lambda ||W||_F), check T1",
    "delta_norm": "||Delta||_F",
    "delta_max": "max_i ||delta_i||",
    "cross_norm": "||Delta^T R||_F",
    "bound": "Theorem A, exact form",
    "bound_cs": "Theorem A, Cauchy-Schwarz form",
    "bound_tcv1": "Theorem A, TCV_1 form",
    "bound_a2": "Lemma A2 form (feed-forward only)",
    "bound_km1": "bound on d_{K-1}^F(W) (exact form + bias term)",
    "rho": "Lemma A2 constant rho_l",
    "identity_gap": "|d_K(W - G/lambda) - d_K(Delta^T U)/(lambda N)| / max(d_K(W), tiny)",
    "dK_grad_form": "d_K^F(Delta^T U) / (lambda N)",
    "tcv1": "TCV_1 / N of the input embeddings",
    "tcv2": "TCV_2 / N = tr Sigma_W of the input embeddings",
    "tcv_ratio": "tr Sigma_W / tr Sigma_T of the input embeddings",
    "nc1": "NC1 of the input embeddings",
    "tcv2_out": "TCV_2 / N of sigma(output) (hidden layers)",
    "a3_bound": "Lemma A3: Lip^2 ||W||_2^2 TCV_2(input) / N",
}


PARTITIONS = ("labels", "kmeans", "random")


def _check_partition(partition, M, N, K):
    """Validate ``partition`` once (see :func:`site_quantities`); a tensor comes back as int64 (M, N)."""
    if isinstance(partition, str):
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, a callable or a tensor of group labels, "
                             f"got {partition!r}")
        return partition
    if callable(partition):
        return partition
    groups = torch.as_tensor(partition)
    if groups.is_floating_point() and not bool((groups == groups.round()).all()):
        raise ValueError("partition: group labels must be integers 0..K-1")
    groups = groups.long()
    if groups.shape not in ((N,), (M, N)):
        raise ValueError(f"partition: a tensor of group labels must have shape ({N},) or ({M}, {N}), "
                         f"got {tuple(groups.shape)}")
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= K):
        raise ValueError(f"partition: group labels must lie in [0, {K - 1}]")
    return groups.expand(M, N) if groups.ndim == 1 else groups


def _partition(U, labels, K, partition, seed, member, site):
    """The K groups of the rows of ``U`` (one member's input to one site) used for ``R``."""
    if isinstance(partition, str):
        if partition == "labels":
            return labels
        if partition == "kmeans":
            return collapse.kmeans(U, K, seed=seed)
        # "random": the labels permuted, so the groups have the class sizes; one draw per
        # (member, site) from a generator seeded by (seed, member, site) alone, so a member's
        # partition does not depend on how members are chunked
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + member * 1_009 + site) % (2**63))
        return labels[torch.randperm(labels.shape[0], generator=gen).to(labels.device)]
    if isinstance(partition, torch.Tensor):
        return partition[member].to(U.device)
    groups = torch.as_tensor(partition(U, labels, K), device=U.device)
    if groups.shape != labels.shape or groups.is_floating_point():
        raise ValueError(f"partition callable must return integer group labels of shape {tuple(labels.shape)}, "
                         f"got {tuple(groups.shape)} {groups.dtype}")
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= K):
        raise ValueError(f"partition callable returned group labels outside [0, {K - 1}]")
    return groups.long()


@timed("analysis")
def site_quantities(arch: Architecture, params: dict[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, weight_decay, *, loss: str, regularize_bias: bool = True,
                    partition: str = "labels", member_chunk: int = 8, seed: int = 0) -> pd.DataFrame:
    """Per-member, per-site quantities of Theorem A, Lemmas A2-A4 and the collapse metrics.

    Parameters
    ----------
    arch : Architecture
    params : dict of Tensor
        Stacked parameters (leading axis ``M``).
    x : Tensor, shape (N, d_0) or (M, N, d_0)
    y : Tensor, shape (N,) or (M, N)
        Labels; the partition used for ``R`` when ``partition="labels"``.
    weight_decay : sequence of float, length M
        ``lambda`` of each member (must be > 0 for the bound columns; 0 gives inf).
    loss : {"ce", "mse"}
    regularize_bias : bool
        Whether the biases were regularised (enters the gradient ``G`` of the biases only,
        which is not reported, so it only documents the setting).
    partition : {"labels", "kmeans", "random"}, callable, Tensor, or a list of names
        The K-partition of each site's input used for ``R`` (Theorem A holds for any):
        ``"labels"`` the classes; ``"kmeans"`` k-means clusters of the site's input
        (:func:`nrc.kmeans`, seeded by ``seed``); ``"random"`` the labels randomly permuted (groups
        of the class sizes, one draw per member and site from ``(seed, member, site)``); a callable
        ``f(U, labels, K) -> (N,) int tensor`` called with one member's site input ``U`` (N, d);
        or a tensor of group labels in ``0..K-1``, shape (N,) or (M, N), used at every site.
        A list of names (e.g. ``["kmeans", "random"]``) measures each partition with one forward
        and backward pass, the weights' spectra computed once: a list of tables comes back, each
        identical to the table of a call with that partition alone.
    member_chunk : int
        Members processed at once (bounds memory: activations are float64).
    seed : int
        Seed of the ``"kmeans"`` and ``"random"`` partitions.

    Returns
    -------
    pandas.DataFrame, or a list of them for a list of partitions
        One row per (member, site) with columns ``member``, ``site``, ``layer`` (1-based
        position in forward order) and the quantities of ``SITE_COLUMNS``; members are
        indexed 0..M-1 as in ``params``.
    """
    several = is_partition_list(partition)
    tables = site_tables(arch, params, x, y, weight_decay, loss=loss, partitions=partition if several else [partition],
                         member_chunk=member_chunk, seed=seed)
    return tables if several else tables[0]


def site_tables(arch: Architecture, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                weight_decay, *, loss: str, partitions: list, member_chunk: int = 8,
                seed: int = 0) -> list[pd.DataFrame]:
    """:func:`site_quantities` for each partition of ``partitions`` (names, callables or tensors), as a
    list of tables: the forward and backward pass and the spectra are computed once for all."""
    M = next(iter(params.values())).shape[0]
    lam_all = torch.as_tensor(np.asarray(weight_decay, dtype=np.float64))
    if lam_all.shape != (M,):
        raise ValueError(f"weight_decay must have one value per member ({M}), got shape {tuple(lam_all.shape)}")
    K = arch.num_classes
    partitions = [_check_partition(p, M, x.shape[-2], K) for p in partitions]
    collapse._finite(x, "x")  # checked once here, not per metric (a site's input is finite if x and W are)
    rows, shared = [[] for _ in partitions], {}
    for start in range(0, M, member_chunk):
        sl = slice(start, min(M, start + member_chunk))
        # a tensor partition goes whole: _partition indexes it by the member's index in the sweep
        for acc, new in zip(rows, _chunk(arch, {k: v[sl] for k, v in params.items()}, x[sl] if x.ndim == 3 else x,
                                         y[sl] if y.ndim == 2 else y, lam_all[sl], loss, partitions, K, seed, start,
                                         shared)):
            acc += new
    return [pd.DataFrame(r) for r in rows]


def is_partition_list(partition) -> bool:
    """Whether ``partition`` names several partitions (a non-empty list or tuple of names), as
    opposed to one partition (a name, a callable, or group labels, which may be a list of ints)."""
    if isinstance(partition, (list, tuple)) and partition and all(isinstance(p, str) for p in partition):
        if len(set(partition)) != len(partition):
            raise ValueError(f"partition: a list of partitions names each at most once, got {list(partition)}")
        return True
    return False


def _chunk(arch, params, x, y, lam, loss, partitions, K, seed, offset, shared):
    """The rows of members ``offset..offset+m-1``, one list per partition of ``partitions``: the
    forward and backward pass and the spectra are computed once for all of them. ``shared`` caches
    the statistics of the first site's input when every member sees the same inputs and the same
    partition."""
    dev = next(iter(params.values())).device
    ps = {k: v.detach().to(dev, torch.float64).requires_grad_(True) for k, v in params.items()}
    x = x.to(dev, torch.float64)
    y = y.to(dev)
    lam = lam.to(dev)
    m_count = lam.shape[0]
    logits, sites = forward(arch, ps, x, record=True)
    N = logits.shape[1]
    yy = y if y.ndim == 2 else y.unsqueeze(0).expand(m_count, -1)
    per_sample = member_losses(logits, yy, loss)  # (m, N)
    L0 = per_sample.mean(1)
    outs = [s.output for s in sites]
    names = [s.name for s in sites]
    # One backward pass for both: the sum (not mean) of the per-sample losses has Delta as its
    # gradient w.r.t. a site's output, and N * grad L_0 w.r.t. the weights (autograd's own product,
    # kept independent of the Delta^T U / N formed below, so identity_gap still tests the identity).
    found = torch.autograd.grad(per_sample.sum(), outs + [ps[n] for n in names])
    deltas, grads_L0 = found[:len(outs)], [g / N for g in found[len(outs):]]
    weights = [ps[n].detach() for n in names]
    spec_norms = [torch.linalg.matrix_norm(w, ord=2) for w in weights]  # (m,) each
    L0 = L0.detach()
    lip = arch.lipschitz
    rows = [[] for _ in partitions]
    sigma = ACTIVATIONS[arch.activation][0]
    same_inputs = x.ndim == 2
    for j, (site, delta, gL0, W) in enumerate(zip(sites, deltas, grads_L0, weights)):
        U = site.input.detach()
        if j > 0:
            collapse._finite(U, f"the input of {site.name}")  # once per site, not per metric
        s = spectra.svdvals(W)  # (m, r)
        G = gL0 + lam.view(-1, 1, 1) * W
        gn = G.flatten(1).norm(dim=1).tolist()
        frob = W.flatten(1).norm(dim=1).tolist()
        hidden_out = j < len(sites) - 1
        # rho for Lemma A2: spectral norms of the later weights of the feed-forward chain
        if not arch.residual:
            later = spec_norms[j + 1:]
            rho = torch.ones_like(lam) * lip ** len(later)
            for sn in later:
                rho = rho * sn
        else:
            rho = torch.full_like(lam, float("nan"))
        rho = rho.tolist()
        grad_form = torch.bmm(delta.transpose(1, 2), U) / N  # Delta^T U / N, (m, out, in)
        s_grad = spectra.svdvals(grad_form)
        # lambda = 0 has no bound (inf) and no identity; a stand-in 1 keeps the SVD finite
        safe = torch.where(lam > 0, lam, torch.ones_like(lam))
        s_shift = spectra.svdvals(W - G / safe.view(-1, 1, 1))
        # per-member scalars of the spectra, each computed once for the whole chunk
        dK = spectra.dist_to_rank(s, K)
        dK_rel = spectra.relative_dist_to_rank(s, K)
        dKm1 = spectra.dist_to_rank(s, K - 1)
        dK_grad = spectra.dist_to_rank(s_grad, K)
        dK_shift = spectra.dist_to_rank(s_shift, K)
        rank2, rank3 = spectra.numerical_rank(s, 1e-2), spectra.numerical_rank(s, 1e-3)
        erank = spectra.energy_rank(s, 1e-2)
        dnorm_all = delta.flatten(1).norm(dim=1).tolist()
        dmax_all = delta.norm(dim=2).amax(1).tolist()
        bias_all = (delta.sum(1).norm(dim=1) * U.mean(1).norm(dim=1)).tolist()
        spec_sq = [float(v) ** 2 for v in spec_norms[j]]
        L0_list = L0.tolist()
        zo_all = sigma(site.output.detach()) if hidden_out and not arch.residual else None
        for partition, part_rows in zip(partitions, rows):
            # the first site's input and a member-free partition are the same for every member
            share_site0 = (j == 0 and same_inputs and y.ndim == 1 and isinstance(partition, str)
                           and partition in ("labels", "kmeans"))
            for i in range(m_count):
                ui, di = U[i], delta[i]
                li = float(lam[i])
                key = ("site0", partition) if share_site0 else None
                if key is not None and key in shared:
                    labels, stats = shared[key]
                else:
                    labels = _partition(ui, yy[i], K, partition, seed, offset + i, j)
                    stats = collapse.class_stats(ui, labels, K)  # every statistic of this site reads these
                    if key is not None:
                        shared[key] = (labels, stats)
                R, total = stats.residuals, float(stats.total)
                cross = float((di.T @ R).norm())
                RR = (R * R).sum(1)
                tcv1 = float(RR.sqrt().sum()) / N
                tcv2 = float(RR.sum()) / N
                inv = (1.0 / li) if li > 0 else float("inf")
                g, fr = gn[i], frob[i]
                dk_grad = float(dK_grad[i]) * inv if li > 0 else float("inf")
                all_classes = bool((stats.counts > 0).all())
                row = {
                    "member": offset + i,
                    "site": site.name,
                    "layer": j + 1,
                    "frob": fr,
                    "spec": float(s[i][0]),
                    "rank_1e-2": int(rank2[i]),
                    "rank_1e-3": int(rank3[i]),
                    "energy_rank": int(erank[i]),
                    "dK": float(dK[i]),
                    "dK_rel": float(dK_rel[i]),
                    "dKm1": float(dKm1[i]),
                    "sK1_ratio": float(s[i][K] / s[i][0]) if s.shape[1] > K and s[i][0] > 0 else 0.0,
                    "grad_norm": g,
                    "stationarity": g * inv / fr if fr > 0 else float("nan"),
                    "delta_norm": dnorm_all[i],
                    "delta_max": dmax_all[i],
                    "cross_norm": cross,
                    "bound": (g + cross / N) * inv,
                    "bound_cs": (g + dnorm_all[i] * np.sqrt(tcv2 * N) / N) * inv,
                    "bound_tcv1": (g + dmax_all[i] * tcv1) * inv,
                    "bound_a2": (g + rho[i] * np.sqrt(2 * L0_list[i]) * np.sqrt(tcv2)) * inv,
                    "bound_km1": (g + cross / N + bias_all[i] / N) * inv,
                    "rho": rho[i],
                    "identity_gap": (abs(float(dK_shift[i]) - dk_grad) / max(float(dK[i]), 1e-300)
                                     if li > 0 else float("nan")),
                    "dK_grad_form": dk_grad,
                    "tcv1": tcv1,
                    "tcv2": tcv2,
                    # tr Sigma_W / tr Sigma_T (nan for constant features), as collapse.within_total_ratio
                    "tcv_ratio": (float(RR.sum()) / max(total, torch.finfo(torch.float64).tiny)
                                  if total > 0 else float("nan")),
                    "nc1": float(collapse.nc1_from_stats(stats)) if all_classes else float("nan"),
                    "tcv2_out": float("nan"),
                    "a3_bound": lip**2 * spec_sq[i] * tcv2,
                }
                if zo_all is not None:
                    Ro = collapse.class_stats(zo_all[i], labels, K).residuals
                    row["tcv2_out"] = float((Ro * Ro).sum()) / N
                part_rows.append(row)
    return rows

