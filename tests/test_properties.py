"""Property-based tests (Hypothesis) of the metrics and of Theorem A's terms.

* invariances: numerical ranks and d_K under orthogonal rotations (left and right) and
  transposition; TCV_1, TCV_2, the TCV ratio and NC1 under orthogonal rotations and translations
  of the features, permutations of the samples and relabellings of the classes; every column of
  the per-site table under a permutation of the samples, a relabelling of the classes and a
  rotation of the input features compensated in the first layer (the network is unchanged);
* scaling laws: d_K(cW) = |c| d_K(W), ranks and d_K/||W|| scale-free, TCV_2 ~ c^2, TCV_1 ~ |c|,
  the TCV ratio and NC1 scale-free;
* the bound's terms (gradient norm, ||Delta||, max_i ||delta_i||, ||Delta^T R||, TCV_1, TCV_2 and
  the exact and Cauchy-Schwarz forms of the bound) on random small networks, against float64
  autograd of a forward pass written here, and d_K <= bound (a theorem: it holds at any
  parameter).

Examples are few (``max_examples`` <= 25) and ``deadline=None``, so the whole module runs in well
under a minute on a loaded 2-core machine; ``database=None`` keeps the checkout clean.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import nrc
import nrc_reference as ref

SETTINGS = settings(max_examples=25, deadline=None, database=None, derandomize=True)
RTOL = 1e-8


def _orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@st.composite
def features(draw):
    """Labelled features: K classes, 2-5 samples each, dimension 2-7, random scale and offset."""
    seed = draw(st.integers(0, 2**31 - 1))
    K = draw(st.integers(2, 4))
    d = draw(st.integers(2, 7))
    sizes = draw(st.lists(st.integers(2, 5), min_size=K, max_size=K))
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((K, d)) * draw(st.floats(0.5, 3.0))
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    Z = centers[labels] + rng.standard_normal((len(labels), d)) * draw(st.floats(0.05, 2.0))
    return Z, labels, K, rng


def _metrics(Z, labels, K):
    Z, labels = torch.tensor(Z), torch.tensor(labels)
    return np.array([float(nrc.tcv(Z, labels, K, kind="squared")), float(nrc.tcv(Z, labels, K, kind="unsquared")),
                     float(nrc.within_total_ratio(Z, labels, K)), float(nrc.nc1(Z, labels, K))])


@SETTINGS
@given(features())
def test_collapse_metrics_invariances(case):
    Z, labels, K, rng = case
    base = _metrics(Z, labels, K)
    assert np.all(np.isfinite(base)) and np.all(base > 0)
    r = ref.collapse_stats(Z, labels, K)
    np.testing.assert_allclose(base, [r["tcv2"], r["tcv1"], r["tcv_ratio"], r["nc1"]], rtol=1e-7)
    Q = _orthogonal(rng, Z.shape[1])
    np.testing.assert_allclose(_metrics(Z @ Q, labels, K), base, rtol=RTOL, err_msg="rotation")
    np.testing.assert_allclose(_metrics(Z + rng.standard_normal(Z.shape[1]) * 5, labels, K), base, rtol=1e-7,
                               err_msg="translation")
    perm = rng.permutation(len(labels))
    np.testing.assert_allclose(_metrics(Z[perm], labels[perm], K), base, rtol=RTOL, err_msg="sample permutation")
    relabel = rng.permutation(K)
    np.testing.assert_allclose(_metrics(Z, relabel[labels], K), base, rtol=RTOL, err_msg="class relabelling")


@SETTINGS
@given(features(), st.floats(0.01, 100.0), st.sampled_from([1.0, -1.0]))
def test_collapse_metrics_scaling(case, c, sign):
    Z, labels, K, _ = case
    base = _metrics(Z, labels, K)
    got = _metrics(sign * c * Z, labels, K)
    np.testing.assert_allclose(got, base * np.array([c**2, c, 1.0, 1.0]), rtol=RTOL)


@SETTINGS
@given(features())
def test_nc1_matches_pseudo_inverse_reference(case):
    Z, labels, K, _ = case
    expect = ref.collapse_stats(Z, labels, K)["nc1"]
    assert float(nrc.nc1(torch.tensor(Z), torch.tensor(labels), K)) == pytest.approx(expect, rel=1e-7)


@st.composite
def matrices(draw):
    """A matrix with known singular values (kept away from the rank thresholds)."""
    seed = draw(st.integers(0, 2**31 - 1))
    m, n = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    r = min(m, n)
    rng = np.random.default_rng(seed)
    s = np.sort(np.exp(rng.uniform(-9, 1, size=r)))[::-1]
    for tol in (1e-2, 1e-3):
        assume(np.all(np.abs(s / s[0] - tol) > 1e-6 * tol))
    return ref.matrix_with_singular_values(rng, m, n, s), s, rng


@SETTINGS
@given(matrices(), st.integers(0, 8))
def test_rank_and_distance_invariances_and_closed_form(case, k):
    W, s, rng = case
    sv = nrc.svdvals(W)
    np.testing.assert_allclose(sv, s, rtol=1e-9, atol=1e-14 * s[0])
    for tol in (1e-2, 1e-3):
        assert int(nrc.numerical_rank(sv, tol)) == ref.rank_from_s(list(s), tol)
    assert int(nrc.energy_rank(sv, 1e-2)) == ref.energy_rank_from_s(list(s), 1e-2)
    dk = float(nrc.dist_to_rank(sv, k))
    assert dk == pytest.approx(ref.dist_from_s(list(s), k), rel=1e-9, abs=1e-14 * s[0])
    assert float(nrc.relative_dist_to_rank(sv, k)) == pytest.approx(
        ref.dist_from_s(list(s), k) / ref.dist_from_s(list(s), 0), rel=1e-9, abs=1e-14)
    P, Q = _orthogonal(rng, W.shape[0]), _orthogonal(rng, W.shape[1])
    for other in (P @ W @ Q, W.T):
        so = nrc.svdvals(other)
        assert int(nrc.numerical_rank(so, 1e-2)) == int(nrc.numerical_rank(sv, 1e-2))
        assert int(nrc.numerical_rank(so, 1e-3)) == int(nrc.numerical_rank(sv, 1e-3))
        assert float(nrc.dist_to_rank(so, k)) == pytest.approx(dk, rel=1e-9, abs=1e-14 * s[0])


@SETTINGS
@given(matrices(), st.integers(0, 8), st.floats(1e-3, 1e3), st.sampled_from([1.0, -1.0]))
def test_distance_to_rank_scales_linearly(case, k, c, sign):
    W, s, _ = case
    sv, sc = nrc.svdvals(W), nrc.svdvals(sign * c * W)
    assert float(nrc.dist_to_rank(sc, k)) == pytest.approx(c * float(nrc.dist_to_rank(sv, k)), rel=1e-9,
                                                           abs=1e-14 * c * s[0])
    assert float(nrc.relative_dist_to_rank(sc, k)) == pytest.approx(float(nrc.relative_dist_to_rank(sv, k)),
                                                                    rel=1e-9, abs=1e-14)
    for tol in (1e-2, 1e-3):
        assert int(nrc.numerical_rank(sc, tol)) == int(nrc.numerical_rank(sv, tol))


# ------------------------------------------------------------------------------ networks

@st.composite
def networks(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    K = draw(st.integers(2, 4))
    hidden = draw(st.lists(st.integers(2, 6), min_size=1, max_size=2))
    d0 = draw(st.integers(2, 5))
    arch = nrc.Architecture((d0, *hidden, K), activation=draw(st.sampled_from(["relu", "tanh", "softplus"])),
                            bias=draw(st.booleans()))
    loss = draw(st.sampled_from(["ce", "mse"]))
    lam = draw(st.floats(1e-3, 1.0))
    params = nrc.init_params(arch, [seed], init_scale=draw(st.floats(0.5, 2.0)), dtype=torch.float64)
    data = nrc.make_gaussian_mixture(num_classes=K, dim=d0, per_class=draw(st.integers(2, 4)),
                                     spread=draw(st.floats(0.1, 1.5)), seed=seed % 1000)
    return arch, params, data, loss, lam


def _autograd_terms(arch, params, x, y, loss, lam):
    """Theorem A's terms from float64 autograd of a forward pass written here (feed-forward)."""
    f = {"relu": torch.relu, "tanh": torch.tanh, "softplus": torch.nn.functional.softplus}[arch.activation]
    p = {k: v[0].clone().requires_grad_(True) for k, v in params.items()}
    names = [n for n, _, _ in arch.sites()]
    pre, inputs, z = [], [], x
    for i, n in enumerate(names):
        inputs.append(z)
        a = z @ p[n].T + (p["b" + n[1:]] if arch.bias else 0.0)
        a.retain_grad()
        pre.append(a)
        z = f(a) if i < len(names) - 1 else a
    K, N = arch.num_classes, x.shape[0]
    onehot = torch.nn.functional.one_hot(y, K).double()
    per = (torch.logsumexp(z, 1) - (z * onehot).sum(1)) if loss == "ce" else 0.5 * ((z - onehot) ** 2).sum(1)
    reg = sum(0.5 * (v**2).sum() for v in p.values())
    (per.sum() / N + lam * reg).backward()
    out = []
    for n, a, u in zip(names, pre, inputs):
        D = a.grad.detach() * N  # d sum_i loss_i / d a
        U = u.detach().numpy()
        R = ref.residuals(U, y.numpy(), K)
        g = float(p[n].grad.norm())
        cross = float(np.linalg.norm(D.numpy().T @ R))
        dnorm = float(D.norm())
        dmax = float(D.norm(dim=1).max())
        tcv1 = sum(float(np.linalg.norm(r)) for r in R) / N
        tcv2 = float((R**2).sum()) / N
        out.append({"site": n, "grad_norm": g, "cross_norm": cross, "delta_norm": dnorm, "delta_max": dmax,
                    "tcv1": tcv1, "tcv2": tcv2, "bound": (g + cross / N) / lam,
                    "bound_cs": (g + dnorm * math.sqrt(tcv2 * N) / N) / lam, "bound_tcv1": (g + dmax * tcv1) / lam})
    return out


