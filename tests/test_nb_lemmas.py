"""Records of the lemma notebooks (T5-T9) from the smoke run.

Every recorded check is re-evaluated from the record's structured inputs by the one evaluator
(``nrc_companion.verdicts.evaluate``, through ``assert_verdicts``), whichever way it comes out: a measured
trend or an "about zero at stationarity" claim may come out "differs" or "inconclusive" and these
tests stay green. Only what holds at any parameter (the inequalities of Corollary A1, Lemma A3, the
exact balanced-norm inequalities, the bounds a measured residual allows) must hold. Smoke settings
are never tuned to make a claim pass.
"""
import pytest

from nb_verdicts import assert_verdicts

SLACK = 1e-9  # the registry's rounding slack of construction checks


def _ids(record):
    return {c["id"] for c in record["checks"]}


@pytest.mark.notebook("t5_corollary_a1_low_rank")
def test_t5_verdicts(record):
    v = record["values"]
    assert v["n_members"] > 0 and v["b_cases"] > 0 and v["c_cases"] > 0
    assert _ids(record) == {"t5.ce_chain", "t5.ce_rank", "t5.bias_chain", "t5.bias_trend", "t5.dnc1_exact"}
    assert_verdicts(record)


@pytest.mark.notebook("t5_corollary_a1_low_rank")
def test_t5_inequalities_at_any_parameter(record):
    v = record["values"]
    assert v["a_max_chain_ratio"] <= 1 + SLACK  # s_K(W_L) <= ||1^T W_L||/sqrt K <= ||G_L||/lambda (CE)
    assert v["b_max_km1_ratio"] <= 1 + SLACK  # d_{K-1} <= bound_km1 (unregularised biases)
    assert v["c_max_bound_ratio_zero"] <= 1 + SLACK  # d_K <= ||G||/lambda when TCV = 0
    assert v["c_max_tcv2_zero"] < 1e-20  # spread-0 data: every layer's within-class variation is 0
    # the measured value never exceeds what the measured gradient allows (construction)
    for cid in ("t5.ce_rank", "t5.dnc1_exact"):
        assert all(abs(r["value"]) <= r["allowed"] * (1 + SLACK) for r in record["inputs"][cid]["rows"])
    assert "W1" not in {r["site"] for r in record["inputs"]["t5.dnc1_exact"]["rows"]}


@pytest.mark.notebook("t6_tcv_propagation")
def test_t6_verdicts(record):
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_chain_cases"] > 0
    for stage in ("init", "early", "stationary"):  # Lemma A3 holds at any parameter
        assert v[f"max_a3_ratio_{stage}"] <= 1 + SLACK
    assert len(record["inputs"]["t6.a3"]["values"]) == v["n_cases"]
    assert len(record["inputs"]["t6.chain"]["values"]) == v["n_chain_cases"]
    assert _ids(record) == {"t6.a3", "t6.chain"}
    assert_verdicts(record)


@pytest.mark.notebook("t7_balanced_norms")
def test_t7_verdicts(record):
    v = record["values"]
    assert v["n_members"] > 0
    assert max(v["max_pair_exact_ratio"], v["max_identity_exact_ratio"]) <= 1 + SLACK
    rows = record["inputs"]["t7.balance"]["rows"]
    assert len(rows) == v["n_members"]
    assert all(r["value"] <= r["allowed"] * (1 + SLACK) for r in rows)  # Lemma A4's exact form
    assert _ids(record) == {"t7.identity", "t7.balance", "t7.descent_bound", "t7.descends"}
    assert_verdicts(record)


@pytest.mark.notebook("t8_rank_vs_weight_decay")
def test_t8_verdicts(record):
    v = record["values"]
    assert v["n_hidden_sites"] >= 1 and v["n_cases"] >= 3 * v["n_hidden_sites"]
    trend = record["inputs"]["t8.claim2"]
    assert len(trend["rows"]) == v["n_cases"] and len(trend["scored"]) == v["n_scored_sites"] >= 1
    assert not any(s.split(" ")[0] == "W1" for s in trend["scored"])
    assert _ids(record) == {"t8.claim2", "t8.rank"}
    assert_verdicts(record)


@pytest.mark.notebook("t9_rank_vs_tcv")
def test_t9_verdicts(record):
    v = record["values"]
    assert v["n_hidden_sites"] >= 1 and v["n_cases"] >= 3 * v["n_hidden_sites"]
    assert len(record["inputs"]["t9.claim3"]["rows"]) == v["n_cases"]
    assert len(record["inputs"]["t9.claim15"]["rows"]) == v["n_cases"] - v["n_nonpositive"]
    assert "scored" not in record["inputs"]["t9.claim3"]
    assert _ids(record) == {"t9.claim3", "t9.claim15"}
    assert_verdicts(record)
