"""Within-class variability and neural-collapse statistics of embeddings.

Conventions (SPEC section 2): embeddings ``Z`` have samples as rows, shape ``(N, d)``, or
``(M, N, d)`` with a leading member axis; ``labels`` has shape ``(N,)`` (shared) or ``(M, N)``.
Everything is computed in float64 with exact two-pass formulas held in memory (class means
first, then residuals), never with a one-pass sum of squares, which cancels catastrophically
in the collapsed regime the paper is about.

Degenerate inputs get one rule across :func:`nc1`, :func:`nc2`, :func:`tcv`,
:func:`within_total_ratio` and :func:`kmeans`:

* NaN or inf in ``Z`` (or labels outside ``0..K-1``, or non-integer labels): ``ValueError``
  naming the argument.
* ``num_classes`` (or ``num_clusters``) ``< 2``: ``ValueError``; collapse compares classes.
* A class with no sample in ``labels``: ``ValueError`` from the class-mean statistics
  :func:`nc1` and :func:`nc2` (a missing mean is undefined). :func:`tcv` and
  :func:`within_total_ratio` sum over samples and are defined for any partition (an empty group
  adds nothing), as Theorem A allows any partition. :func:`kmeans` never returns an empty
  cluster.
* 0/0 ratios (all class means coincide, e.g. constant features): ``nan``, never a number that
  reads as collapse -- :func:`nc1`, the three :func:`nc2` statistics and
  :func:`within_total_ratio` of constant features are all ``nan``; :func:`tcv` (not a ratio) is 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "ClassStats",
    "one_hot",
    "class_means",
    "within_class",
    "tcv",
    "within_total_ratio",
    "nc1",
    "nc2",
    "kmeans",
    "class_stats",
    "nc1_from_stats",
]


def _finite(Z: torch.Tensor, name: str = "Z") -> None:
    bad = int((~torch.isfinite(Z)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf); collapse metrics of "
                         "such embeddings are undefined (a diverged network?)")


def _prep(Z, labels, num_classes, min_classes: int = 1):
    Z = torch.as_tensor(Z).to(torch.float64)
    raw = torch.as_tensor(labels, device=Z.device)
    if raw.is_floating_point() and raw.numel() and not bool((raw == raw.round()).all()):
        raise ValueError("labels must be integers 0..K-1, got non-integer values")
    labels = raw.long()
    if Z.ndim not in (2, 3):
        raise ValueError(f"Z must have shape (N, d) or (M, N, d), got {tuple(Z.shape)}")
    if labels.shape[-1] != Z.shape[-2]:
        raise ValueError(f"labels has {labels.shape[-1]} entries but Z has {Z.shape[-2]} samples")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < min_classes:
        raise ValueError(f"num_classes must be an integer >= {min_classes}, got {num_classes!r}")
    _finite(Z)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    return Z, labels


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot class matrix ``E`` (float64), shape ``labels.shape + (num_classes,)``."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float64)


@dataclass(frozen=True)
class ClassStats:
    """Class statistics of embeddings ``Z`` under one partition, computed once and read by every
    metric (in the style of the accumulators of rhubarbwu/neural-collapse).

    Shapes carry the leading member axis of ``Z`` when it has one (``...``).

    Attributes
    ----------
    means : Tensor (..., K, d)
        Class means ``mu_k``; an empty class gets a zero mean.
    counts : Tensor (..., K)
        Class sizes ``n_k`` (float64).
    global_mean : Tensor (..., 1, d)
        Mean of all samples ``mu_G``.
    residuals : Tensor (..., N, d)
        Within-class residuals ``R = Z - mu_{c(i)}`` (SPEC 2.1).
    total : Tensor (...)
        Total scatter ``||Z - mu_G||_F^2 = N tr Sigma_T``.
    """

    means: torch.Tensor
    counts: torch.Tensor
    global_mean: torch.Tensor
    residuals: torch.Tensor
    total: torch.Tensor

    @property
    def centred_means(self) -> torch.Tensor:
        """``mu_k - mu_G``, shape (..., K, d)."""
        return self.means - self.global_mean

    @property
    def num_samples(self) -> int:
        return self.residuals.shape[-2]


def class_stats(Z: torch.Tensor, labels: torch.Tensor, num_classes: int) -> ClassStats:
    """:class:`ClassStats` of float64 ``Z`` (N, d) or (M, N, d) with integer ``labels``, unchecked.

    The one place class statistics are computed: :func:`class_means`, :func:`within_class`,
    :func:`tcv`, :func:`within_total_ratio`, :func:`nc1`, :func:`nc2` and
    :func:`nrc.site_quantities` read them from here. Callers that have not validated ``Z`` and
    ``labels`` use those functions (they check their input first). The residual subtracts each
    sample's own class mean, ``E @ means`` (a one-hot row picks one mean and adds exact zeros).
    """
    E = one_hot(labels, num_classes)  # (..., N, K)
    counts = E.sum(-2)
    means = (E.transpose(-1, -2) @ Z) / counts.clamp_min(1).unsqueeze(-1)
    global_mean = Z.mean(-2, keepdim=True)
    T = Z - global_mean
    return ClassStats(means, counts, global_mean, Z - E @ means, (T * T).sum((-1, -2)))


def class_means(Z, labels, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``mu_k`` and class sizes ``n_k``.

    Parameters
    ----------
    Z : Tensor, shape (N, d) or (M, N, d)
    labels : Tensor, shape (N,) or (M, N), values in ``0..num_classes-1``
    num_classes : int

    Returns
    -------
    means : Tensor, shape (..., K, d), float64
        Means of the non-empty classes; an empty class gets a zero mean.
    counts : Tensor, shape (..., K), float64
    """
    stats = class_stats(*_prep(Z, labels, num_classes), num_classes)
    return stats.means, stats.counts


