"""The rules that judge the notebooks' recorded verdicts (tests/nb_verdicts.py), without a smoke run.

* every notebook has an entry, and every recorded value and parameter a criterion reads exists
  in that notebook (a renamed key fails here, not silently in the smoke tests);
* a recorded verdict that contradicts its criterion fails, in either direction; a
  by-construction check recorded as failed fails; an empirical check that honestly "differs"
  passes; a check with no criterion (or a missing one) fails.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import nb_verdicts as nv
from nrc.profiles import notebook_parameters

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))


class _Keys(dict):
    """Records the keys a criterion reads; answers with a harmless number."""

    def __init__(self, special=None):
        super().__init__()
        self.read, self.special = set(), special or {}

    def __getitem__(self, key):
        self.read.add(key)
        return self.special.get(key, 0.5)


def _read_keys(name):
    values, params = _Keys({"all_chains_hold": True, "b_decreases": True}), _Keys({"refine_steps": [0, 1]})
    for crit in nv.CRITERIA[name]:
        for fn in (crit.present, crit.verdict):
            try:
                fn(values, params)
            except (TypeError, ValueError):
                pass
    return values.read, params.read


def test_every_notebook_has_criteria():
    assert sorted(nv.CRITERIA) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_criteria_read_keys_the_notebook_records(name):
    nb = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
    source = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    value_keys, param_keys = _read_keys(name)
    assert value_keys, name
    missing = sorted(k for k in value_keys if f'"{k}"' not in source and f"'{k}'" not in source)
    assert not missing, f"{name} no longer records {missing}; update tests/nb_verdicts.py"
    params = notebook_parameters(REPO / "notebooks" / f"{name}.ipynb")
    assert not sorted(param_keys - set(params)), f"{name}: parameters {sorted(param_keys - set(params))} gone"


def _e4_record(**overrides):
    values = {"n_cases": 2, "max_barrier_rel": 0.0, "max_tcv_ratio_end": 1e-10, "max_line_rise_rel": 0.0,
              "max_rise_rel": 3.5e-3, "max_price_of_collapse": 0.0176, "tolerance": 1e-4}
    values.update(overrides)
    passed = [True, True, True, False, False]
    checks = [{"claim": 12, "what": f"check {i}", "measured": "", "passed": p} for i, p in enumerate(passed)]
    return {"notebook": "e4_no_loss_barrier", "profile": "custom", "values": values, "checks": checks}


PARAMS = {"dnc1_tol": 1e-6}


def test_honest_differs_passes():
    counts = nv.assert_verdicts(_e4_record(), PARAMS)
    assert counts == {"construction": 1, "empirical": 4, "undetermined": 0, "differs": 2}


@pytest.mark.parametrize("index", range(5))
def test_a_flipped_verdict_fails(index):
    rec = _e4_record()
    rec["checks"][index]["passed"] = not rec["checks"][index]["passed"]
    with pytest.raises(AssertionError):
        nv.assert_verdicts(rec, PARAMS)


def test_a_failed_construction_check_fails_even_if_consistent():
    rec = _e4_record(max_tcv_ratio_end=1e-3)  # endpoints not DNC1: the construction is broken
    rec["checks"][1]["passed"] = False
    with pytest.raises(AssertionError, match="by construction"):
        nv.assert_verdicts(rec, PARAMS)


def test_missing_or_extra_checks_fail():
    rec = _e4_record()
    extra = copy.deepcopy(rec)
    extra["checks"].append({"claim": 12, "what": "new", "measured": "", "passed": True})
    with pytest.raises(AssertionError, match="checks recorded"):
        nv.assert_verdicts(extra, PARAMS)
    rec["checks"].pop()
    with pytest.raises(AssertionError, match="checks recorded"):
        nv.assert_verdicts(rec, PARAMS)
    wrong = _e4_record()
    wrong["checks"][0]["claim"] = 11
    with pytest.raises(AssertionError, match="claim"):
        nv.assert_verdicts(wrong, PARAMS)


def test_text_criteria():
    assert nv.all_negative("W1: -1.00, W2: -0.00") is True
    assert nv.all_negative("W1: nan (constant), W2: -0.71") is False
    assert nv.all_negative("W1: -1.00, W2: 0.10") is False
    assert nv.all_positive("K=3: W1 1.00, W2 0.50; K=5: W1 1.00, W2 1.00") is True
    assert nv.all_positive("K=3: 4.84, K=5: -0.10") is False
    assert nv.all_positive("W2: 0.00") is None  # the sign was rounded away
    assert nv.all_positive("no layer l >= 2") is False


def test_undetermined_verdict_still_fails_when_the_numbers_contradict():
    crit = nv.CRITERIA["t8_rank_vs_weight_decay"][0]
    assert crit.verdict({"max_spearman_dK_rel": 0.3}, {}) is False
    assert crit.verdict({"max_spearman_dK_rel": float("nan")}, {}) is False
    assert crit.verdict({"max_spearman_dK_rel": -0.9}, {}) is None  # a NaN layer could have failed it
