"""Checks on the smoke records of the landscape notebooks (E4b, E4, E5; claims 11-13).

Each test reads the JSON record written by one notebook's smoke run (fixture ``record``,
tests/conftest.py) and asserts on its numbers: the statements that are theorems must hold
exactly (up to rounding); the measured claims must at least produce sane numbers.
"""
from __future__ import annotations

import math

import pytest


def _checks(record, claim):
    checks = record["checks"]
    assert checks, "the notebook recorded no checks"
    assert all(c["claim"] == claim for c in checks)
    return checks


# ------------------------------------------------------------------------------------------------
# E4b: DNC1 optimality (claim 11)


@pytest.mark.notebook("e4b_dnc1_optimality")
def test_e4b_elementary_fact(record):
    v = record["values"]
    assert v["n_fact_instances"] > 0
    assert v["fact_max_ratio"] <= 1 + 1e-9  # collapsed never costs more than spread
    assert v["fact_min_extra"] >= 1 - 1e-9
    assert v["fact_identity_err"] < 1e-8  # {W Z = T} == {W M = T_c} ∩ {W R = 0}


@pytest.mark.notebook("e4b_dnc1_optimality")
def test_e4b_trained_networks(record):
    v = record["values"]
    assert v["n_nets"] > 0 and v["n_interpolating"] > 0
    assert v["min_train_acc"] == pytest.approx(1.0)
    assert v["n_layer_cases"] > 0 and v["n_chain_cases"] > 0
    assert v["max_layerwise_ratio"] <= 1 + 1e-9  # a theorem: feasible sets nest
    assert 0 < v["min_chain_ratio"] <= v["mean_chain_ratio"] <= v["max_chain_ratio"]
    assert math.isfinite(v["max_chain_ratio"])
    assert v["max_stationary_gap"] < 1e-2  # min-norm weights with own targets ~ trained weights
    assert v["n_ridge_members"] > 0 and v["ridge_max_drop"] <= 1e-9  # ridge value monotone in spread
    assert 0 < v["ridge_mean_v0"] <= 1


@pytest.mark.notebook("e4b_dnc1_optimality")
def test_e4b_checks(record):
    checks = _checks(record, 11)
    assert len(checks) == 4
    # checks 1, 2 and 4 are theorems and must pass; check 3 (the chain) is measured
    assert checks[0]["passed"] and checks[1]["passed"] and checks[3]["passed"]


# ------------------------------------------------------------------------------------------------
# E4: no loss barrier (claim 12)


@pytest.mark.notebook("e4_no_loss_barrier")
def test_e4_paths(record):
    v = record["values"]
    assert v["n_cases"] > 0 and v["min_start_train_acc"] == pytest.approx(1.0)
    assert v["input_dim"] >= v["n_samples"]  # the design's condition for exact first-layer collapse
    assert v["max_barrier_rel"] <= v["tolerance"]  # never above the interpolating start
    assert v["max_tcv_ratio_end"] <= 1e-6  # endpoints are DNC1
    assert v["max_rise_descent_rel"] <= 1e-3  # the monotone safeguard of the descent part works
    assert 0 < v["mean_loss_drop"] < 1
    assert v["max_line_barrier_rel"] <= v["tolerance"]
    for key in ("max_price_of_collapse", "min_price_of_collapse", "max_rise_rel", "max_line_local_barrier"):
        assert math.isfinite(v[key])
    assert v["min_price_of_collapse"] <= v["max_price_of_collapse"]


@pytest.mark.notebook("e4_no_loss_barrier")
def test_e4_checks(record):
    checks = _checks(record, 12)
    assert len(checks) == 5
    assert checks[0]["passed"] and checks[1]["passed"]  # no barrier; endpoints DNC1
    # the fourth and fifth checks report the price of exact collapse; they must be consistent with it
    v = record["values"]
    assert checks[4]["passed"] == (v["max_price_of_collapse"] <= v["tolerance"])


# ------------------------------------------------------------------------------------------------
# E5: singular-value forecast (claim 13)


@pytest.mark.notebook("e5_singular_value_forecast")
def test_e5_forecast(record):
    v = record["values"]
    assert v["n_networks"] > 0 and v["n_cases"] > 0
    assert v["max_forecast_grad"] < 1e-4  # the global forecasts are stationary points
    assert v["min_train_acc"] > 0.5
    assert v["n_minima_max"] >= 1
    assert 0 <= v["rank_match_global"] <= 1
    assert v["rank_match_nearest"] == pytest.approx(1.0)  # the trained structure is among the forecasts
    assert v["max_rel_error_nearest"] < 0.5
    assert v["max_rel_error_nearest"] <= v["max_rel_error_global"] + 1e-12 or v["rank_match_global"] < 1


@pytest.mark.notebook("e5_singular_value_forecast")
def test_e5_checks(record):
    checks = _checks(record, 13)
    assert len(checks) == 3
    v = record["values"]
    assert checks[0]["passed"] == (v["rank_match_global"] == 1.0)
