"""The committed full run in ``book/published/``: current sources, no machine paths, small.

The book is published from the executed notebooks committed there (``nrc reproduce --profile
full --out book/published``). These tests fail when a committed notebook's code differs from its
source notebook (parameters cells aside: the profile's values are injected there), when a
committed file names the machine that ran it (absolute repository or home path, host name), or
when the folder outgrows 20 MB. They skip while no run has been committed.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "book" / "published"
SKIP_TAGS = {"parameters", "injected-parameters"}

pytestmark = pytest.mark.skipif(not (PUBLISHED / "status.json").is_file(),
                                reason="no committed run in book/published yet")


def code_cells(path: Path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    return [c.source.strip() for c in nb.cells
            if c.cell_type == "code" and not SKIP_TAGS & set(c.metadata.get("tags", []))]


def published_notebooks() -> list[Path]:
    return sorted(PUBLISHED.glob("*.ipynb"))


def test_status_lists_every_committed_notebook_as_ok():
    status = json.loads((PUBLISHED / "status.json").read_text())
    entries = {e["name"]: e for e in status["notebooks"]}
    names = {p.stem for p in published_notebooks()}
    assert names == set(entries), f"notebooks vs status.json entries differ: {sorted(names ^ set(entries))}"
    assert all(e["ok"] for e in entries.values()), [n for n, e in entries.items() if not e["ok"]]
    assert status.get("finished"), "the committed run did not finish"


@pytest.mark.parametrize("path", published_notebooks(), ids=lambda p: p.stem)
def test_committed_code_matches_source(path):
    source = REPO / "notebooks" / path.name
    assert source.is_file(), f"{path.name}: no source notebook notebooks/{path.name}"
    ran, src = code_cells(path), code_cells(source)
    assert ran == src, (f"{path.name}: code cells differ from notebooks/{path.name}; rerun it: "
                        f"nrc reproduce --profile full --out book/published --only {path.stem}")


def _forbidden() -> list[str]:
    out = [str(REPO), str(Path.home()) + "/", "/home/", "/root/"]
    out += [os.environ[v] for v in ("NRC_DATA", "NRC_CACHE_DIR") if len(os.environ.get(v, "")) > 1]
    host = socket.gethostname()
    if len(host) >= 4 and host not in ("localhost",):
        out.append(host)
    return out


def test_no_machine_paths_user_or_host_names():
    bad = []
    for f in sorted(p for p in PUBLISHED.rglob("*") if p.is_file()):
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue  # figures are binary
        bad += [f"{f.relative_to(REPO)}: {s!r}" for s in _forbidden() if s in text]
    assert not bad, "committed run names the machine that ran it:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", published_notebooks(), ids=lambda p: p.stem)
def test_papermill_paths_are_relative(path):
    meta = nbformat.read(str(path), as_version=4).metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        assert not str(meta.get(key, "")).startswith("/"), f"{path.name}: {key} = {meta.get(key)!r}"


def test_published_run_is_at_most_20_mb():
    size = sum(p.stat().st_size for p in PUBLISHED.rglob("*") if p.is_file())
    assert size <= 20 * 2**20, f"book/published holds {size / 2**20:.1f} MB (limit 20 MB)"


def test_readme_quotes_the_measured_ratio_and_wall_time():
    """The README's performance sentence quotes the numbers the benchmark and the run recorded."""
    import re

    readme = (REPO / "README.md").read_text()
    bench = json.loads((REPO / "benchmarks" / "matmul_ceiling.json").read_text())["summary"]
    status = json.loads((PUBLISHED / "status.json").read_text())
    ratio = re.search(r"reaches \*\*([0-9.]+)\*\* of the speed", readme)
    ratio2 = re.search(r"\(([0-9.]+) with two\)", readme)
    minutes = re.search(r"took \*\*([0-9]+) min\*\* of wall time", readme)
    assert ratio and ratio2 and minutes, "README lost its performance sentence"
    assert ratio.group(1) == f"{bench['1']['median_ratio']:.2f}"
    assert ratio2.group(1) == f"{bench['2']['median_ratio']:.2f}"
    assert int(minutes.group(1)) == round(status["total_seconds"] / 60)
