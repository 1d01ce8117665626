"""The registry's evaluator on hand-made records: verdicts flip with the numbers, NaN follows the
declared convention, and a check that cannot be evaluated is an error, never a silent pass."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nrc_companion import verdicts as V

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = [0.0, 1e-4, 1e-3, 1e-2]


def trend_rows(slopes_by_seed, sites=("W1", "W2", "W3"), const_site=None):
    """d_K/||W|| = exp(slope * lambda * 100) per seed; ``const_site`` gets a constant value."""
    return [{"site": s, "seed": k, "x": lam, "y": 1.0 if s == const_site else math.exp(b * lam * 100)}
            for s in sites for k, b in enumerate(slopes_by_seed) for lam in LAMBDAS]


# -- the registry itself -----------------------------------------------------------------------

def test_every_notebook_declares_checks_and_every_declared_notebook_exists():
    notebooks = {p.stem for p in (REPO / "notebooks").glob("*.ipynb")}
    declared = {c.notebook for c in V.REGISTRY}
    assert declared <= notebooks | {"e8_theorem_a_bites"}, declared - notebooks
    assert notebooks <= declared, f"notebooks with no declared check: {notebooks - declared}"


def test_every_check_names_claim_kind_statistic_and_reason():
    claims = {c["claim"] for c in yaml.safe_load((REPO / "book" / "claims.yaml").read_text())["claims"]}
    for c in V.REGISTRY:
        assert c.claim in claims and c.kind in V.KINDS, c.id
        assert c.reason.strip() and c.statement.strip() and c.scope.strip() and c.threshold.strip(), c.id
        assert c.id.split(".")[0] in c.notebook.replace("derivation_theorem_a", "deriv"), c.id


def test_changed_criteria_point_at_declared_checks_and_recorded_old_checks():
    base = json.loads((REPO / "book" / "criteria_baseline.json").read_text())
    ids = {c.id for c in V.REGISTRY}
    for ch in V.CHANGES:
        assert set(ch["new"]) <= ids, ch["new"]
        for nb, i in ch["old"]:
            assert i < len(base["checks"][nb]), (nb, i)
        assert ch["old_rule"] and ch["new_rule"] and ch["reason"]


# -- conventions -------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=3, max_size=20))
def test_spearman0_equals_scipy_when_defined_and_zero_for_a_constant(pairs):
    x, y = map(np.array, zip(*pairs))
    ours = V.spearman0(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert ours == 0.0
    else:
        assert ours == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)


def test_bootstrap_interval_of_three_seeds_is_their_range():
    m, lo, hi = V.bootstrap_mean([-0.9, -0.5, -0.7])
    assert (m, lo, hi) == (pytest.approx(-0.7), -0.9, -0.5)


def test_nan_input_is_an_error_never_a_verdict():
    rows = trend_rows([-1, -1, -1])
    rows[3]["y"] = float("nan")
    with pytest.raises(V.CheckError, match="non-finite"):
        V.evaluate_one("e1.claim2", {"rows": rows, "scored": ["W2", "W3"]})
    with pytest.raises(V.CheckError, match="non-finite"):
        V.evaluate_one("t2.bound", {"rows": [{"d": float("nan"), "bound": 1.0, "norm": 1.0}]})


def test_a_constant_quantity_is_no_trend_and_decides_nothing():
    out = V.evaluate_one("e1.claim2", {"rows": trend_rows([-1, -1, -1], const_site="W2"), "scored": ["W2", "W3"]})
    assert out["verdict"] == "inconclusive" and "W2: 0.00" in out["detail"]


# -- trends: flip with the numbers, W1 reported not scored ---------------------------------------

def test_trend_passes_differs_and_is_inconclusive_as_the_seeds_say():
    inp = lambda s: {"rows": trend_rows(s), "scored": ["W2", "W3"]}  # noqa: E731
    assert V.evaluate_one("e1.claim2", inp([-1, -2, -1]))["verdict"] == "pass"
    assert V.evaluate_one("e1.claim2", inp([1, 2, 1]))["verdict"] == "differs"
    assert V.evaluate_one("e1.claim2", inp([-1, 2, -1]))["verdict"] == "inconclusive"  # sign not stable
    assert V.evaluate_one("e1.claim2", inp([-1]))["verdict"] == "inconclusive"  # one seed: no spread


def test_unscored_input_layer_does_not_decide_but_is_reported():
    rows = [dict(r, y=1 / r["y"]) if r["site"] == "W1" else r for r in trend_rows([-1, -1, -1])]
    out = V.evaluate_one("e1.claim2", {"rows": rows, "scored": ["W2", "W3"]})
    assert out["verdict"] == "pass" and "reported, not scored: W1: 1.00" in out["detail"]
    # scored, the same W1 makes the check differ
    assert V.evaluate_one("e1.claim2", {"rows": rows})["verdict"] == "differs"


def test_t8_and_e1_give_one_verdict_on_the_same_rows():
    inp = {"rows": trend_rows([-1, -0.5, 2]), "scored": ["W2", "W3"]}
    assert V.evaluate_one("t8.claim2", inp)["verdict"] == V.evaluate_one("e1.claim2", inp)["verdict"]


# -- slopes, differences, collapse, convergence --------------------------------------------------

def slope_rows(exponents):
    return [{"site": "W2", "seed": k, "x": t, "y": 3 * t ** e} for k, e in enumerate(exponents) for t in (0.1, 0.3, 1, 3)]


def test_slope_in_range_reads_roughly_proportional():
    assert V.evaluate_one("t9.claim15", {"rows": slope_rows([1.0, 1.2, 0.9])})["verdict"] == "pass"
    assert V.evaluate_one("t9.claim15", {"rows": slope_rows([3.0, 3.1, 2.9])})["verdict"] == "differs"
    assert V.evaluate_one("t9.claim15", {"rows": slope_rows([1.5, 2.5, 1.8])})["verdict"] == "inconclusive"
    out = V.evaluate_one("t9.claim15", {"rows": slope_rows([1.0, 1.2, 0.9])})
    assert out["value"] == pytest.approx(np.mean([1.0, 1.2, 0.9]))  # exact power laws: slope = exponent


def test_difference_inside_the_seed_spread_is_inconclusive():
    rows = lambda a: [{"seed": k, "a": x, "b": 0.07} for k, x in enumerate(a)]  # noqa: E731
    assert V.evaluate_one("e6.compress", {"rows": rows([0.02, 0.03, 0.01])})["verdict"] == "pass"
    assert V.evaluate_one("e6.compress", {"rows": rows([0.054, 0.080, 0.061])})["verdict"] == "inconclusive"
    assert V.evaluate_one("e6.compress", {"rows": rows([0.09, 0.1, 0.08])})["verdict"] == "differs"


def test_collapse_needs_a_fall_and_an_absolute_threshold():
    rows = lambda ends: [{"member": i, "start": 1.5, "end": e} for i, e in enumerate(ends)]  # noqa: E731
    assert V.evaluate_one("e1.claim10", {"rows": rows([0.01, 0.05])})["verdict"] == "pass"
    assert V.evaluate_one("e1.claim10", {"rows": rows([0.18, 0.67])})["verdict"] == "differs"  # fell, not collapsed
    assert V.evaluate_one("e1.claim10", {"rows": rows([0.05, 0.67])})["verdict"] == "inconclusive"


def test_convergence_apart_from_the_claim():
    def rows(last):
        return [{"member": "m", "budget": b, "residual": r} for b, r in ((0, 0.5), (300, 0.01), (1000, last))]
    assert V.evaluate_one("t1.stationarity", {"rows": rows(1e-6)})["verdict"] == "pass"
    assert V.evaluate_one("t1.stationarity", {"rows": rows(0.0049)})["verdict"] == "inconclusive"  # still halving
    assert V.evaluate_one("t1.stationarity", {"rows": rows(0.009)})["verdict"] == "differs"  # stalled above


def test_at_stationarity_tolerance_is_tied_to_the_measured_residual():
    ev = lambda v, f: V.evaluate_one("t7.balance", {"rows": [{"value": v, "allowed": f}]})["verdict"]  # noqa: E731
    assert ev(2e-4, 5e-4) == "pass"
    assert ev(5e-3, 1e-2) == "inconclusive"  # the residual allows it: the optimiser is the limit
    assert ev(5e-3, 1e-3) == "differs"  # more imbalance than the residual allows


def test_bound_counts_informative_rows_and_flips_on_a_violation():
    rows = [{"d": 0.1, "bound": 0.5, "norm": 1.0}, {"d": 0.2, "bound": 3.0, "norm": 1.0}]
    out = V.evaluate_one("t2.bound", {"rows": rows})
    assert out["verdict"] == "pass" and "informative) on 1 of 2" in out["measured"]
    rows[0]["d"] = 0.51
    assert V.evaluate_one("t2.bound", {"rows": rows})["verdict"] == "differs"


def test_le_and_ge_flip_at_their_threshold():
    assert V.evaluate_one("t6.a3", {"values": [0.3, 1.0]})["verdict"] == "pass"
    assert V.evaluate_one("t6.a3", {"values": [0.3, 1.001]})["verdict"] == "differs"
    assert V.evaluate_one("t3.order", {"values": [1.0, 19.0]})["verdict"] == "pass"
    assert V.evaluate_one("t3.order", {"values": [0.99, 19.0]})["verdict"] == "differs"


# -- evaluate(): every declared check, nothing else ------------------------------------------------

def test_evaluate_refuses_missing_unknown_and_malformed_inputs():
    with pytest.raises(V.CheckError, match="has no input"):
        V.evaluate("t6_tcv_propagation", {"t6.a3": {"values": [0.5]}})
    with pytest.raises(V.CheckError, match="undeclared"):
        V.evaluate("t6_tcv_propagation", {"t6.a3": {"values": [0.5]}, "t6.chain": {"values": [0.5]},
                                          "t6.other": {"values": [1]}})
    with pytest.raises(V.CheckError, match="rows"):
        V.evaluate_one("e1.claim2", {"scored": ["W2"]})
    with pytest.raises(V.CheckError, match="no checks declared"):
        V.evaluate("not_a_notebook", {})


def test_evaluate_keeps_variants_and_registry_order():
    out = V.evaluate("t6_tcv_propagation", {"t6.chain": {"values": [0.2]}, "t6.a3@tanh": {"values": [0.5]},
                                            "t6.a3@relu": {"values": [2.0]}})
    assert [c["id"] for c in out] == ["t6.a3@tanh", "t6.a3@relu", "t6.chain"]
    assert [c["verdict"] for c in out] == ["pass", "differs", "pass"]


# -- the scorecard's aggregation ---------------------------------------------------------------

def test_claim_verdicts_worst_deciding_check_convergence_apart_method_labelled():
    def chk(claim, kind, verdict):
        return {"id": f"x.{claim}.{kind}.{verdict}", "claim": claim, "kind": kind, "verdict": verdict}
    records = {"a": {"checks": [chk(2, "empirical", "pass"), chk(2, "empirical", "inconclusive"),
                                chk(1, "convergence", "differs"), chk(1, "empirical", "pass"),
                                chk(13, "method", "differs"), chk(4, "construction", "pass"),
                                chk(3, "report", "reported")]}}
    claims = [{"claim": n} for n in (1, 2, 3, 4, 13)] + [{"claim": 16, "context_only": True}]
    rows = {r["claim"]: r for r in V.claim_verdicts(records, claims)}
    assert rows[2]["verdict"] == "inconclusive"
    assert rows[1]["verdict"] == "pass" and len(rows[1]["convergence"]) == 1
    assert rows[13]["verdict"] == "differs" and rows[13]["by_method"]
    assert rows[4]["construction_only"]
    assert rows[3]["verdict"] == "not checked" and rows[16]["verdict"] == "context"


def test_changed_criteria_rows_carry_old_and_new_verdicts():
    base = json.loads((REPO / "book" / "criteria_baseline.json").read_text())
    rec = {"t9_rank_vs_tcv": {"checks": [V.evaluate_one("t9.claim15", {"rows": slope_rows([3.0, 3.1, 2.9])})]}}
    rows = V.changed_criteria(rec, base)
    assert len(rows) == len(V.CHANGES)
    r15 = next(r for r in rows if r["claim"] == 15)
    assert [o["verdict"] for o in r15["old"]] == ["pass", "pass", "pass"]  # the first run's slopes > 0
    assert {n["id"]: n["verdict"] for n in r15["new"]}["t9.claim15"] == "differs"
    assert {n["id"]: n["verdict"] for n in r15["new"]}["e2.claim15"] == "not run"


def test_bound_counts_informative_rows_over_the_scored_sites_only():
    rows = [{"site": "W2", "d": 0.1, "bound": 2.0, "norm": 1.0}, {"site": "W4", "d": 0.0, "bound": 0.5, "norm": 1.0}]
    assert "on 1 of 2 rows" in V.evaluate_one("t2.bound", {"rows": rows})["measured"]
    out = V.evaluate_one("t2.bound", {"rows": rows, "scored": ["W2"]})
    assert "on 0 of 1 W2 rows" in out["measured"] and out["verdict"] == "pass"


def test_every_check_of_the_first_run_is_changed_or_carried_over():
    base = json.loads((REPO / "book" / "criteria_baseline.json").read_text())
    old = {(nb, i) for nb, checks in base["checks"].items() for i in range(len(checks))}
    covered = [(nb, i) for ch in V.CHANGES for nb, i in ch["old"]] + list(V.UNCHANGED)
    assert sorted(old - set(covered)) == [], "old checks silently dropped"
    assert len(covered) == len(set(covered)) and set(covered) <= old
    ids = {c.id for c in V.REGISTRY}
    assert set(V.UNCHANGED.values()) <= ids
