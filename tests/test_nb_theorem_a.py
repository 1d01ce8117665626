"""Numbers recorded by the Theorem A notebooks (derivation, T1-T4) in the smoke run.

Theorem A and its lemmas hold at *any* parameter (the gradient term is part of the bound), so their
inequality checks must pass at every scale; the stationarity check (T1) is set up in the smoke
profile with a smooth activation and enough L-BFGS iterations to pass.
"""
from __future__ import annotations

import math

import pytest


def _all_passed(record):
    failed = [c for c in record["checks"] if not c["passed"]]
    assert not failed, f"failed checks: {failed}"


# ---------------------------------------------------------------------------------------------
# derivation_theorem_a

@pytest.mark.notebook("derivation_theorem_a")
def test_derivation_identities_hold_to_rounding(record):
    v = record["values"]
    assert v["max_identity_err"] <= 1e-10
    assert v["max_diff_vs_nrc"] <= 1e-10


@pytest.mark.notebook("derivation_theorem_a")
def test_derivation_chain_and_rank(record):
    v = record["values"]
    assert 1 <= v["rank_P"] <= v["max_rank_P"]
    assert v["all_chains_hold"] is True
    assert 0 <= v["dK"] <= v["dist_P"] * (1 + 1e-12)
    assert v["dist_P"] <= v["bound"] * (1 + 1e-12)
    assert v["bound"] <= v["bound_cs"] * (1 + 1e-12) and v["bound_cs"] <= v["bound_a2"] * (1 + 1e-12)
    assert 0 <= v["slack"] <= 1


@pytest.mark.notebook("derivation_theorem_a")
def test_derivation_point_is_near_stationary(record):
    # smooth activation + L-BFGS in float64: the gradient term is negligible
    assert record["values"]["stationarity"] < 1e-4


@pytest.mark.notebook("derivation_theorem_a")
def test_derivation_checks_pass(record):
    assert len(record["checks"]) == 3 and all(c["claim"] == 4 for c in record["checks"])
    _all_passed(record)


# ---------------------------------------------------------------------------------------------
# t1_stationarity

@pytest.mark.notebook("t1_stationarity")
def test_t1_smooth_activation_reaches_stationarity(record):
    v = record["values"]
    assert v["n_checked"] > 0
    assert v["max_residual_checked"] <= v["tolerance"]
    assert v["median_residual_checked"] <= v["max_residual_checked"]


@pytest.mark.notebook("t1_stationarity")
def test_t1_refinement_improves_on_sgd(record):
    v = record["values"]
    assert v["median_residual_refined"] < v["median_residual_sgd"]
    assert v["improvement_factor"] >= 10


@pytest.mark.notebook("t1_stationarity")
def test_t1_relu_stalls_on_kinks(record):
    # the smoke profile runs ReLU next to tanh: ReLU stays far from the tolerance, with many
    # pre-activations on the kink, while tanh has essentially none
    v = record["values"]
    assert not math.isnan(v["kinked_max_residual"])
    assert v["kinked_max_residual"] > v["max_residual_checked"]
    assert v["kinked_kink_fraction"] > v["smooth_kink_fraction"]


@pytest.mark.notebook("t1_stationarity")
def test_t1_checks_pass(record):
    assert {c["claim"] for c in record["checks"]} == {1}
    _all_passed(record)


# ---------------------------------------------------------------------------------------------
# t2_rank_tcv_bound

@pytest.mark.notebook("t2_rank_tcv_bound")
def test_t2_bound_never_violated(record):
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_nontrivial"] > 0
    assert v["n_violations"] == 0 and v["n_violations_cs"] == 0 and v["n_cs_below_exact"] == 0
    assert 0 <= v["max_ratio_cs"] <= v["max_ratio"] <= 1


@pytest.mark.notebook("t2_rank_tcv_bound")
def test_t2_covers_both_losses_and_the_grid(record):
    v = record["values"]
    assert v["n_losses"] == 2 and v["n_lambdas"] >= 2 and v["n_seeds"] >= 1
    assert 0 <= v["median_ratio"] <= v["max_ratio"]


@pytest.mark.notebook("t2_rank_tcv_bound")
def test_t2_checks_pass(record):
    assert {c["claim"] for c in record["checks"]} == {4, 14}
    _all_passed(record)


# ---------------------------------------------------------------------------------------------
# t3_lemma_a2_constant

@pytest.mark.notebook("t3_lemma_a2_constant")
def test_t3_lemma_a2_holds_and_is_looser(record):
    v = record["values"]
    assert v["n_cases"] > 0
    assert v["n_violations_a2"] == 0 and v["max_ratio_a2"] <= 1
    assert v["min_cs_over_exact"] >= 1 - 1e-9
    assert v["min_a2_over_cs"] >= 1 - 1e-9
    assert v["min_a2_over_exact"] >= 1 - 1e-9 and v["median_a2_over_exact"] >= 1


@pytest.mark.notebook("t3_lemma_a2_constant")
def test_t3_proof_steps(record):
    v = record["values"]
    assert v["max_step1"] <= 1 + 1e-9
    assert v["max_step2"] <= 1 + 1e-9
    assert v["mse_step2_gap"] <= 1e-10  # MSE: sum_i ||delta_L,i||^2 = 2 N L_0 exactly
    assert v["recompute_err"] <= 1e-10


@pytest.mark.notebook("t3_lemma_a2_constant")
def test_t3_checks_pass(record):
    assert {c["claim"] for c in record["checks"]} == {4}
    _all_passed(record)


# ---------------------------------------------------------------------------------------------
# t4_any_partition

@pytest.mark.notebook("t4_any_partition")
def test_t4_bound_holds_for_every_partition(record):
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_nontrivial"] > 0
    for p in ("labels", "kmeans", "random"):
        assert v[f"n_violations_{p}"] == 0
        assert 0 <= v[f"max_ratio_{p}"] <= 1


@pytest.mark.notebook("t4_any_partition")
def test_t4_kmeans_is_often_smaller(record):
    v = record["values"]
    assert v["label_check_err"] <= 1e-10
    # overlapping classes in the smoke profile: k-means clusters beat the labels on TCV_2 ...
    assert v["median_tcv_kmeans_over_labels"] <= 1 + 1e-9
    # ... and the random partition does not
    assert v["median_tcv_random_over_labels"] > 1
    assert v["frac_kmeans_not_larger"] >= 0.5


@pytest.mark.notebook("t4_any_partition")
def test_t4_checks_pass(record):
    assert {c["claim"] for c in record["checks"]} == {6}
    _all_passed(record)
