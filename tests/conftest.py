"""Shared fixtures. The notebook tests read the records of one smoke run of all notebooks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXECUTED = REPO / "book" / "executed"

# Offline data: MNIST lies in ../shared/data beside a checkout of this project (see README).
if not os.environ.get("NRC_DATA") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["NRC_DATA"] = str(REPO.parent / "shared" / "data")
os.environ.setdefault("NRC_PROGRESS", "0")


@pytest.fixture(scope="session")
def smoke_records() -> dict:
    """Run the smoke profile once (all notebooks, via the runner) and return every record by name.

    Set ``NRC_SMOKE_DONE=1`` to reuse the records already under ``book/executed/results``
    (e.g. right after ``nrc reproduce --profile smoke``, as .ci/run does).
    """
    if os.environ.get("NRC_SMOKE_DONE") != "1":
        from nrc.profiles import load_profile
        from nrc.runner import reproduce

        report = reproduce(load_profile("smoke", notebooks_dir=REPO / "notebooks"),
                           notebooks_dir=REPO / "notebooks", out_dir=EXECUTED)
        assert report.ok, f"smoke run failed: {report.failures}"
    records = {p.stem: json.loads(p.read_text()) for p in (EXECUTED / "results").glob("*.json")}
    assert records, "no notebook records found under book/executed/results"
    return records


@pytest.fixture
def record(smoke_records, request):
    """The record of the notebook named by the test's ``notebook`` mark."""
    name = request.node.get_closest_marker("notebook").args[0]
    assert name in smoke_records, f"notebook {name} wrote no record (did it run?)"
    return smoke_records[name]
