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


def _smoke_reusable(out: Path) -> str | None:
    """Why the smoke run in ``out`` cannot be reused for the current sources; None when it can.

    Reusable only when its ``status.json`` is of profile ``smoke``, was made at the current git
    commit, lists every notebook of the smoke profile as ok, and each
    entry's source hash matches the current notebook, package and parameters.
    """
    from nrc.profiles import load_profile, validate_profile
    from nrc.results import git_state
    from nrc.runner import _parameters, _source_hash

    try:
        status = json.loads((out / "status.json").read_text())
    except (OSError, ValueError):
        return f"no readable {out / 'status.json'}"
    if status.get("profile") != "smoke":
        return f"{out} holds a run of profile {status.get('profile')!r}, not 'smoke'"
    commit, _ = git_state(REPO)
    if status.get("commit") != commit:
        return f"{out} was run at commit {status.get('commit')}, HEAD is {commit}"
    profile = load_profile("smoke", notebooks_dir=REPO / "notebooks")
    declared = validate_profile(profile, REPO / "notebooks")
    entries = {e.get("name"): e for e in status.get("notebooks", [])}
    for name in profile.notebooks:
        e = entries.get(name)
        if not e or not e.get("ok"):
            return f"{name} is missing or failed in {out / 'status.json'}"
        expected = _source_hash(REPO / "notebooks" / f"{name}.ipynb", _parameters(profile, name, declared))
        if e.get("source_hash") != expected:
            return f"{name}: sources changed since the smoke run in {out}"
    return None


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory) -> Path:
    """Where the smoke run lies: a fresh temporary folder, or a reused earlier run.

    By default the smoke profile is executed (all notebooks, via the runner) into a temporary
    folder, never into the repository. ``NRC_SMOKE_DONE=1`` reuses the run in ``$NRC_SMOKE_OUT``
    (default ``book/executed``) instead, but only when it matches the current commit, profile
    and sources (see :func:`_smoke_reusable`); otherwise the test session fails with the reason.
    """
    if os.environ.get("NRC_SMOKE_DONE") == "1":
        out = Path(os.environ.get("NRC_SMOKE_OUT") or EXECUTED).resolve()
        why = _smoke_reusable(out)
        assert why is None, f"NRC_SMOKE_DONE=1 but the smoke run cannot be reused: {why}"
        return out
    from nrc.profiles import load_profile
    from nrc.runner import reproduce

    out = tmp_path_factory.mktemp("smoke-run")
    report = reproduce(load_profile("smoke", notebooks_dir=REPO / "notebooks"),
                       notebooks_dir=REPO / "notebooks", out_dir=out, resume=False)
    assert report.ok, f"smoke run failed: {report.failures}"
    return out


@pytest.fixture(scope="session")
def smoke_records(smoke_dir) -> dict:
    """Every notebook record of the smoke run, by notebook name."""
    records = {p.stem: json.loads(p.read_text()) for p in (smoke_dir / "results").glob("*.json")}
    assert records, f"no notebook records found under {smoke_dir / 'results'}"
    return records


@pytest.fixture
def record(smoke_records, request):
    """The record of the notebook named by the test's ``notebook`` mark."""
    name = request.node.get_closest_marker("notebook").args[0]
    assert name in smoke_records, f"notebook {name} wrote no record (did it run?)"
    return smoke_records[name]
