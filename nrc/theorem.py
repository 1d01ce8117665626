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


def _partition(U, labels, K, partition, seed):
    if partition == "labels":
        return labels
    if partition == "kmeans":
        return collapse.kmeans(U, K, seed=seed)
    raise ValueError(f"partition must be 'labels' or 'kmeans', got {partition!r}")


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
    partition : {"labels", "kmeans"}
        The K-partition of each site's input used for ``R`` (check T4 uses k-means).
    member_chunk : int
        Members processed at once (bounds memory: activations are float64).
    seed : int
        Seed of k-means.

    Returns
    -------
    pandas.DataFrame
        One row per (member, site) with columns ``member``, ``site``, ``layer`` (1-based
        position in forward order) and the quantities of ``SITE_COLUMNS``; members are
        indexed 0..M-1 as in ``params``.
    """
    M = next(iter(params.values())).shape[0]
    lam_all = torch.as_tensor(np.asarray(weight_decay, dtype=np.float64))
    if lam_all.shape != (M,):
        raise ValueError(f"weight_decay must have one value per member ({M}), got shape {tuple(lam_all.shape)}")
    K = arch.num_classes
    rows = []
    for start in range(0, M, member_chunk):
        sl = slice(start, min(M, start + member_chunk))
        rows += _chunk(arch, {k: v[sl] for k, v in params.items()}, x[sl] if x.ndim == 3 else x,
                       y[sl] if y.ndim == 2 else y, lam_all[sl], loss, partition, K, seed, start)
    return pd.DataFrame(rows)


def _chunk(arch, params, x, y, lam, loss, partition, K, seed, offset):
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
    # Sum (not mean) of the per-sample losses: its gradient w.r.t. a site's output is Delta.
    deltas = torch.autograd.grad(per_sample.sum(), outs, retain_graph=True)
    grads_L0 = torch.autograd.grad(L0.sum(), [ps[s.name] for s in sites])
    names = [s.name for s in sites]
    weights = [ps[n].detach() for n in names]
    spec_norms = [torch.linalg.matrix_norm(w, ord=2) for w in weights]  # (m,) each
    lip = arch.lipschitz
    rows = []
    sigma = ACTIVATIONS[arch.activation][0]
    for j, (site, delta, gL0, W) in enumerate(zip(sites, deltas, grads_L0, weights)):
        U = site.input.detach()
        s = spectra.svdvals(W)  # (m, r)
        G = gL0 + lam.view(-1, 1, 1) * W
        gn = G.flatten(1).norm(dim=1)
        frob = W.flatten(1).norm(dim=1)
        hidden_out = j < len(sites) - 1
        # rho for Lemma A2: spectral norms of the later weights of the feed-forward chain
        if not arch.residual:
            later = spec_norms[j + 1:]
            rho = torch.ones_like(lam) * lip ** len(later)
            for sn in later:
                rho = rho * sn
        else:
            rho = torch.full_like(lam, float("nan"))
        grad_form = torch.bmm(delta.transpose(1, 2), U) / N  # Delta^T U / N, (m, out, in)
        s_grad = spectra.svdvals(grad_form)
        # lambda = 0 has no bound (inf) and no identity; a stand-in 1 keeps the SVD finite
        safe = torch.where(lam > 0, lam, torch.ones_like(lam))
        s_shift = spectra.svdvals(W - G / safe.view(-1, 1, 1))
        for i in range(lam.shape[0]):
            ui, di = U[i], delta[i]
            li = float(lam[i])
            if j == 0 and x.ndim == 2 and partition != "labels":
                # every member sees the same inputs: partition them once per chunk
                if i == 0:
                    labels0 = _partition(ui, yy[i], K, partition, seed)
                labels = labels0
            else:
                labels = _partition(ui, yy[i], K, partition, seed)
            R = collapse.within_class(ui, labels, K)
            cross = float((di.T @ R).norm())
            dnorm = float(di.norm())
            dmax = float(di.norm(dim=1).max())
            tcv1 = float((R * R).sum(1).sqrt().sum()) / N
            tcv2 = float((R * R).sum()) / N
            means, counts = collapse.class_means(ui, labels, K)
            mu_g = ui.mean(0)
            bias_term = float((di.sum(0)).norm() * mu_g.norm())
            inv = (1.0 / li) if li > 0 else float("inf")
            g = float(gn[i])
            dK = float(spectra.dist_to_rank(s[i], K))
            dk_grad = float(spectra.dist_to_rank(s_grad[i], K)) * inv if li > 0 else float("inf")
            dk_shift = float(spectra.dist_to_rank(s_shift[i], K))
            row = {
                "member": offset + i,
                "site": site.name,
                "layer": j + 1,
                "frob": float(frob[i]),
                "spec": float(s[i][0]),
                "rank_1e-2": int(spectra.numerical_rank(s[i], 1e-2)),
                "rank_1e-3": int(spectra.numerical_rank(s[i], 1e-3)),
                "energy_rank": int(spectra.energy_rank(s[i], 1e-2)),
                "dK": dK,
                "dK_rel": float(spectra.relative_dist_to_rank(s[i], K)),
                "dKm1": float(spectra.dist_to_rank(s[i], K - 1)),
                "sK1_ratio": float(s[i][K] / s[i][0]) if s.shape[1] > K and s[i][0] > 0 else 0.0,
                "grad_norm": g,
                "stationarity": g * inv / float(frob[i]) if float(frob[i]) > 0 else float("nan"),
                "delta_norm": dnorm,
                "delta_max": dmax,
                "cross_norm": cross,
                "bound": (g + cross / N) * inv,
                "bound_cs": (g + dnorm * np.sqrt(tcv2 * N) / N) * inv,
                "bound_tcv1": (g + dmax * tcv1) * inv,
                "bound_a2": (g + float(rho[i]) * np.sqrt(2 * float(L0[i].detach())) * np.sqrt(tcv2)) * inv,
                "bound_km1": (g + cross / N + bias_term / N) * inv,
                "rho": float(rho[i]),
                "identity_gap": abs(dk_shift - dk_grad) / max(dK, 1e-300) if li > 0 else float("nan"),
                "dK_grad_form": dk_grad,
                "tcv1": tcv1,
                "tcv2": tcv2,
                "tcv_ratio": float(collapse.within_total_ratio(ui, labels, K)),
                "nc1": float(collapse.nc1(ui, labels, K)) if bool((counts > 0).all()) else float("nan"),
                "tcv2_out": float("nan"),
                "a3_bound": lip**2 * float(spec_norms[j][i]) ** 2 * tcv2,
            }
            if hidden_out and not arch.residual:
                zo = sigma(site.output.detach()[i])
                row["tcv2_out"] = float(collapse.tcv(zo, labels, K))
            rows.append(row)
    return rows