def within_class(Z, labels, num_classes: int) -> torch.Tensor:
    """Within-class residuals ``R = Z - mu_{c(i)}`` (SPEC 2.1), float64, same shape as ``Z``."""
    return class_stats(*_prep(Z, labels, num_classes), num_classes).residuals


def _nc1_core(C, R, N, rtol):
    gram = C @ C.transpose(-1, -2)  # (..., K, K)
    evals, U = torch.linalg.eigh(gram)
    keep = evals > rtol * evals.amax(-1, keepdim=True)
    inv2 = torch.where(keep, 1.0 / evals.clamp_min(torch.finfo(torch.float64).tiny) ** 2, 0.0)
    Q = (R @ C.transpose(-1, -2)) @ U  # (..., N, K)
    value = ((Q * Q).sum(-2) * inv2).sum(-1) / N
    return torch.where(keep.any(-1), value, torch.full_like(value, float("nan")))


def tcv(Z, labels, num_classes: int, *, kind: str = "squared", normalize: bool = True):
    """Total Cluster Variation of embeddings (SPEC 2.2).

    The paper's exact formula was not available, so both candidates are offered:

    * ``kind="squared"``: ``TCV_2 = sum_i ||z_i - mu_{c(i)}||^2 = ||R||_F^2 = N tr(Sigma_W)``;
    * ``kind="unsquared"``: ``TCV_1 = sum_i ||z_i - mu_{c(i)}||``.

    Parameters
    ----------
    Z, labels, num_classes
        As in :func:`class_means`. ``labels`` may be any partition (e.g. k-means clusters).
    kind : {"squared", "unsquared"}
    normalize : bool
        Divide by the number of samples ``N`` (default), giving ``tr Sigma_W`` for the squared
        kind and the mean distance to the class mean for the unsquared kind.

    Returns
    -------
    Tensor, shape () or (M,), float64
    """
    if kind not in ("squared", "unsquared"):
        raise ValueError(f"kind must be 'squared' or 'unsquared', got {kind!r}")
    R = class_stats(*_prep(Z, labels, num_classes, min_classes=2), num_classes).residuals
    per_sample = (R * R).sum(-1)
    value = per_sample.sum(-1) if kind == "squared" else per_sample.sqrt().sum(-1)
    return value / R.shape[-2] if normalize else value


def within_total_ratio(Z, labels, num_classes: int):
    """Scale-free ``tr(Sigma_W) / tr(Sigma_T)`` in [0, 1]; ``Sigma_T`` is the total covariance.

    ``nan`` when the total variance is 0 (constant features: 0/0, not collapse). Needs
    ``num_classes >= 2``; empty classes are allowed (see the module docstring).
    """
    stats = class_stats(*_prep(Z, labels, num_classes, min_classes=2), num_classes)
    R, total = stats.residuals, stats.total
    ratio = (R * R).sum((-1, -2)) / total.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(total > 0, ratio, torch.full_like(ratio, float("nan")))


