"""Unit tests of nrc.landscape: minimum-norm costs, collapse, paths, the reduced problem."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nrc
from conftest import mixture
from nrc import landscape as ls

F64 = torch.float64


def _net(widths=(6, 12, 12, 3), seed=0, scale=1.0):
    arch = nrc.Architecture(widths, "relu", bias=False)
    p = nrc.init_params(arch, [seed], init_scale=scale, dtype=F64)
    return arch, {k: v[0] for k, v in p.items()}


def _data(K=3, dim=6, per_class=5, spread=0.5, seed=0):
    d = mixture(num_classes=K, dim=dim, per_class=per_class, spread=spread, seed=seed, dtype=F64)
    return d.x_train, d.y_train


# ---------------------------------------------------------------------------------------------
# B: minimum-norm weights


def test_min_norm_weights_solves_and_is_minimal():
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(5, 9, generator=g, dtype=F64)
    T = torch.randn(5, 2, generator=g, dtype=F64)
    W, res = ls.min_norm_weights(Z, T)
    assert res < 1e-12
    # any other solution adds a null-space component and is longer
    null = torch.linalg.svd(Z)[2][5:].T  # (9, 4) basis of the null space of Z
    W2 = W + torch.randn(2, 4, generator=g, dtype=F64) @ null.T
    assert torch.allclose(Z @ W2.T, T, atol=1e-10)
    assert float(W.norm()) < float(W2.norm())


def test_min_norm_inconsistent_reports_residual():
    Z = torch.ones(3, 1, dtype=F64)
    T = torch.tensor([[0.0], [1.0], [2.0]], dtype=F64)
    _, res = ls.min_norm_weights(Z, T)
    assert res > 0.1


def test_elementary_fact_collapse_never_costs_more():
    """{W z_i = t_c(i)} = {W mu_k = t_k} ∩ {W R = 0}: the collapsed minimum is never larger."""
    g = torch.Generator().manual_seed(1)
    K, n, d = 3, 4, 20
    labels = torch.arange(K).repeat_interleave(n)
    E = nrc.one_hot(labels, K)
    for _ in range(10):
        Z = torch.randn(K * n, d, generator=g, dtype=F64) + 2 * E @ torch.randn(K, d, generator=g, dtype=F64)
        Tc = torch.randn(K, 2, generator=g, dtype=F64)
        M, _ = nrc.class_means(Z, labels, K)
        R = nrc.within_class(Z, labels, K)
        W_spread, r1 = ls.min_norm_weights(Z, E @ Tc)
        W_coll, r2 = ls.min_norm_weights(M, Tc)
        W_both, r3 = ls.min_norm_weights(torch.cat([M, R]), torch.cat([Tc, torch.zeros(K * n, 2, dtype=F64)]))
        assert max(r1, r2, r3) < 1e-10
        assert float(W_coll.norm()) <= float(W_spread.norm()) + 1e-12
        assert torch.allclose(W_spread, W_both, atol=1e-9)


def test_collapse_costs_orderings():
    x, y = _data()
    arch, p = _net()
    rows = ls.collapse_costs(arch, p, x, y)
    assert {(r["l0"], r["layer"]) for r in rows} == {(1, 2), (1, 3), (2, 3)}
    for r in rows:
        assert r["layerwise"] <= r["before"] * (1 + 1e-9) + 1e-12
        assert r["before"] <= r["trained"] * (1 + 1e-9) + 1e-12
        assert r["before_residual"] < 1e-8 and r["chain_residual"] < 1e-8
        if r["layer"] == r["l0"] + 1:
            assert r["chain"] == pytest.approx(r["layerwise"], rel=1e-9)
            assert r["jensen_gap"] == pytest.approx(0.0, abs=1e-12)


def test_collapse_costs_rejects_bias():
    arch = nrc.Architecture((4, 5, 2), "relu", bias=True)
    p = {k: v[0] for k, v in nrc.init_params(arch, [0], dtype=F64).items()}
    with pytest.raises(ValueError, match="bias"):
        ls.collapse_costs(arch, p, torch.zeros(4, 4, dtype=F64), torch.tensor([0, 1, 0, 1]))


def test_ridge_readout_is_optimal_and_monotone_in_spread():
    x, y = _data(K=3, dim=8, per_class=6)
    K, lam = 3, 0.05
    T = nrc.one_hot(y, K)
    W, v = ls.ridge_readout(x, T, lam)
    Wr = W.clone().requires_grad_(True)
    obj = 0.5 * ((x @ Wr.T - T) ** 2).sum() / len(y) + 0.5 * lam * (Wr ** 2).sum()
    (g,) = torch.autograd.grad(obj, Wr)
    assert float(g.norm()) < 1e-10
    assert float(obj.detach()) == pytest.approx(v, rel=1e-10)
    M, _ = nrc.class_means(x, y, K)
    R = nrc.within_class(x, y, K)
    E = nrc.one_hot(y, K)
    vals = [ls.ridge_readout(E @ M + s * R, T, lam)[1] for s in np.linspace(0, 2, 9)]
    assert all(b >= a - 1e-14 for a, b in zip(vals, vals[1:]))


def test_ridge_readout_primal_and_kernel_forms_agree():
    g = torch.Generator().manual_seed(3)
    T = torch.randn(12, 2, generator=g, dtype=F64)
    for d in (5, 30):  # N > d uses the primal form, N <= d the kernel form
        Z = torch.randn(12, d, generator=g, dtype=F64)
        W, v = ls.ridge_readout(Z, T, 0.1)
        direct = 0.5 * ((Z @ W.T - T) ** 2).sum() / 12 + 0.05 * (W ** 2).sum()
        assert v == pytest.approx(float(direct), rel=1e-10)
        W2 = torch.linalg.lstsq(torch.cat([Z, (0.1 * 12) ** 0.5 * torch.eye(d, dtype=F64)]),
                                torch.cat([T, torch.zeros(d, 2, dtype=F64)])).solution.T
        assert torch.allclose(W, W2, atol=1e-10)


def test_residual_projector_collapses():
    x, y = _data(K=2, dim=12, per_class=3)
    P = ls.residual_projector(x, y, 2)
    assert torch.allclose(P @ P, P, atol=1e-10) and torch.allclose(P, P.T, atol=1e-12)
    W = torch.randn(4, 12, dtype=F64) @ (torch.eye(12, dtype=F64) - P)
    out = x @ W.T
    assert float(nrc.tcv(out, y, 2)) < 1e-20


# ---------------------------------------------------------------------------------------------
# C: paths


def test_barrier_and_max_rise():
    assert ls.barrier([1.0, 0.5, 0.7, 0.2]) == pytest.approx(0.0)
    assert ls.max_rise([1.0, 0.5, 0.7, 0.2]) == pytest.approx(0.2)
    assert ls.barrier([1.0, 1.5, 0.2]) == pytest.approx(0.5)
    assert ls.max_rise([3.0, 2.0, 1.0]) == 0.0
    with pytest.raises(ValueError):
        ls.barrier([])


def test_regularized_objective_matches_nrc():
    x, y = _data()
    arch, p = _net()
    ours = float(ls.regularized_objective(arch, p, x, y, 0.1, loss="mse"))
    theirs = float(nrc.regularized_loss(arch, {k: v[None] for k, v in p.items()}, x, y,
                                        torch.tensor([0.1], dtype=F64), "mse")[0])
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_straight_path_and_path_values():
    x, y = _data()
    arch, p0 = _net(seed=0)
    _, p1 = _net(seed=1)
    pts = ls.straight_path(p0, p1, 5)
    assert len(pts) == 5 and torch.equal(pts[0]["W1"], p0["W1"]) and torch.allclose(pts[-1]["W1"], p1["W1"])
    pv = ls.path_values(arch, [p0, p1], x, y, 0.1, substeps=3)
    assert pv["value"].shape == (5,) and pv["s"][0] == 0 and pv["s"][-1] == pytest.approx(1.0)
    assert pv["value"][0] == pytest.approx(float(ls.regularized_objective(arch, p0, x, y, 0.1)))
    assert pv["is_waypoint"].sum() == 2


def test_descent_path_is_monotone_on_its_check_grid():
    x, y = _data()
    arch, p = _net(scale=2.0)
    wp = ls.descent_path(arch, p, x, y, 0.05, steps=30, check_points=4)
    assert len(wp) > 5
    vals = ls.path_values(arch, wp, x, y, 0.05, substeps=4)["value"]
    assert ls.max_rise(vals) <= 1e-12 * vals[0]
    assert vals[-1] < vals[0]


def test_collapse_path_reduces_within_class_variability():
    x, y = _data(K=2, dim=12, per_class=4, spread=0.3)  # N <= d: exact collapse is possible
    arch, p = _net(widths=(12, 10, 2))
    start = ls.descent_path(arch, p, x, y, 0.01, steps=50)[-1]
    before = float(ls.hidden_tcv(arch, start, x, y, reduce="max"))
    wp, rhos = ls.collapse_path(arch, start, x, y, 0.01, penalties=(1.0, 100.0), steps_per_penalty=60)
    assert len(wp) == len(rhos) and rhos[0] == 0.0
    after = float(ls.hidden_tcv(arch, wp[-1], x, y, reduce="max"))
    assert after < 1e-2 * before
    with pytest.raises(ValueError, match="increasing"):
        ls.collapse_path(arch, start, x, y, 0.01, penalties=(10.0, 1.0))


def test_hidden_tcv_zero_when_inputs_collapsed():
    x, y = _data(spread=0.0)
    arch, p = _net()
    assert float(ls.hidden_tcv(arch, p, x, y, relative=False)) < 1e-25
    assert float(ls.hidden_tcv(arch, p, x, y, reduce="max")) < 1e-25


# ---------------------------------------------------------------------------------------------
# D: the reduced problem


def test_reduced_problem_is_exact_for_collapsed_data():
    K = 3
    x, y = _data(K=K, spread=0.0, per_class=4)
    arch = nrc.Architecture((6, 8, 8, K), "relu", bias=False)
    M, counts = nrc.class_means(x, y, K)
    sols = ls.solve_reduced_problem(arch, M, counts / counts.sum(), 0.05, restarts=2, steps=200)
    assert len(sols) == 2 and sols[0]["value"] <= sols[1]["value"]
    full = float(ls.regularized_objective(arch, sols[0]["params"], x, y, 0.05))
    assert full == pytest.approx(sols[0]["value"], rel=1e-10)
    assert sols[0]["grad_norm"] < 1e-5


def test_reduced_problem_validates():
    arch = nrc.Architecture((4, 5, 2), "relu")
    with pytest.raises(ValueError, match="shape"):
        ls.solve_reduced_problem(arch, torch.zeros(3, 4), [0.5, 0.5], 0.1)
    with pytest.raises(ValueError, match="weights"):
        ls.solve_reduced_problem(arch, torch.zeros(2, 4), [0.7, 0.7], 0.1)


def test_compare_spectra():
    out = ls.compare_spectra([1.0, 0.5, 1e-6], [1.1, 0.5, 1e-7], tol=1e-2)
    assert out["rank_forecast"] == 2 and out["rank_trained"] == 2 and out["rank_match"]
    assert out["rel_error"] == pytest.approx(0.1)
    out = ls.compare_spectra([1.0, 0.5, 0.4], [1.0, 0.5, 1e-5])
    assert not out["rank_match"] and out["rank_trained"] == 2


def test_member_params_and_feedforward_only():
    arch = nrc.Architecture((4, 6, 6, 3), "relu", residual=True)
    with pytest.raises(ValueError, match="feed-forward"):
        ls.solve_reduced_problem(arch, torch.zeros(3, 4), [1 / 3] * 3, 0.1)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_stacked_path_evaluation_gives_the_one_network_values_bitwise(loss):
    """Paths, path values and waypoint measures are computed in stacked passes (issue 20); every
    value must be what one call per network gives, to the last bit, or the monotone check could
    cut a step differently."""
    from nrc_reference import monotone_lbfgs_one_point_at_a_time

    x, y = _data(K=3, dim=8, per_class=6, spread=0.8, seed=1)
    arch, p = _net(widths=(8, 12, 12, 3), scale=1.5)
    lam, rho = 0.01, 10.0
    wp = ls.descent_path(arch, p, x, y, lam, loss=loss, steps=25, check_points=5)

    def objective(q):
        return ls.regularized_objective(arch, q, x, y, lam, loss=loss)

    ref = [p] + monotone_lbfgs_one_point_at_a_time(p, objective, 25, check_points=5)
    assert len(wp) == len(ref) > 5
    assert all(torch.equal(a[k], b[k]) for a, b in zip(wp, ref) for k in a)
    coll, rhos = ls.collapse_path(arch, wp[-1], x, y, lam, penalties=(rho,), steps_per_penalty=20, loss=loss,
                                  check_points=5)

    def penalised(q):
        return objective(q) + rho * ls.hidden_tcv(arch, q, x, y, relative=True)

    ref = [wp[-1]] + monotone_lbfgs_one_point_at_a_time(wp[-1], penalised, 20, check_points=5)
    assert len(coll) == len(ref) > 3
    assert all(torch.equal(a[k], b[k]) for a, b in zip(coll, ref) for k in a)
    values = ls.path_values(arch, coll, x, y, lam, loss=loss, substeps=3)["value"]
    assert values[0] == float(objective(coll[0])) and values[4] == float(objective(coll[1]))
    mid = {k: (1 - 0.5) * coll[0][k] + 0.5 * coll[1][k] for k in coll[0]}
    assert values[2] == float(objective(mid))
    at = ls.waypoint_measures(arch, coll, x, y, lam, loss=loss)
    np.testing.assert_array_equal(at["L_lambda"], [float(objective(q)) for q in coll])
    np.testing.assert_array_equal(at["tcv_ratio"],
                                  [float(ls.hidden_tcv(arch, q, x, y, relative=True, reduce="max")) for q in coll])
