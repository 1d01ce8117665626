"""Checks on the recorded numbers of the experiment notebooks E1, E2, E3, E6, E7 (smoke profile).

The smoke settings are chosen so that each notebook's claim shows; the assertions below are on
what the theory guarantees (Theorem A holds at any parameter), on sizes, and on the smoke-scale
trends the notebooks were designed to exhibit.
"""
from __future__ import annotations

import math

import pytest


def _checks(record, claim=None):
    return [c for c in record["checks"] if claim is None or c["claim"] == claim]


# ----------------------------------------------------------------------------- E1

@pytest.mark.notebook("e1_rank_vs_weight_decay")
def test_e1_sizes(record):
    v = record["values"]
    assert v["n_members"] >= 3 and v["n_diverged"] == 0
    assert v["n_lambdas"] >= 3
    assert v["n_bound_cases"] > 0


@pytest.mark.notebook("e1_rank_vs_weight_decay")
def test_e1_bound_holds_everywhere(record):
    v = record["values"]
    assert 0 <= v["max_bound_ratio"] <= 1 + 1e-9
    assert all(c["passed"] for c in _checks(record, 4))


@pytest.mark.notebook("e1_rank_vs_weight_decay")
def test_e1_distance_to_rank_k_falls_with_lambda(record):
    v = record["values"]
    assert v["max_spearman_dk_rel"] < 0  # every hidden layer
    assert v["dk_rel_largest_lambda"] < v["dk_rel_smallest_lambda"]
    assert _checks(record, 2)[0]["passed"]


@pytest.mark.notebook("e1_rank_vs_weight_decay")
def test_e1_dnc1_in_deeper_layers(record):
    v = record["values"]
    assert v["n_nc1_below_input"] == v["n_members"]
    assert v["max_nc1_last"] < v["nc1_input"]
    assert {c["claim"] for c in record["checks"]} >= {2, 4, 10, 14}


# ----------------------------------------------------------------------------- E2

@pytest.mark.notebook("e2_proportional_to_tcv")
def test_e2_sizes_and_bound(record):
    v = record["values"]
    assert v["n_members"] > 0 and v["n_diverged"] == 0
    assert v["n_k"] >= 2 and v["n_spreads"] >= 3
    assert 0 <= v["max_bound_ratio"] <= 1 + 1e-9
    assert all(c["passed"] for c in _checks(record, 14))


@pytest.mark.notebook("e2_proportional_to_tcv")
def test_e2_distance_grows_with_tcv(record):
    v = record["values"]
    assert v["min_spearman"] > 0
    assert v["min_pooled_slope"] > 0
    assert all(c["passed"] for c in _checks(record, 3) + _checks(record, 15))


# ----------------------------------------------------------------------------- E3

@pytest.mark.notebook("e3_residual_networks")
def test_e3_bound_holds_for_every_site(record):
    v = record["values"]
    assert v["n_blocks"] >= 1 and v["n_diverged"] == 0
    assert v["n_bound_cases"] > 0
    assert 0 <= v["max_bound_ratio"] <= 1 + 1e-9
    # Lemma A2 has no constant for residual networks: nrc leaves the column NaN
    assert v["n_bound_a2_nan"] == v["n_site_rows"]


@pytest.mark.notebook("e3_residual_networks")
def test_e3_low_rank_of_both_block_matrices(record):
    v = record["values"]
    assert v["max_spearman_dk_rel"] < 0
    assert v["dk_rel_w_largest_lambda"] < v["dk_rel_w_smallest_lambda"]
    assert v["dk_rel_v_largest_lambda"] < v["dk_rel_v_smallest_lambda"]
    assert v["n_nc1_below_input"] == v["n_members"]


# ----------------------------------------------------------------------------- E6

@pytest.mark.notebook("e6_low_rank_compression")
def test_e6_truncation_numbers(record):
    v = record["values"]
    assert v["n_members"] > 0 and v["dense_params"] > 0
    assert 0 < v["params_rel_rank_k"] < 1
    assert v["max_drop_full"] == 0  # no truncation, no change
    for key in ("test_acc_full_smallest_lambda", "test_acc_full_largest_lambda"):
        assert 0 < v[key] <= 1
    assert all(math.isfinite(v[k]) for k in ("drop_rank_k_smallest_lambda", "drop_rank_k_largest_lambda"))


@pytest.mark.notebook("e6_low_rank_compression")
def test_e6_rank_k_truncation_cheaper_at_large_lambda(record):
    v = record["values"]
    assert v["drop_rank_k_largest_lambda"] < v["drop_rank_k_smallest_lambda"]
    assert v["drop_rank_k_largest_lambda"] <= v["acc_tol"]


# ----------------------------------------------------------------------------- E7

@pytest.mark.notebook("e7_any_model")
def test_e7_bound_on_any_model(record):
    v = record["values"]
    assert v["n_layers"] >= 2
    assert 0 <= v["user_max_bound_ratio"] <= 1 + 1e-9
    assert 0 <= v["nrc_max_bound_ratio"] <= 1 + 1e-9
    assert all(c["passed"] for c in record["checks"])


@pytest.mark.notebook("e7_any_model")
def test_e7_analyze_model_matches_analyze(record):
    v = record["values"]
    assert v["n_compared"] > 0
    assert v["max_rel_diff_analyze"] <= 1e-9