def nc1(Z, labels, num_classes: int, *, rtol: float = 1e-12):
    """NC1 of Papyan, Han & Donoho (PNAS 2020): ``tr(Sigma_W Sigma_B^+) / K``.

    Convention: ``Sigma_W = R^T R / N`` and ``Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T``
    over the unweighted class means, centred at the global sample mean ``mu_G`` (SPEC 2.3).
    Computed without any ``d x d`` pseudo-inverse: with ``C`` the ``K x d`` centred means and
    ``C C^T = U diag(s^2) U^T``, ``NC1 = (1/N) sum_j ||R C^T u_j||^2 / s_j^4`` over the
    eigenvalues ``s_j^2 > rtol * max s^2`` (the same value as the pseudo-inverse route, at
    ``O(N d K)`` cost instead of ``O(d^3)``).

    Returns
    -------
    Tensor, shape () or (M,), float64
        0 for perfectly collapsed classes; ``nan`` when all class means coincide.

    Raises
    ------
    ValueError
        NaN/inf in ``Z``, ``num_classes < 2``, or a class without samples.
    """
    stats = _stats_all_classes(Z, labels, num_classes, "nc1")
    return nc1_from_stats(stats, rtol=rtol)


def nc1_from_stats(stats: ClassStats, *, rtol: float = 1e-12):
    """:func:`nc1` from the :class:`ClassStats` of a partition whose every class is non-empty."""
    return _nc1_core(stats.centred_means, stats.residuals, stats.num_samples, rtol)


def _stats_all_classes(Z, labels, num_classes: int, what: str) -> ClassStats:
    """:class:`ClassStats` of checked inputs whose every class has a sample.

    The NC metrics compare class means, so every class must have a sample (``what`` names the
    metric in the error).
    """
    stats = class_stats(*_prep(Z, labels, num_classes, min_classes=2), num_classes)
    empty = (stats.counts == 0)
    if bool(empty.any()):
        missing = sorted({int(k) for k in torch.nonzero(empty)[:, -1].tolist()})
        raise ValueError(f"{what} needs every class to have at least one sample; labels has none of "
                         f"class(es) {missing}")
    return stats


def nc2(Z, labels, num_classes: int) -> dict[str, torch.Tensor]:
    """NC2 statistics of the centred class means (Papyan, Han & Donoho 2020, Fig. 2-3).

    Returns
    -------
    dict with
        ``equinorm``: std/mean of the norms ``||mu_k - mu_G||`` (0 for a simplex ETF);
        ``equiangle``: std of the pairwise cosines of the centred means (0 for an ETF);
        ``max_angle``: mean of ``|cos + 1/(K-1)|`` over pairs, the distance to the simplex
        ETF's angle (0 for an ETF).
        All three are ``nan`` when a centred mean is 0 (e.g. constant features: 0/0).

    Raises
    ------
    ValueError
        NaN/inf in ``Z``, ``num_classes < 2``, or a class without samples.
    """
    C = _stats_all_classes(Z, labels, num_classes, "nc2").centred_means
    norms = C.norm(dim=-1)
    cos = (C @ C.transpose(-1, -2)) / (norms.unsqueeze(-1) * norms.unsqueeze(-2))
    K = num_classes
    off = ~torch.eye(K, dtype=torch.bool, device=C.device)
    pairs = cos[..., off]
    degenerate = (norms == 0).any(-1)
    nan = torch.full_like(norms[..., 0], float("nan"))
    out = {
        "equinorm": norms.std(-1) / norms.mean(-1),
        "equiangle": pairs.std(-1) if K > 2 else torch.zeros_like(nan),
        "max_angle": (pairs + 1.0 / (K - 1)).abs().mean(-1),
    }
    return {k: torch.where(degenerate, nan, v) for k, v in out.items()}