@settings(max_examples=20, deadline=None, database=None, derandomize=True)
@given(networks())
def test_bound_terms_match_float64_autograd_and_the_bound_holds(net):
    arch, params, data, loss, lam = net
    x, y = data.x_train.double(), data.y_train
    sites = nrc.site_quantities(arch, params, x, y, [lam], loss=loss)
    expect = _autograd_terms(arch, params, x, y, loss, lam)
    assert sites["site"].tolist() == [e["site"] for e in expect]
    for col in expect[0]:
        if col == "site":
            continue
        np.testing.assert_allclose(sites[col].to_numpy(float), [e[col] for e in expect], rtol=1e-9, atol=1e-15,
                                   err_msg=col)
    # Theorem A at any parameter, and the order of its forms
    assert (sites["dK"] <= sites["bound"] * (1 + 1e-10) + 1e-15).all()
    assert (sites["bound"] <= sites["bound_cs"] * (1 + 1e-10)).all()
    assert (sites["bound"] <= sites["bound_tcv1"] * (1 + 1e-10)).all()


@settings(max_examples=10, deadline=None, database=None, derandomize=True)
@given(networks())
def test_site_table_invariant_under_permutation_relabelling_and_rotation(net):
    arch, params, data, loss, lam = net
    x, y = data.x_train.double(), data.y_train
    K = arch.num_classes
    base = nrc.site_quantities(arch, params, x, y, [lam], loss=loss)
    rng = np.random.default_rng(int(params["W1"].abs().sum() * 1e6) % 2**31)
    cols = [c for c in nrc.SITE_COLUMNS if c != "identity_gap"]

    def same(other, what, skip=()):
        for c in cols:
            if c in skip:
                continue
            np.testing.assert_allclose(other[c].to_numpy(float), base[c].to_numpy(float), rtol=1e-7, atol=1e-12,
                                       err_msg=f"{what}: {c}")

    perm = torch.as_tensor(rng.permutation(len(y)))
    same(nrc.site_quantities(arch, params, x[perm], y[perm], [lam], loss=loss), "sample permutation")
    # relabelling the classes and permuting the output rows (and biases) gives the same network
    relabel = torch.as_tensor(rng.permutation(K))
    p2 = dict(params)
    last = f"W{arch.depth}"
    inv = torch.argsort(relabel)
    p2[last] = params[last][:, inv]
    if arch.bias:
        p2["b" + last[1:]] = params["b" + last[1:]][:, inv]
    same(nrc.site_quantities(arch, p2, x, relabel[y], [lam], loss=loss), "class relabelling")
    # rotating the inputs, x -> x Q, with W1 -> W1 Q leaves the network (and every number) unchanged;
    # the input features are only rotated, so their TCV and NC1 are the same too
    Q = torch.as_tensor(_orthogonal(rng, x.shape[1]))
    p3 = dict(params)
    p3["W1"] = params["W1"] @ Q
    same(nrc.site_quantities(arch, p3, x @ Q, y, [lam], loss=loss), "input rotation")
