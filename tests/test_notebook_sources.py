"""Static checks on the source notebooks: stripped, one typed parameters cell, offline."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nrc_companion.profiles import load_profile, notebook_parameters

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

# every row of SPEC 3.7 (T1-T9) and 4.5 (E1-E7) has a notebook, plus the derivation
REQUIRED = {"derivation_theorem_a", "t1_stationarity", "t2_rank_tcv_bound", "t3_lemma_a2_constant",
            "t4_any_partition", "t5_corollary_a1_low_rank", "t6_tcv_propagation", "t7_balanced_norms",
            "t8_rank_vs_weight_decay", "t9_rank_vs_tcv", "e1_rank_vs_weight_decay", "e2_proportional_to_tcv",
            "e3_residual_networks", "e4_no_loss_barrier", "e4b_dnc1_optimality", "e5_singular_value_forecast",
            "e6_low_rank_compression", "e7_any_model", "e8_theorem_a_bites"}


def test_every_check_and_experiment_has_a_notebook():
    assert {p.stem for p in NOTEBOOKS} == REQUIRED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_notebook_is_stripped_and_offline(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    with_outputs = [i for i, c in enumerate(code) if c.get("outputs")]
    assert not with_outputs, f"{path.name}: code cells {with_outputs} carry outputs; strip them"
    assert all(c.get("execution_count") is None for c in code)
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters'"
    source = "\n".join("".join(c["source"]) for c in code)
    for pattern in (r"^\s*[!%]pip", r"matplotlib\.use\(", r"download\s*=\s*True", r"urlopen|requests\."):
        assert not re.search(pattern, source, re.M), f"{path.name}: forbidden pattern {pattern!r}"
    params = notebook_parameters(path)
    assert params, f"{path.name}: empty parameters cell"
    missing_help = [p.name for p in params.values() if not p.help]
    assert not missing_help, f"{path.name}: parameters without a help comment: {missing_help}"
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# ")


@pytest.mark.parametrize("name", ["smoke", "paper"])
def test_profiles_cover_every_notebook(name):
    profile = load_profile(name, notebooks_dir=REPO / "notebooks")
    assert set(profile.notebooks) == {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(path):
    """papermill's own parser (``--help-notebook``, type inference) drops a line holding two '='."""
    from papermill.translators import PythonTranslator

    import nbformat

    nb = nbformat.read(path, as_version=4)  # cell sources as strings, as papermill reads them
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    seen = {p.name for p in PythonTranslator.inspect(cell)}
    assert seen == set(notebook_parameters(path)), f"{path.name}: papermill cannot parse {set(notebook_parameters(path)) - seen}"


def _analysis_cells(path) -> list[str]:
    """The code a notebook runs beyond its parameters: every code cell but the parameters cell and
    the Colab / Binder set-up cell that nrc_companion.launch writes."""
    from nrc_companion.launch import is_setup_cell

    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and not is_setup_cell(c)
            and "parameters" not in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_helper(path):
    """Helpers live in the package (documented, tested, shared); a notebook only calls them."""
    import ast

    defined = []
    for src in _analysis_cells(path):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.append(f"{node.name} (line {node.lineno})")
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                defined.append(f"{ast.unparse(node.targets[0])} = lambda (line {node.lineno})")
    assert not defined, f"{path.name} defines {defined}: move them into nrc_companion (or nrc)"


#: Consecutive lines that two notebooks may not share: a longer run is a set-up or a step that
#: belongs in the package.
SHARED_RUN = 6


def _meaningful_lines(src: str) -> list[str]:
    """Lines that carry code: no blanks, comments, imports or lone brackets; white space folded."""
    out = []
    for line in src.splitlines():
        text = " ".join(line.split("#", 1)[0].split()) if not line.lstrip().startswith("#") else ""
        if not text or re.fullmatch(r"[\[\](){},:]+", text) or re.match(r"(import|from) \S", text):
            continue
        out.append(text)
    return out


def test_no_code_is_repeated_across_notebooks():
    seen: dict[tuple, str] = {}
    repeated = set()
    for path in NOTEBOOKS:
        runs = set()
        for src in _analysis_cells(path):
            lines = _meaningful_lines(src)
            runs |= {tuple(lines[i:i + SHARED_RUN]) for i in range(len(lines) - SHARED_RUN + 1)}
        for run in runs:
            if run in seen and seen[run] != path.stem:
                repeated.add((seen[run], path.stem, run[0]))
            seen.setdefault(run, path.stem)
    assert not repeated, "runs of {} lines shared by two notebooks (first line shown): {}".format(
        SHARED_RUN, sorted(repeated))