def kmeans(Z, num_clusters: int, *, seed: int = 0, iters: int = 100, n_init: int = 4):
    """k-means clustering (Lloyd's algorithm, k-means++ seeding) of the rows of ``Z``.

    Used for check T4: Theorem A holds for any partition of the samples into ``K`` groups, so
    the k-means clusters of ``Z_{l-1}`` give a bound too, often a smaller one.

    Parameters
    ----------
    Z : Tensor, shape (N, d)
    num_clusters : int
    seed : int
        Seed of the k-means++ initialisation (deterministic).
    iters, n_init : int
        Lloyd iterations per restart and number of restarts; the lowest cost wins.

    Returns
    -------
    Tensor of int64, shape (N,)
        Every cluster is non-empty (an empty one takes the point farthest from its centre among
        clusters with more than one point; with duplicate rows this is still an optimal split).

    Raises
    ------
    ValueError
        ``Z`` not 2-D or with NaN/inf; ``num_clusters`` outside ``[2, N]``.
    """
    Z = torch.as_tensor(Z).to(torch.float64)
    if Z.ndim != 2:
        raise ValueError(f"Z must have shape (N, d), got {tuple(Z.shape)}")
    _finite(Z)
    N = Z.shape[0]
    if isinstance(num_clusters, bool) or int(num_clusters) != num_clusters or not 2 <= num_clusters <= N:
        raise ValueError(f"num_clusters must be an integer in [2, {N}] (N = number of rows of Z), "
                         f"got {num_clusters!r}")
    gen = torch.Generator().manual_seed(seed)
    zz = (Z * Z).sum(1, keepdim=True)
    K = int(num_clusters)

    def sq_dist(C):  # (N, k) squared distances by one matrix product (cdist is ~3x slower here)
        return (zz - 2.0 * (Z @ C.T) + (C * C).sum(1)).clamp_min(0.0)

    # k-means++ seeding of every restart first, in the order the generator was always used; the
    # distance to the nearest centre so far is kept as a running minimum (one new column per centre
    # instead of all of them again: the same values, tests/test_collapse.py checks the assignment)
    inits = []
    for _ in range(n_init):
        first = int(torch.randint(N, (1,), generator=gen))
        centers = [Z[first]]
        d2 = sq_dist(Z[first:first + 1])[:, 0]
        for _ in range(1, K):
            prob = (d2 / d2.sum()).cpu() if d2.sum() > 0 else torch.full((N,), 1.0 / N)
            nxt = int(torch.multinomial(prob, 1, generator=gen))
            centers.append(Z[nxt])
            d2 = torch.minimum(d2, sq_dist(Z[nxt:nxt + 1])[:, 0])
        inits.append(torch.stack(centers))
    # Lloyd iterations of all restarts at once: one (N, d) x (d, R K) product per iteration instead
    # of R narrow ones; a restart stops changing once its centres are fixed, as when run alone
    C = torch.stack(inits)  # (R, K, d)
    last = torch.zeros(n_init, N, dtype=torch.long, device=Z.device)  # each restart's latest assignment
    running = torch.ones(n_init, dtype=torch.bool, device=Z.device)
    offsets = (torch.arange(n_init, device=Z.device) * K).unsqueeze(1)
    for _ in range(iters):
        act = torch.nonzero(running).flatten()
        Ca = C[act]  # (A, K, d)
        A = Ca.shape[0]
        dist = sq_dist(Ca.reshape(A * K, -1)).view(N, A, K)
        assign = dist.argmin(2).T  # (A, N)
        last[act] = assign
        flat = (assign + offsets[:A]).reshape(-1)
        onehot = torch.zeros(A * K, N, dtype=Z.dtype, device=Z.device)
        onehot.view(-1)[flat * N + torch.arange(N, device=Z.device).repeat(A)] = 1.0
        counts = onehot.sum(1)
        sums = onehot @ Z  # (A K, d)
        # an empty cluster keeps its centre (it is filled after the loop)
        newC = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1.0)[:, None],
                           Ca.reshape(A * K, -1)).view(A, K, -1)
        same = (newC == Ca).flatten(1).all(1)
        C[act] = newC
        running[act[same]] = False
        if not bool(running.any()):
            break
    best, best_cost = None, float("inf")
    for r in range(n_init):
        # the assignment that produced the final centres (= their own once converged)
        assign = _fill_empty(Z, C[r], last[r], K)
        cost = float(((Z - C[r][assign]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = assign, cost
    return best


def _fill_empty(Z, C, assign, K):
    """Give every empty cluster one point: the farthest from its centre among clusters of size > 1."""
    assign = assign.clone()
    for k in range(K):
        counts = torch.bincount(assign, minlength=K)
        if counts[k] > 0:
            continue
        movable = counts[assign] > 1
        d2 = ((Z - C[assign]) ** 2).sum(1)
        d2 = torch.where(movable, d2, torch.full_like(d2, -1.0))
        assign[int(d2.argmax())] = k
    return assign
