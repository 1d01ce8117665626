"""Checks on the smoke records of the lemma notebooks (T5-T9): the numbers, not only that they ran.

Inequalities that are theorems (they hold at any parameter) must hold exactly; the trend and
"approximately zero at stationarity" checks must pass at smoke scale, where the settings were chosen
so that the claims show.
"""
import math

import pytest


def _checks_by_claim(record):
    out = {}
    for c in record["checks"]:
        out.setdefault(c["claim"], []).append(c)
    return out


@pytest.mark.notebook("t5_corollary_a1_low_rank")
def test_t5_corollary_a1(record):
    v = record["values"]
    assert v["n_members"] > 0 and v["b_cases"] > 0
    # theorems: hold at any parameter
    assert v["a_max_chain_ratio"] <= 1 + 1e-9  # s_K(W_L) <= ||1^T W_L||/sqrt K <= ||G_L||/lambda (CE)
    assert v["b_max_km1_ratio"] <= 1 + 1e-9  # d_{K-1} <= bound_km1 (unregularised biases)
    assert v["c_max_bound_ratio_zero"] <= 1 + 1e-9  # d_K <= ||G||/lambda when TCV = 0
    # exact DNC1 really is exact at spread 0, and the spread-0 weights are far closer to rank K
    assert v["c_max_tcv2_zero"] < 1e-20
    assert v["c_max_dK_rel_zero"] < 1e-4 < v["c_median_dK_rel_spread"]
    # CE kills the K-th singular value of the last layer; MSE does not at small lambda
    assert v["a_max_sK_rel"] < 1e-4
    assert v["a_mse_sK_rel_small_lam"] > 1e-2
    assert set(_checks_by_claim(record)) == {4, 5}
    assert all(c["passed"] for c in record["checks"])


@pytest.mark.notebook("t6_tcv_propagation")
def test_t6_tcv_propagation(record):
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_activations"] >= 3
    assert v["max_a3_ratio"] <= 1 + 1e-9
    assert v["max_chain_ratio"] <= 1 + 1e-9
    for stage in ("init", "early", "stationary"):
        assert v[f"max_a3_ratio_{stage}"] <= 1 + 1e-9
    # the early-SGD points really are far from stationary, the refined ones much closer
    assert v["median_stationarity_early"] > 10 * v["median_stationarity_stationary"]
    assert all(c["claim"] == 7 and c["passed"] for c in record["checks"])


@pytest.mark.notebook("t7_balanced_norms")
def test_t7_balanced_norms(record):
    v = record["values"]
    assert v["n_members"] > 0
    # exact forms (any parameter)
    assert v["max_pair_exact_ratio"] <= 1 + 1e-9
    assert v["max_identity_exact_ratio"] <= 1 + 1e-9
    # near stationarity: balanced norms and the output identity
    assert v["max_rel_spread"] <= 1e-3
    assert v["max_identity_rel_err"] <= 1e-3
    # descent run: L_lambda non-increasing and the norm budget respected
    assert v["gd_max_budget_ratio"] <= 1
    assert v["gd_max_increase"] <= 1e-6
    assert v["gd_final_L_rel"] < 1
    assert set(_checks_by_claim(record)) == {8, 9}
    assert all(c["passed"] for c in record["checks"])


@pytest.mark.notebook("t8_rank_vs_weight_decay")
def test_t8_rank_vs_weight_decay(record):
    v = record["values"]
    assert v["n_hidden_sites"] >= 1 and v["n_cases"] >= 3 * v["n_hidden_sites"]
    assert v["max_spearman_dK_rel"] < 0
    assert v["max_spearman_rank"] <= 0
    assert v["dK_rel_ratio_small_to_large"] > 10
    assert all(c["claim"] == 2 and c["passed"] for c in record["checks"])


@pytest.mark.notebook("t9_rank_vs_tcv")
def test_t9_rank_vs_tcv(record):
    v = record["values"]
    assert v["n_hidden_sites"] >= 1 and v["n_cases"] >= 3 * v["n_hidden_sites"]
    assert v["min_spearman_tcv"] > 0
    assert math.isfinite(v["min_slope"]) and v["min_slope"] > 0
    assert set(_checks_by_claim(record)) == {3, 15}
    assert all(c["passed"] for c in record["checks"])
