"""Launch paths: the repository and book URLs, the Colab set-up cell, Binder's environment.

One source of truth: ``repository.url`` and ``repository.branch`` in the book's ``_config.yml``
(also what Jupyter Book's repository and launch buttons read). Everything else is derived here:

* :func:`book_url` -- the published book on GitHub Pages (``https://OWNER.github.io/REPO/``);
* :func:`colab_url`, :func:`binder_url` -- the launch links of one source notebook;
* :func:`setup_cell_source` -- the first code cell of every notebook: on Google Colab (detected by
  ``"google.colab" in sys.modules``) it ``pip install``-s nrc from the repository with
  ``--no-deps``, plus only those of nrc's dependencies that are missing, with the installed
  versions of everything else pinned, so Colab's own torch/numpy/pandas are never touched;
  anywhere else it does nothing;
* :func:`environment_yaml` -- ``environment.yml`` (conda / Binder) from ``pyproject.toml``'s
  dependencies, with conda-forge's CPU build of PyTorch.

Command line (from a checkout)::

    python -m nrc_companion.launch --write notebooks/     # insert / update the set-up cell (idempotent)
    python -m nrc_companion.launch --check notebooks/     # exit 1 when a notebook's cell is out of date
    python -m nrc_companion.launch --environment environment.yml   # regenerate the Binder environment
    python -m nrc_companion.launch --table book/rerun.md  # regenerate the notebook table (links, data)
    python -m nrc_companion.launch --urls                 # print the URLs derived from _config.yml
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

__all__ = [
    "INSTALL_SOURCE_ENV",
    "SETUP_TAGS",
    "binder_url",
    "book_url",
    "colab_url",
    "environment_yaml",
    "insert_setup_cell",
    "is_setup_cell",
    "repository",
    "requirements",
    "setup_cell_source",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "_config.yml"
PYPROJECT = REPO_ROOT / "pyproject.toml"

#: Environment variable that replaces the install source of the Colab cell (a pip requirement:
#: ``git+URL``, a local checkout, a wheel); used by the tests to install the local checkout.
INSTALL_SOURCE_ENV = "NRC_INSTALL_SOURCE"

#: Tags of the set-up cell: ``remove-cell`` hides it in the book; ``nrc-colab-setup`` finds it.
SETUP_TAGS = ["remove-cell", "nrc-colab-setup"]
_MARKER = "nrc-colab-setup"

#: pip name -> conda-forge name where they differ (CPU-only PyTorch for Binder).
_CONDA_NAMES = {"torch": "pytorch-cpu"}
_ENV_PYTHON = "3.11"


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: nrc_companion.launch needs a checkout of the repository")
    return yaml.safe_load(path.read_text()) or {}


def repository(config: Path = CONFIG) -> tuple[str, str]:
    """``(url, branch)`` of the repository, from ``repository`` in ``_config.yml``."""
    repo = _read_yaml(config).get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme != "https" or parsed.netloc != "github.com" or len(parsed.path.split("/")) != 3:
        raise ValueError(f"{config}: repository.url must be https://github.com/OWNER/REPO, got {url!r}")
    return url, str(repo.get("branch") or "main")


def _owner_repo(config: Path = CONFIG) -> tuple[str, str]:
    _, owner, name = urlparse(repository(config)[0]).path.split("/")
    return owner, name


def book_url(config: Path = CONFIG) -> str:
    """The published book: GitHub Pages of the repository, ``https://OWNER.github.io/REPO/``."""
    owner, name = _owner_repo(config)
    return f"https://{owner.lower()}.github.io/{name}/"


def _launch(config: Path, key: str, default: str) -> str:
    return str((_read_yaml(config).get("launch_buttons") or {}).get(key) or default).rstrip("/")


def colab_url(notebook: str, config: Path = CONFIG) -> str:
    """Open ``notebooks/NOTEBOOK.ipynb`` of the repository's branch on Google Colab."""
    owner, name = _owner_repo(config)
    branch = repository(config)[1]
    base = _launch(config, "colab_url", "https://colab.research.google.com")
    return f"{base}/github/{owner}/{name}/blob/{branch}/notebooks/{notebook}.ipynb"


def binder_url(notebook: str | None = None, config: Path = CONFIG) -> str:
    """Open the repository (or ``notebooks/NOTEBOOK.ipynb`` in it) on Binder."""
    owner, name = _owner_repo(config)
    branch = repository(config)[1]
    base = _launch(config, "binderhub_url", "https://mybinder.org")
    url = f"{base}/v2/gh/{owner}/{name}/{branch}"
    return url if notebook is None else f"{url}?urlpath=tree/notebooks/{notebook}.ipynb"


def _load_pyproject(path: Path = PYPROJECT) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(path.read_text())


