"""Records of the Theorem A notebooks (derivation, T1-T4) from the smoke run.

Every recorded check is re-derived from the recorded numbers by its stated criterion
(tests/nb_verdicts.py) and the recorded verdict must be that one, whichever way it comes out:
a measured (empirical) claim may come out "differs" and these tests stay green. Only what holds
by construction must hold: Theorem A and its lemmas with the measured gradient term, identities,
exact algebraic steps. Smoke settings are never tuned to make a claim pass.
"""
from __future__ import annotations

import pytest

from nb_verdicts import _parameters, assert_verdicts

EPS = 1e-12


@pytest.mark.notebook("derivation_theorem_a")
def test_derivation_verdicts(record):
    assert_verdicts(record)


@pytest.mark.notebook("derivation_theorem_a")
def test_derivation_chain_of_the_proof(record):
    # by construction: d_K(W) <= ||W - P|| (rank P <= K) <= bound <= bound_cs <= bound_a2
    v = record["values"]
    K = _parameters(record["notebook"], record["profile"])["num_classes"]
    assert 1 <= v["rank_P"] <= v["max_rank_P"] <= K
    assert v["dK"] <= v["dist_P"] * (1 + EPS)
    assert v["dist_P"] <= v["bound"] * (1 + EPS)
    assert v["bound"] <= v["bound_cs"] * (1 + EPS) and v["bound_cs"] <= v["bound_a2"] * (1 + EPS)
    assert v["slack"] == pytest.approx(v["dK"] / v["bound"], rel=1e-12)


@pytest.mark.notebook("t1_stationarity")
def test_t1_verdicts(record):
    assert record["values"]["n_checked"] > 0
    assert_verdicts(record)


@pytest.mark.notebook("t2_rank_tcv_bound")
def test_t2_verdicts(record):
    assert_verdicts(record)


@pytest.mark.notebook("t2_rank_tcv_bound")
def test_t2_bound_forms_ordered(record):
    # by construction: bound_cs >= bound >= d_K, so d_K/bound_cs <= d_K/bound <= 1
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_nontrivial"] > 0
    assert 0 <= v["max_ratio_cs"] <= v["max_ratio"] * (1 + EPS) and v["max_ratio"] <= 1 + 1e-9


@pytest.mark.notebook("t3_lemma_a2_constant")
def test_t3_verdicts(record):
    assert_verdicts(record)


@pytest.mark.notebook("t3_lemma_a2_constant")
def test_t3_exact_steps(record):
    v = record["values"]
    assert v["n_cases"] > 0
    assert v["min_a2_over_exact"] >= 1 - 1e-9  # bound <= bound_cs <= bound_a2 at every site
    assert v["max_ratio_a2"] <= 1 + 1e-9
    assert v["mse_step2_gap"] <= 1e-10  # MSE: sum_i ||delta_L,i||^2 = 2 N L_0 exactly
    assert v["recompute_err"] <= 1e-10


@pytest.mark.notebook("t4_any_partition")
def test_t4_verdicts(record):
    assert_verdicts(record)


@pytest.mark.notebook("t4_any_partition")
def test_t4_bound_for_every_partition(record):
    # Theorem A holds for any partition into K groups (by construction)
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_nontrivial"] > 0
    for p in ("labels", "kmeans", "random"):
        assert v[f"n_violations_{p}"] == 0
        assert 0 <= v[f"max_ratio_{p}"] <= 1 + 1e-9
    assert v["label_check_err"] <= 1e-10
