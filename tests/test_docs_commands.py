"""Every usage command (fenced ``bash``) and every Python snippet (fenced ``python``) of README.md
and of the book's pages runs exactly as written.

The fenced ``bash`` blocks are parsed from the documents; each command runs with ``bash -e`` from
the repository root of a scratch copy (``notebooks/``, ``profiles/``, the book's config), so the
outputs the commands write (``runs/``, caches) land in a temporary folder. The README's two
set-up commands are left out (CI runs them itself), as is the rerun page's reference to them.
After each command the scratch tree must hold nothing new outside ``runs/`` and the ignored cache:
a papermill run from the root leaves nothing behind in the caller's tree. A command or snippet that
loads a real data set (``--dataset mnist``, ``load_dataset("mnist")``) first asks for it
(``need_data``: found, or fetched when online; offline, the case skips with one line saying why).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import skip_without

from nrc_companion import launch

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "book/rerun.md")
#: Every page a user reads: the README and the book's own pages (generated pages and the
#: executed notebooks of the committed run aside). Their bash blocks and Python snippets all run.
PAGES = ["README.md"] + sorted(str(p.relative_to(REPO)) for p in (REPO / "book").rglob("*.md")
                               if "generated" not in p.parts and "published" not in p.parts)
# The README's set-up commands: CI (.ci/run) runs them itself.
SETUP = {
    'pip install torch==2.13.0 -e . && nrc sweep',
    'pip install torch==2.13.0 -e ".[book,test,cluster]" && python -m pytest',
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


def datasets_used(text: str) -> list[str]:
    """The real data sets a command or snippet loads (``--dataset X``, ``load_dataset("X")``)."""
    found = re.findall(r"--dataset[ =]([\w-]+)|load_dataset\(\s*[\"']([\w-]+)", text)
    names = {a or b for a, b in found}
    names.update(n for n, call in (("mnist", "load_mnist("), ("fashion-mnist", "load_fashion_mnist("),
                                   ("cifar10", "load_cifar10(")) if call in text)
    return sorted(n for n in names if n != "synthetic")


def _env(tmp_path: Path) -> dict:
    """The environment of a documented command: the user's, with outputs kept out of $HOME."""
    from nrc.data import data_root

    env = dict(os.environ)
    # Outputs of the commands, not of this test session: results and caches stay in the scratch
    # tree (or the tmp folder), never in the user's home.
    for var in ("NRC_RESULTS_DIR", "NRC_CACHE_DIR"):
        env.pop(var, None)
    env["NRC_DATA"] = str(data_root())  # resolved before $HOME moves: the data need_data checked
    env["HOME"] = str(tmp_path / "home")  # ~/.cache/nrc/... of the commands
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def commands(doc: str) -> list[str]:
    return [c for b in blocks(doc) for c in b]


def test_the_setup_commands_are_the_readmes_two():
    setup = [b.strip() for b in bash_blocks("README.md") if b.strip() in SETUP]
    assert sorted(setup) == sorted(SETUP), "the README's two set-up commands changed"


def test_ci_runs_the_readmes_test_command_and_requires_the_data():
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    test_command = next(c for c in SETUP if "pytest" in c)
    assert ci[-1] == test_command, ".ci/run must end with the README's test command"
    assert "export NRC_REQUIRE_DATA=1" in ci, "CI must fail, not skip, a test whose data set is missing"


# One case per block (a block's commands run in order, in the same scratch tree). A command
# both documents show runs once per session.
CASES = [(doc, i, block) for doc in PAGES for i, block in enumerate(blocks(doc))]
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
    for name in datasets_used("\n".join(block)):
        skip_without(name)
    env = _env(tmp_path)
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
    from nrc_companion.records import results_dir

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
        "python -m nrc_companion.launch --table book/rerun.md")


def test_runner_gives_kernels_an_absolute_nrc_data(tmp_path, monkeypatch):
    """Kernels start in notebooks/: a relative NRC_DATA must mean the caller's directory."""
    from nrc_companion.profiles import load_profile
    from nrc_companion.runner import kernel_environment

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NRC_DATA", "rel/data")
    profile = load_profile("smoke", notebooks_dir=REPO / "notebooks")
    env = kernel_environment(profile, tmp_path / "out", REPO)
    assert env["NRC_DATA"] == str(tmp_path / "rel" / "data")


