"""Record of the experiment notebook E8 (Theorem A where it bites) from the smoke run.

Every recorded check is re-derived from the recorded inputs by the registry's evaluator
(tests/nb_verdicts.py) and the recorded verdict must be that one, whichever way it comes out:
whether the bound is informative, and whether NC1 ends collapsed, may come out either way at smoke
scale and this test stays green. Only Theorem A with its measured gradient term must hold, and the
initialisation must be the trainer's. Smoke settings are never tuned to make a claim pass.
"""
from __future__ import annotations

import pytest

from nb_verdicts import assert_verdicts


@pytest.mark.notebook("e8_theorem_a_bites")
def test_e8_verdicts(record):
    v = record["values"]
    assert v["n_members"] >= 2 and v["n_checkpoints"] >= 3 and v["n_hidden_end"] > 0
    assert v["n_rows"] >= v["n_hidden_rows"] > 0
    assert 0 <= v["max_ratio"] <= 1 + 1e-9  # Theorem A holds at any parameter
    assert 0 <= v["n_informative_end"] <= v["n_hidden_end"]
    assert v["n_informative_hidden"] + v["n_vacuous_hidden"] == v["n_hidden_rows"]
    # NC1 at initialisation comes from the trainer's own initial parameters, bit for bit
    assert v["init_params_equal"] is True and v["init_nc1_rel_diff"] <= 1e-12
    inputs = record["inputs"]
    rows = inputs["e8.bound"]["rows"]
    assert len(rows) == v["n_rows"]
    assert {"d", "bound", "norm", "site", "seed", "lambda", "checkpoint"} <= set(rows[0])
    assert len({r["checkpoint"] for r in rows}) == v["n_checkpoints"]
    assert inputs["e8.informative"]["value"] == v["n_informative_end"]
    collapse = inputs["e8.claim10"]["rows"]
    assert len(collapse) == v["n_members"] and all(r["start"] > 0 and r["end"] >= 0 for r in collapse)
    assert_verdicts(record)
