"""Assert a notebook record's verdicts with the registry's own evaluator (no second copy).

The criteria live only in :mod:`nrc_companion.verdicts`. A record stores the structured inputs its
checks were evaluated from; re-evaluating them must give the recorded checks, and every check
that holds by construction must pass. An empirical check may honestly come out "differs" or
"inconclusive" at smoke scale and the tests stay green: smoke settings are never tuned to make
a claim pass.
"""
from __future__ import annotations

from nrc_companion import verdicts


def assert_verdicts(record: dict) -> dict:
    """Re-evaluate ``record``'s inputs; recorded and recomputed checks agree; constructions pass.

    Returns the counts of verdicts by kind, e.g. ``{"construction": {"pass": 3}, ...}``.
    """
    name = record["notebook"]
    assert record.get("inputs"), f"{name}: the record carries no check inputs"
    again = verdicts.evaluate(name, record["inputs"])
    recorded = record["checks"]
    assert [c["id"] for c in recorded] == [c["id"] for c in again], f"{name}: recorded checks differ from the registry's"
    counts: dict[str, dict[str, int]] = {}
    for old, new in zip(recorded, again):
        where = f"{name} {old['id']} ({old['measured']})"
        assert old["verdict"] == new["verdict"], f"{where}: recorded {old['verdict']}, evaluator gives {new['verdict']}"
        assert old["verdict"] in verdicts.VERDICTS, where
        if old["kind"] == "construction":
            assert old["verdict"] == "pass", f"{where}: holds by construction, yet {old['verdict']}"
        counts.setdefault(old["kind"], {}).setdefault(old["verdict"], 0)
        counts[old["kind"]][old["verdict"]] += 1
    return counts