# Python snippets: README.md and every page of the book (book/**/*.md, generated pages aside).
SNIPPETS = [(doc, i, m.group(1)) for doc in PAGES
            for i, m in enumerate(re.finditer(r"^ *```python\n(.*?)^ *```", (REPO / doc).read_text(), re.S | re.M))]


def test_the_readme_and_the_book_have_python_snippets():
    assert {doc for doc, _, _ in SNIPPETS} >= {"README.md", "book/using_nrc.md"}


@pytest.mark.parametrize("doc,index,code", SNIPPETS, ids=[f"{d}#{i}" for d, i, _ in SNIPPETS])
def test_python_snippets_run_as_written(doc, index, code, scratch, tmp_path):
    """Each snippet runs alone, in a fresh interpreter at the repository root, and adds no file."""
    for name in datasets_used(code):
        skip_without(name)
    before = _tree(scratch)
    proc = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{doc}: snippet {index} failed:\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert not sorted(_tree(scratch) - before), f"{doc}: snippet {index} left files behind"


def test_import_nrc_from_the_clones_parent_folder(tmp_path):
    """From the folder holding a clone named ``nrc``, ``import nrc`` is the package, not the clone.

    A folder named ``nrc`` in the working directory is a namespace package to Python; the editable
    install puts the repository root on ``sys.path`` (``package-dir`` in pyproject.toml), where the
    regular package wins. Installs made before that setting need ``pip install -e .`` once more.
    """
    (tmp_path / "nrc").symlink_to(REPO, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", "import nrc; print(nrc.__file__); nrc.analyze_model"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (f"import nrc from the clone's parent folder failed (reinstall with "
                                  f"pip install -e . if it predates pyproject's package-dir):\n{proc.stderr[-1500:]}")
    assert Path(proc.stdout.strip()).resolve() == REPO / "nrc" / "__init__.py"


def _short(name: str) -> str:
    """``t2_rank_tcv_bound`` -> ``T2``, ``e4b_dnc1_optimality`` -> ``E4b``, ``derivation_...`` -> ``derivation``."""
    head = name.split("_")[0]
    return head[0].upper() + head[1:] if re.fullmatch(r"[te]\d+\w*", head) else head


def profile_data_row(profile_name: str) -> str:
    """The README's data-table cell of a profile: which notebooks read which real data set."""
    from conftest import TITLE, notebook_datasets

    from nrc_companion.profiles import load_profile

    profile = load_profile(profile_name, notebooks_dir=REPO / "notebooks")
    needs = notebook_datasets(profile, REPO / "notebooks")
    parts = []
    for dataset in ("mnist", "fashion-mnist", "cifar10"):
        users = [n for n in profile.notebooks if dataset in needs[n]]
        if not users:
            continue
        if len(users) > len(needs) / 2:
            rest = [_short(n) for n in profile.notebooks if n not in users]
            parts.append(f"{TITLE[dataset]} ({len(users)} of the {len(needs)} notebooks: all but "
                         f"{', '.join(rest)})")
        else:
            parts.append(f"{TITLE[dataset]} ({', '.join(_short(n) for n in users)})")
    return " and ".join(parts) or "none (synthetic)"


@pytest.mark.parametrize("profile", ["smoke", "full", "paper"])
def test_readme_data_table_is_measured_from_the_profiles(profile):
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| .*?profile `(\w+)`.*? \| (.*) \|$",
                                                        (REPO / "README.md").read_text(), re.M)}
    assert rows.get(profile) == profile_data_row(profile), (
        f"README.md's data row of profile {profile!r} should read: {profile_data_row(profile)}")


def test_a_bad_papermill_parameter_ends_in_the_line_the_rerun_page_quotes(tmp_path):
    """book/rerun.md quotes the last line papermill prints for ``-p seeds "[0, 1"``: it must be that."""
    text = " ".join((REPO / "book" / "rerun.md").read_text().split())
    quoted = re.search(r'for example `-p seeds "\[0, 1"` ends in `(ConfigError: [^`]*)`', text)
    assert quoted, "book/rerun.md lost its example of a bad papermill parameter"
    proc = subprocess.run(["papermill", "notebooks/t2_rank_tcv_bound.ipynb", str(tmp_path / "out.ipynb"),
                           "-p", "seeds", "[0, 1"], cwd=REPO, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert proc.returncode != 0 and last == quoted.group(1), proc.stderr[-2000:]
