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