def requirements(extra: str | None = None, pyproject: Path = PYPROJECT) -> list[str]:
    """``project.dependencies`` of ``pyproject.toml`` (or one optional extra), as written."""
    project = _load_pyproject(pyproject)["project"]
    if extra is None:
        return list(project["dependencies"])
    return list(project["optional-dependencies"][extra])


def _split(requirement: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", requirement)
    if m is None:
        raise ValueError(f"cannot parse the requirement {requirement!r}")
    return m.group(1), m.group(2).replace(" ", "")


def setup_cell_source(config: Path = CONFIG, pyproject: Path = PYPROJECT) -> str:
    """The Colab set-up cell: install nrc on Colab only, leaving Colab's packages alone."""
    url, branch = repository(config)
    deps = requirements(pyproject=pyproject)
    return f'''# Set-up for Google Colab (does nothing anywhere else): install nrc from its repository.
# Colab's own packages (torch, numpy, pandas, ...) are kept as they are: nrc is installed with
# --no-deps, plus only those of its requirements that are missing, everything else pinned.
import sys

if "google.colab" in sys.modules:
    def _nrc_colab_setup():
        import importlib, importlib.metadata as md, os, re, subprocess, tempfile
        source = os.environ.get("{INSTALL_SOURCE_ENV}", "git+{url}@{branch}")
        requirements = {json.dumps(deps)}
        names = [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in requirements]
        present = {{}}
        for name in names:
            try:
                present[name] = md.version(name)
            except md.PackageNotFoundError:
                pass
        missing = [r for r, n in zip(requirements, names) if n not in present]
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
            pins.write("".join(f"{{n}}=={{v}}\\n" for n, v in present.items()))
        pip = [sys.executable, "-m", "pip", "install", "-q", "-c", pins.name]
        subprocess.run(pip + ["--no-deps", source], check=True)
        if missing:
            subprocess.run(pip + missing, check=True)
        importlib.invalidate_caches()

    _nrc_colab_setup()
    del _nrc_colab_setup
'''


def is_setup_cell(cell: dict) -> bool:
    """Whether ``cell`` is the Colab / Binder set-up cell that :func:`insert_setup_cell` writes."""
    return cell.get("cell_type") == "code" and _MARKER in cell.get("metadata", {}).get("tags", [])


def _setup_position(cells: list[dict]) -> int:
    """Index of the set-up cell: right after the leading title (markdown) cells, before any code."""
    i = 0
    while i < len(cells) and cells[i].get("cell_type") == "markdown" and not is_setup_cell(cells[i]):
        i += 1
    return i


def _new_cell(source: str) -> dict:
    lines = source.splitlines(keepends=True)
    return {"cell_type": "code", "execution_count": None, "id": "nrc-colab-setup",
            "metadata": {"tags": list(SETUP_TAGS)}, "outputs": [], "source": lines}


def insert_setup_cell(nb: dict, source: str) -> bool:
    """Put the set-up cell (``source``) before the notebook's first code cell; True if changed.

    An existing set-up cell (found by its tag) is replaced in place, so running it twice is a
    no-op. The leading markdown cell(s) (the title) stay first, so the book's page title and
    Colab's first screen are unchanged.
    """
    cells = nb["cells"]
    wanted = _new_cell(source)
    existing = [i for i, c in enumerate(cells) if is_setup_cell(c)]
    if existing == [_setup_position(cells)] and _cell_matches(cells[existing[0]], wanted):
        return False
    for i in reversed(existing):
        del cells[i]
    if nb.get("nbformat", 4) == 4 and nb.get("nbformat_minor", 0) < 5:
        wanted.pop("id")  # cell ids exist from nbformat 4.5 on
    cells.insert(_setup_position(cells), wanted)
    return True


def _cell_matches(cell: dict, wanted: dict) -> bool:
    src = cell.get("source", "")
    src = "".join(src) if isinstance(src, list) else src
    return (src == "".join(wanted["source"]) and not cell.get("outputs")
            and cell.get("metadata", {}).get("tags", []) == wanted["metadata"]["tags"])


def _notebooks(folder: Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise FileNotFoundError(f"no notebooks in {folder}")
    return paths


def write_notebooks(folder: Path) -> list[Path]:
    """Insert or update the set-up cell of every notebook in ``folder``; returns those changed."""
    source = setup_cell_source()
    changed = []
    for path in _notebooks(folder):
        nb = json.loads(path.read_text())
        if insert_setup_cell(nb, source):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            tmp.replace(path)
            changed.append(path)
    return changed


def stale_notebooks(folder: Path) -> list[Path]:
    """The notebooks of ``folder`` whose set-up cell is missing, misplaced or out of date."""
    source = setup_cell_source()
    return [p for p in _notebooks(folder) if insert_setup_cell(json.loads(p.read_text()), source)]


def environment_yaml(pyproject: Path = PYPROJECT) -> str:
    """``environment.yml`` for conda and Binder: nrc's dependencies and its ``book`` extra.

    Names map to conda-forge (``torch`` -> ``pytorch-cpu``: a CPU build, no CUDA solve); the
    version bounds are pyproject's. nrc itself is installed by ``postBuild`` (Binder copies the
    repository only after building this environment).
    """
    lines = [
        "# Generated from pyproject.toml by `python -m nrc_companion.launch --environment environment.yml`;",
        "# do not edit (tests/test_launch.py fails when the two drift).",
        "# conda / Binder, CPU only. Then install nrc: `pip install --no-deps -e .` (Binder: postBuild).",
        "name: nrc",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={_ENV_PYTHON}",
        "  - pip",
    ]
    for req in requirements(pyproject=pyproject) + requirements("book", pyproject=pyproject):
        name, spec = _split(req)
        lines.append(f'  - "{_CONDA_NAMES.get(name.lower(), name.lower())}{spec}"')
    return "\n".join(lines) + "\n"


#: What a dataset name costs to fetch (compressed download size).
_DATA_FETCHED = {"mnist": "MNIST (11 MB)", "fashion-mnist": "Fashion-MNIST (30 MB)",
                 "cifar10": "CIFAR-10 (163 MB)"}
TABLE_BEGIN = "<!-- begin: python -m nrc_companion.launch --table -->"
TABLE_END = "<!-- end: python -m nrc_companion.launch --table -->"


def _datasets(values: list) -> str:
    names = set()
    for v in values:
        if v is not None:
            names.update(v if isinstance(v, (list, tuple)) else [v])
    fetched = [_DATA_FETCHED[n] for n in sorted(names) if n in _DATA_FETCHED]
    return ", ".join(fetched) or "nothing (synthetic)"


def notebook_table(notebooks: Path = REPO_ROOT / "notebooks",
                   profiles: Path = REPO_ROOT / "profiles") -> str:
    """Markdown table: each notebook's Colab and Binder links and the data it downloads.

    The data come from the notebook's ``dataset``/``datasets`` parameter: its default and the
    ``smoke`` profile's value, and separately the ``full`` and the ``paper`` profile's values.
    """
    import yaml

    from .profiles import notebook_parameters

    profile = {p: (yaml.safe_load((profiles / f"{p}.yaml").read_text()) or {}).get("notebooks", {})
               for p in ("smoke", "full", "paper")}
    rows = ["| notebook | open | data it downloads (defaults, `smoke`) | with `full` | with `paper` |",
            "| --- | --- | --- | --- | --- |"]
    for path in _notebooks(notebooks):
        name, params = path.stem, notebook_parameters(path)
        keys = [k for k in ("dataset", "datasets") if k in params]
        default = [params[k].default for k in keys] + [profile["smoke"].get(name, {}).get(k) for k in keys]
        full, paper = ([profile[p].get(name, {}).get(k, params[k].default) for k in keys] for p in ("full", "paper"))
        rows.append(f"| `{name}` | [Colab]({colab_url(name)}) · [Binder]({binder_url(name)}) | "
                    f"{_datasets(default)} | {_datasets(full)} | {_datasets(paper)} |")
    return "\n".join(rows) + "\n"


def _with_table(text: str, table: str) -> str:
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise ValueError(f"no {TABLE_BEGIN} ... {TABLE_END} markers")
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{table}{TABLE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nrc_companion.launch", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, metavar="DIR",
                       help="insert or update the Colab set-up cell of every notebook in DIR")
    group.add_argument("--check", type=Path, metavar="DIR",
                       help="exit 1 when a notebook in DIR lacks the current set-up cell")
    group.add_argument("--environment", type=Path, metavar="FILE",
                       help="write environment.yml (conda/Binder) from pyproject.toml")
    group.add_argument("--table", type=Path, metavar="FILE",
                       help="rewrite the notebook table (links, data) between the markers in FILE")
    group.add_argument("--urls", action="store_true", help="print the URLs derived from _config.yml")
    args = parser.parse_args(argv)
    try:
        if args.write:
            changed = write_notebooks(args.write)
            print(f"updated {len(changed)} notebook(s)" + "".join(f"\n  {p}" for p in changed))
        elif args.check:
            stale = stale_notebooks(args.check)
            if stale:
                print("set-up cell missing or out of date in: " + ", ".join(p.name for p in stale)
                      + f"\nFix: python -m nrc_companion.launch --write {args.check}", file=sys.stderr)
                return 1
            print(f"every notebook in {args.check} has the current set-up cell")
        elif args.table:
            args.table.write_text(_with_table(args.table.read_text(), notebook_table()))
            print(f"updated the notebook table in {args.table}")
        elif args.environment:
            args.environment.write_text(environment_yaml())
            print(f"wrote {args.environment}")
        else:
            print(f"repository: {repository()[0]} (branch {repository()[1]})\nbook: {book_url()}\n"
                  f"binder: {binder_url()}\ncolab: {colab_url('NAME')}")
    except (OSError, ValueError) as err:
        print(f"python -m nrc_companion.launch: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
