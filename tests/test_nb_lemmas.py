"""Records of the lemma notebooks (T5-T9) from the smoke run.

Every recorded check is re-derived from the recorded numbers by its stated criterion
(tests/nb_verdicts.py) and the recorded verdict must be that one, whichever way it comes out:
a measured trend or an "about zero at stationarity" claim may come out "differs" and these tests
stay green. Only what holds at any parameter (the inequalities of Corollary A1, Lemma A3, the
exact balanced-norm inequalities) must hold. Smoke settings are never tuned to make a claim pass.
"""
import pytest

from nb_verdicts import assert_verdicts


@pytest.mark.notebook("t5_corollary_a1_low_rank")
def test_t5_verdicts(record):
    v = record["values"]
    assert v["n_members"] > 0 and v["b_cases"] > 0
    assert_verdicts(record)


@pytest.mark.notebook("t5_corollary_a1_low_rank")
def test_t5_inequalities_at_any_parameter(record):
    v = record["values"]
    assert v["a_max_chain_ratio"] <= 1 + 1e-9  # s_K(W_L) <= ||1^T W_L||/sqrt K <= ||G_L||/lambda (CE)
    assert v["b_max_km1_ratio"] <= 1 + 1e-9  # d_{K-1} <= bound_km1 (unregularised biases)
    assert v["c_max_bound_ratio_zero"] <= 1 + 1e-9  # d_K <= ||G||/lambda when TCV = 0
    assert v["c_max_tcv2_zero"] < 1e-20  # spread-0 data: every layer's within-class variation is 0


@pytest.mark.notebook("t6_tcv_propagation")
def test_t6_verdicts(record):
    v = record["values"]
    assert v["n_cases"] > 0 and v["n_chain_cases"] > 0
    for stage in ("init", "early", "stationary"):  # Lemma A3 holds at any parameter
        assert v[f"max_a3_ratio_{stage}"] <= 1 + 1e-9
    assert_verdicts(record)


@pytest.mark.notebook("t7_balanced_norms")
def test_t7_verdicts(record):
    assert record["values"]["n_members"] > 0
    assert_verdicts(record)


@pytest.mark.notebook("t8_rank_vs_weight_decay")
def test_t8_verdicts(record):
    v = record["values"]
    assert v["n_hidden_sites"] >= 1 and v["n_cases"] >= 3 * v["n_hidden_sites"]
    assert_verdicts(record)


@pytest.mark.notebook("t9_rank_vs_tcv")
def test_t9_verdicts(record):
    v = record["values"]
    assert v["n_hidden_sites"] >= 1 and v["n_cases"] >= 3 * v["n_hidden_sites"]
    assert_verdicts(record)
