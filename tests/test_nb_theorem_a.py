"""Records of the Theorem A notebooks (derivation, T1-T4) from the smoke run.

Every recorded check is re-evaluated from the record's structured inputs by the one evaluator
(``nrc_companion.verdicts.evaluate``, through ``assert_verdicts``), whichever way it comes out: an empirical
check may come out "differs" or "inconclusive" and these tests stay green. Only what holds by
construction must hold: Theorem A and its lemmas with the measured gradient term, identities,
exact algebraic steps. Smoke settings are never tuned to make a claim pass.
"""
from __future__ import annotations

import pytest

from nb_verdicts import assert_verdicts

EPS = 1e-12
SLACK = 1e-9  # the registry's rounding slack of construction checks


def _ids(record):
    return {c["id"] for c in record["checks"]}


@pytest.mark.notebook("derivation_theorem_a")
def test_derivation_verdicts(record):
    assert _ids(record) == {"deriv.identity", "deriv.chain", "deriv.agree"}
    assert_verdicts(record)


@pytest.mark.notebook("derivation_theorem_a")
def test_derivation_chain_of_the_proof(record):
    # by construction: d_K(W) <= ||W - P|| (rank P <= K) <= bound <= bound_cs <= bound_a2
    v = record["values"]
    assert 1 <= v["rank_P"] <= v["max_rank_P"] <= v["num_classes"]
    assert v["dK"] <= v["dist_P"] * (1 + EPS)
    assert v["dist_P"] <= v["bound"] * (1 + EPS)
    assert v["bound"] <= v["bound_cs"] * (1 + EPS) and v["bound_cs"] <= v["bound_a2"] * (1 + EPS)
    assert v["slack"] == pytest.approx(v["dK"] / v["bound"], rel=1e-12)
    links = record["inputs"]["deriv.chain"]["values"]
    assert len(links) == v["n_links"] and max(links) == pytest.approx(v["max_link_ratio"]) and max(links) <= 1 + SLACK
    assert len(record["inputs"]["deriv.identity"]["values"]) == v["n_identities"]


@pytest.mark.notebook("t1_stationarity")
def test_t1_verdicts(record):
    v = record["values"]
    assert v["n_checked"] > 0 and v["n_members_checked"] > 0
    rows = record["inputs"]["t1.stationarity"]["rows"]
    assert {r["member"] for r in rows} and len({r["member"] for r in rows}) == v["n_members_checked"]
    assert max(r["budget"] for r in rows) == v["final_budget"]
    assert max(r["residual"] for r in rows if r["budget"] == v["final_budget"]) == pytest.approx(v["max_residual_checked"])
    assert _ids(record) == {"t1.stationarity", "t1.sgd_vs_refined"}
    assert_verdicts(record)


@pytest.mark.notebook("t2_rank_tcv_bound")
def test_t2_verdicts(record):
    assert _ids(record) == {"t2.bound", "t2.bound_cs", "t2.scale_free"}
    assert_verdicts(record)


@pytest.mark.notebook("t2_rank_tcv_bound")
def test_t2_bound_forms_ordered(record):
    # by construction: bound_cs >= bound >= d_K, so d_K/bound_cs <= d_K/bound <= 1
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_nontrivial"] > 0
    assert 0 <= v["max_ratio_cs"] <= v["max_ratio"] * (1 + EPS) and v["max_ratio"] <= 1 + SLACK
    assert v["n_informative"] + v["n_vacuous"] == v["n_cases"]
    assert v["n_vacuous_grad"] <= v["n_vacuous"] and v["n_vacuous_tcv"] <= v["n_vacuous"]
    rows = record["inputs"]["t2.bound"]["rows"]
    assert len(rows) == v["n_cases"]
    assert sum(r["bound"] < r["norm"] for r in rows) == v["n_informative"]
    trend = record["inputs"]["t2.scale_free"]
    assert trend["scored"] and "W1" not in trend["scored"]
    assert all(r["x"] > 0 and r["y"] >= 0 for r in trend["rows"])


@pytest.mark.notebook("t3_lemma_a2_constant")
def test_t3_verdicts(record):
    assert _ids(record) == {"t3.a2", "t3.order", "t3.steps"}
    assert_verdicts(record)


@pytest.mark.notebook("t3_lemma_a2_constant")
def test_t3_exact_steps(record):
    v = record["values"]
    assert v["n_cases"] > 0
    assert v["min_a2_over_exact"] >= 1 - SLACK  # bound <= bound_cs <= bound_a2 at every site
    assert v["max_ratio_a2"] <= 1 + SLACK
    assert v["mse_step2_gap"] <= 1e-10  # MSE: sum_i ||delta_L,i||^2 = 2 N L_0 exactly
    assert v["recompute_err"] <= 1e-10
    assert len(record["inputs"]["t3.a2"]["rows"]) == v["n_cases"]
    assert len(record["inputs"]["t3.order"]["values"]) == 2 * v["n_cases"]


@pytest.mark.notebook("t4_any_partition")
def test_t4_verdicts(record):
    assert _ids(record) == {"t4.kmeans", "t4.random", "t4.smaller"}
    assert_verdicts(record)


@pytest.mark.notebook("t4_any_partition")
def test_t4_bound_for_every_partition(record):
    # Theorem A holds for any partition into K groups (by construction)
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_nontrivial"] > 0
    for p in ("labels", "kmeans", "random"):
        assert 0 <= v[f"max_ratio_{p}"] <= 1 + SLACK
    for p in ("kmeans", "random"):
        assert len(record["inputs"][f"t4.{p}"]["rows"]) == v["n_cases"]
    assert 0 <= v["frac_kmeans_not_larger"] <= 1
