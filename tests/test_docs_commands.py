"""Every usage command of README.md and book/rerun.md runs, exactly as written.

The fenced ``bash`` blocks are parsed from the documents; each command runs with ``bash -e`` from
the repository root of a scratch copy (``notebooks/``, ``profiles/``, the book's config), so the
outputs the commands write (``runs/``, caches) land in a temporary folder. The README's two
set-up commands are left out (CI runs them itself), as is the rerun page's reference to them.
After each command the scratch tree must hold nothing new outside ``runs/`` and the ignored cache:
a papermill run from the root leaves nothing behind in the caller's tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nrc import launch

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "book/rerun.md")
# The README's set-up commands: CI (.ci/run) runs them itself.
SETUP = {
    'pip install torch==2.13.0 -e . && nrc sweep',
    'pip install torch==2.13.0 -e ".[book,test]" && python -m pytest',
}
# What a documented command may leave in the scratch tree (both ignored by git).
ALLOWED_OUTPUTS = ("runs", ".nrc-cache")
COPIED = ("notebooks", "profiles", "_config.yml", "_toc.yml")


def bash_blocks(doc: str) -> list[str]:
    """The fenced ``bash`` blocks of ``doc``, comments kept, in document order."""
    text = (REPO / doc).read_text()
    return [m.group(1) for m in re.finditer(r"^ *```bash\n(.*?)^ *```", text, re.S | re.M)]


def _logical(block: str) -> list[str]:
    """A block's commands: ``\\`` joins lines, comment lines and trailing comments dropped."""
    found = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command and not command.startswith("#"):
            found.append(command)
    return found


def blocks(doc: str) -> list[list[str]]:
    """The usage blocks of ``doc`` as lists of commands, the set-up commands left out."""
    found = [[c for c in _logical(b) if c not in SETUP] for b in bash_blocks(doc)]
    return [b for b in found if b]


def commands(doc: str) -> list[str]:
    return [c for b in blocks(doc) for c in b]


def test_the_setup_commands_are_the_readmes_two():
    setup = [b.strip() for b in bash_blocks("README.md") if b.strip() in SETUP]
    assert sorted(setup) == sorted(SETUP), "the README's two set-up commands changed"


# One case per block (a block's commands run in order, in the same scratch tree). A command
# both documents show runs once per session.
CASES = [(doc, i, block) for doc in DOCS for i, block in enumerate(blocks(doc))]
_RAN: set[str] = set()


def test_every_document_has_commands():
    for doc in DOCS:
        assert commands(doc), f"{doc} documents no command"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs-root")
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    return root


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if not str(p.relative_to(root)).startswith(ALLOWED_OUTPUTS)}


@pytest.mark.parametrize("doc,index,block", CASES, ids=[f"{d}#{i}" for d, i, _ in CASES])
def test_documented_commands_run_as_written(doc, index, block, scratch, tmp_path):
    env = dict(os.environ)
    # Outputs of the commands, not of this test session: results and caches stay in the scratch
    # tree (or the tmp folder), never in the user's home.
    for var in ("NRC_RESULTS_DIR", "NRC_CACHE_DIR"):
        env.pop(var, None)
    env["HOME"] = str(tmp_path / "home")  # ~/.cache/nrc/... of the commands
    env.setdefault("OMP_NUM_THREADS", "1")
    for command in block:
        if command in _RAN:
            continue
        before = _tree(scratch)
        start = time.perf_counter()
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=scratch,
                              env=env, capture_output=True, text=True, timeout=300)
        print(f"{time.perf_counter() - start:.1f} s: {command}")
        assert proc.returncode == 0, (
            f"{doc}: documented command failed (exit {proc.returncode}):\n{command}\n"
            f"--- stderr ---\n{proc.stderr[-3000:]}")
        new = sorted(_tree(scratch) - before)
        assert not new, f"{doc}: `{command}` left files outside runs/: {new}"
        _RAN.add(command)


def test_papermill_results_land_next_to_the_output_notebook(scratch):
    """The rerun page's papermill command writes its record under runs/t2/results only."""
    block = next(c for c in commands("book/rerun.md") if "papermill notebooks/" in c)
    assert "NRC_RESULTS_DIR=runs/t2/results" in block
    records = list((scratch / "runs" / "t2" / "results").glob("*.json"))
    if not records:
        pytest.skip("the papermill block has not run in this session (run the whole file)")
    assert [p.name for p in records] == ["t2_rank_tcv_bound.json"]


def test_results_dir_defaults_outside_the_working_directory(tmp_path, monkeypatch):
    from nrc.results import results_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NRC_RESULTS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert results_dir() == tmp_path / "home" / ".cache" / "nrc" / "results"
    monkeypatch.setenv("NRC_RESULTS_DIR", "out/res")
    assert results_dir("t2") == tmp_path / "out" / "res" / "t2"


def test_rerun_page_table_is_current():
    text = (REPO / "book" / "rerun.md").read_text()
    table = text.split(launch.TABLE_BEGIN, 1)[1].split(launch.TABLE_END, 1)[0].strip()
    assert table == launch.notebook_table().strip(), (
        "the notebook table of book/rerun.md is out of date: "
        "python -m nrc.launch --table book/rerun.md")


def test_runner_gives_kernels_an_absolute_nrc_data(tmp_path, monkeypatch):
    """Kernels start in notebooks/: a relative NRC_DATA must mean the caller's directory."""
    from nrc.profiles import load_profile
    from nrc.runner import _kernel_env

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NRC_DATA", "rel/data")
    profile = load_profile("smoke", notebooks_dir=REPO / "notebooks")
    env = _kernel_env(profile, tmp_path / "out", REPO)
    assert env["NRC_DATA"] == str(tmp_path / "rel" / "data")
