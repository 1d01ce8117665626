import math

import numpy as np
import pytest
import torch

import nrc


def _simplex_etf(K, d, scale=1.0, seed=0):
    """K unit-norm class means with pairwise cosine -1/(K-1), embedded in R^d."""
    P = torch.eye(K, dtype=torch.float64) - torch.full((K, K), 1.0 / K, dtype=torch.float64)
    P = P / P.norm(dim=1, keepdim=True)
    Q, _ = torch.linalg.qr(torch.randn(d, K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return scale * P @ Q.T  # (K, d)


def test_fully_collapsed_embeddings_have_zero_tcv_and_nc1():
    K, n, d = 4, 5, 8
    means = _simplex_etf(K, d)
    labels = torch.arange(K).repeat_interleave(n)
    Z = means[labels] + 3.0  # a common offset must not matter
    assert float(nrc.tcv(Z, labels, K)) == pytest.approx(0, abs=1e-24)
    assert float(nrc.tcv(Z, labels, K, kind="unsquared")) == pytest.approx(0, abs=1e-12)
    assert float(nrc.nc1(Z, labels, K)) == pytest.approx(0, abs=1e-24)
    assert float(nrc.within_total_ratio(Z, labels, K)) == pytest.approx(0, abs=1e-24)


def test_simplex_etf_gives_known_nc2_values():
    K, n, d = 5, 3, 7
    labels = torch.arange(K).repeat_interleave(n)
    Z = _simplex_etf(K, d, scale=2.0)[labels]
    out = nrc.nc2(Z, labels, K)
    assert float(out["equinorm"]) == pytest.approx(0, abs=1e-12)
    assert float(out["equiangle"]) == pytest.approx(0, abs=1e-12)
    assert float(out["max_angle"]) == pytest.approx(0, abs=1e-12)


def test_nc1_closed_form_for_etf_plus_isotropic_within_class_noise():
    # Means: a simplex ETF of norm r, so Sigma_B = r^2/(K-1) * P on its (K-1)-dim span.
    # Residuals: +-a along every axis of R^d, so Sigma_W = a^2/d ... built exactly below.
    K, d, r, a = 4, 6, 2.0, 0.3
    means = _simplex_etf(K, d, scale=r)
    eye = torch.eye(d, dtype=torch.float64)
    offsets = torch.cat([a * eye, -a * eye])  # 2d points per class, mean zero, Sigma = a^2/d I
    Z = torch.cat([means[k] + offsets for k in range(K)])
    labels = torch.arange(K).repeat_interleave(2 * d)
    # Sigma_W = a^2/d I; Sigma_B has K-1 eigenvalues r^2/(K-1); tr(Sigma_W Sigma_B^+)/K:
    expected = (a**2 / d) * (K - 1) * (K - 1) / r**2 / K
    assert float(nrc.nc1(Z, labels, K)) == pytest.approx(expected, rel=1e-10)
    assert float(nrc.tcv(Z, labels, K)) == pytest.approx(a**2, rel=1e-12)
    assert float(nrc.tcv(Z, labels, K, kind="unsquared")) == pytest.approx(a, rel=1e-12)


def test_nc1_matches_dxd_pseudo_inverse_route():
    g = torch.Generator().manual_seed(1)
    K, N, d = 5, 200, 12
    labels = torch.randint(K, (N,), generator=g)
    Z = torch.randn(N, d, generator=g, dtype=torch.float64) + 2 * torch.randn(K, d, generator=g, dtype=torch.float64)[labels]
    means, counts = nrc.class_means(Z, labels, K)
    R = Z - means[labels]
    Sw = R.T @ R / N
    C = means - Z.mean(0)
    Sb = C.T @ C / K
    ref = torch.trace(Sw @ torch.linalg.pinv(Sb, rtol=1e-10)) / K
    assert float(nrc.nc1(Z, labels, K)) == pytest.approx(float(ref), rel=1e-8)


def test_stacked_members_and_stability_in_collapsed_regime():
    # Huge offset, tiny spread: a one-pass sum of squares in fp32 would cancel; two-pass does not.
    g = torch.Generator().manual_seed(0)
    K, n, d = 3, 50, 4
    labels = torch.arange(K).repeat_interleave(n)
    noise = 1e-3 * torch.randn(K * n, d, generator=g)
    Z = (1e4 + 10 * torch.arange(K).float()[labels, None] + noise).float()
    R = nrc.within_class(Z, labels, K)
    ref_means = torch.stack([Z.double()[labels == k].mean(0) for k in range(K)])
    ref = ((Z.double() - ref_means[labels]) ** 2).sum(1).mean()
    assert float(nrc.tcv(Z, labels, K)) == pytest.approx(float(ref), rel=1e-10)
    stacked = torch.stack([Z, 2 * Z])
    t = nrc.tcv(stacked, labels, K)
    assert t.shape == (2,)
    assert float(t[1]) == pytest.approx(4 * float(t[0]), rel=1e-10)
    assert R.dtype == torch.float64


def test_input_validation():
    Z = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="labels has 3 entries"):
        nrc.tcv(Z, torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        nrc.tcv(Z, torch.tensor([0, 1, 2, 0]), 2)
    with pytest.raises(ValueError, match="kind"):
        nrc.tcv(Z, torch.zeros(4, dtype=torch.long), 2, kind="cubed")
    with pytest.raises(ValueError, match="num_clusters"):
        nrc.kmeans(Z, 5)


def test_kmeans_recovers_separated_clusters_deterministically():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(3).repeat_interleave(20)
    Z = centers[labels] + 0.1 * torch.randn(60, 2, generator=g)
    a = nrc.kmeans(Z, 3, seed=1)
    b = nrc.kmeans(Z, 3, seed=1)
    assert torch.equal(a, b)
    # same partition up to relabelling
    for k in range(3):
        assert len(set(a[labels == k].tolist())) == 1
    assert len(set(a.tolist())) == 3


@pytest.mark.parametrize("iters", [100, 2])
def test_batched_kmeans_restarts_match_one_at_a_time(iters):
    # overlapping clusters: restarts converge after different numbers of iterations to different
    # optima; iters=2 stops them before convergence (the assignment of the last step is kept)
    from nrc_reference import kmeans_one_restart_at_a_time

    g = torch.Generator().manual_seed(3)
    Z = torch.randn(300, 7, generator=g, dtype=torch.float64) + 0.8 * torch.randn(5, 7, generator=g,
                                                                                   dtype=torch.float64).repeat(60, 1)
    for seed in (0, 1, 2):
        ref = kmeans_one_restart_at_a_time(Z, 5, seed=seed, iters=iters)
        got = nrc.kmeans(Z, 5, seed=seed, iters=iters)
        assert torch.equal(got, ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_nc2_matches_an_independent_numpy_computation(seed):
    """On spread-out, unequal classes every NC2 statistic is non-zero, so a scaled result fails."""
    from nrc_reference import nc2_reference

    g = torch.Generator().manual_seed(seed)
    K, d = 4, 6
    labels = torch.arange(K).repeat_interleave(torch.tensor([5, 7, 6, 9]))
    Z = torch.randn(K, d, generator=g, dtype=torch.float64)[labels] * 2 \
        + torch.randn(len(labels), d, generator=g, dtype=torch.float64)
    out, ref = nrc.nc2(Z, labels, K), nc2_reference(Z.numpy(), labels.numpy(), K)
    assert float(out["max_angle"]) == pytest.approx(ref["max_angle"], rel=1e-12) and ref["max_angle"] > 0.01
    # nrc uses the sample standard deviation (torch's default, ddof = 1) for both spreads
    assert float(out["equiangle"]) == pytest.approx(ref["cos"].std(ddof=1), rel=1e-12) and ref["cos"].std() > 0.01
    norms = ref["norms"]
    assert float(out["equinorm"]) == pytest.approx(norms.std(ddof=1) / norms.mean(), rel=1e-12)
    assert norms.std() / norms.mean() > 0.01
