"""Tests for nrc_companion.profiles: parsing notebooks' parameters cells and validating run profiles.

Notebooks and profiles are written into ``tmp_path``; the last tests check the repository's real
``profiles/*.yaml`` against its real ``notebooks/*.ipynb``.
"""

from __future__ import annotations

from pathlib import Path

import json
import nbformat
import pytest
from conftest import write_notebook

from nrc_companion.profiles import (Parameter, Profile, ProfileError, find_profile, load_profile,
                                    notebook_parameters, validate_profile)

REPO = Path(__file__).resolve().parents[1]

PARAMS = '''\
# comment lines and blank lines are fine

epochs: int = 10  # epochs per member
lr: float = 0.1  # learning rate
name: str = "mlp"  # model name: with a colon # and a hash
use_bias: bool = True
weight_decays: list = [1e-4, 1e-3]  # grid
seed: int | None = None  # optional seed
grid: list = [  # a multi-line list
    1,
    2,
]
'''


@pytest.fixture
def repo(tmp_path):
    """A tiny repository: notebooks/{a,b}.ipynb and profiles/small.yaml."""
    write_notebook(tmp_path / "notebooks" / "a.ipynb", PARAMS)
    write_notebook(tmp_path / "notebooks" / "b.ipynb", 'profile: str = "custom"  # run profile\nn: int = 3')
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "small.yaml").write_text(
        "profile: small  # name\n"
        "description: tiny\n"
        "device: cpu\n"
        "notebooks:\n"
        "  b:\n"
        "    n: 5\n"
        "  a:\n"
        "    lr: 1e-2\n"
        "    epochs: 2\n"
        "    weight_decays: [0.1, 1]\n")
    return tmp_path


# ----------------------------------------------------------------------------------------------
# notebook_parameters


def test_notebook_parameters_types_defaults_and_help(tmp_path):
    params = notebook_parameters(write_notebook(tmp_path / "nb.ipynb", PARAMS))
    assert list(params) == ["epochs", "lr", "name", "use_bias", "weight_decays", "seed", "grid"]
    assert params["epochs"] == Parameter("epochs", "int", 10, "epochs per member", 3)
    assert params["lr"].type == "float" and params["lr"].default == 0.1 and params["lr"].help == "learning rate"
    assert params["name"].default == "mlp"
    assert params["name"].help == "model name: with a colon # and a hash"
    assert params["use_bias"].default is True and params["use_bias"].help == ""
    assert params["weight_decays"].default == [1e-4, 1e-3] and params["weight_decays"].help == "grid"
    assert params["seed"].type == "int | None" and params["seed"].default is None
    assert params["grid"].default == [1, 2] and params["grid"].help == "a multi-line list"


@pytest.mark.parametrize("source, fragment", [
    ("epochs: int = 10\nlr = 0.1", "line 2"),                 # not annotated
    ("epochs: int = 10\nlr: float", "line 2"),                # no default
    ("epochs: int = 10\n\nx: int = len([1])", "line 3"),      # not a literal
    ("import os", "line 1"),
    ("epochs: int = 'ten'", "line 1"),                         # default does not fit its type
    ("epochs: int = 1\nepochs: int = 2", "declared twice"),
    ("epochs: int = (", "syntax error"),
])
def test_notebook_parameters_bad_line(tmp_path, source, fragment):
    with pytest.raises(ValueError, match="bad.ipynb") as info:
        notebook_parameters(write_notebook(tmp_path / "bad.ipynb", source))
    assert fragment in str(info.value)


def test_notebook_parameters_needs_exactly_one_cell(tmp_path):
    with pytest.raises(ValueError, match="none.ipynb: no code cell tagged 'parameters'"):
        notebook_parameters(write_notebook(tmp_path / "none.ipynb", None))
    with pytest.raises(ValueError, match="two.ipynb: 2 code cells tagged 'parameters'"):
        notebook_parameters(write_notebook(tmp_path / "two.ipynb", "a: int = 1", extra_parameters="b: int = 2"))


@pytest.mark.parametrize("type_name, value, ok", [
    # a notebook the companion declares no model for is checked against its cell's types, with the
    # coercion rule of every other value (a number from text, a list from a scalar, never a bool for a number)
    ("int", 3, True), ("int", 3.0, True), ("int", 3.5, False), ("int", True, False), ("int", "3", True),
    ("float", 3, True), ("float", 0.5, True), ("float", False, False), ("float", "1e-4", True),
    ("float", float("inf"), False), ("bool", True, True), ("bool", "maybe", False), ("str", "x", True),
    ("str", 1, False), ("list", [1, 2], True), ("list", "1,2", True), ("list", 0, True),
    ("list[float]", [0.1], True), ("int | None", None, True), ("int | None", 2, True), ("int", None, False),
    ("Optional[str]", None, True), ("SomethingElse", object(), True),
])
def test_cell_types_of_an_undeclared_notebook(type_name, value, ok):
    from nrc_companion.config import check_all
    from nrc_companion.params import cell_model

    default = ([0.5] if "float" in type_name else [1, 2]) if type_name.startswith("list") else None
    model = cell_model("nb", {"p": (type_name, default, "")})
    assert (not check_all(model, {"p": value})[1]) is ok


def test_accepts_routes_by_shape():
    """``--set refine_steps=0`` goes to a number parameter, not to a list one (and the reverse)."""
    assert Parameter("a", "int", 1).accepts(0) and not Parameter("a", "list", [1]).accepts(0)
    assert Parameter("a", "list", [1]).accepts([0]) and not Parameter("a", "int", 1).accepts([0])


# ----------------------------------------------------------------------------------------------
# load_profile / validate_profile


def test_load_profile_by_name_and_path(repo, monkeypatch):
    nbdir = repo / "notebooks"
    p = load_profile("small", notebooks_dir=nbdir)
    assert isinstance(p, Profile)
    assert (p.name, p.description, p.device) == ("small", "tiny", "cpu")
    assert list(p.notebooks) == ["b", "a"]                       # file order is the run order
    assert p.notebooks["a"]["lr"] == 0.01 and isinstance(p.notebooks["a"]["lr"], float)  # 1e-2 is a float
    assert load_profile(repo / "profiles" / "small.yaml", nbdir).notebooks == p.notebooks
    monkeypatch.chdir(repo)                                      # by name relative to the cwd too
    assert find_profile("small", notebooks_dir="elsewhere/notebooks") == Path("profiles/small.yaml").resolve()
    with pytest.raises(FileNotFoundError, match="available: small"):
        load_profile("nope", nbdir)


def test_load_profile_defaults_and_structure(repo):
    f = repo / "profiles" / "bare.yaml"
    f.write_text("notebooks:\n  a:\n  b: {}\n")
    p = load_profile(f, repo / "notebooks")
    assert p.name == "bare" and p.notebooks == {"a": {}, "b": {}}
    validate_profile(p, repo / "notebooks")                      # defaults everywhere: valid
    f.write_text("notebooks:\n  a: [1, 2]\n")
    with pytest.raises(ProfileError, match="a: parameters must be a mapping"):
        load_profile(f, repo / "notebooks")
    f.write_text("- just a list\n")
    with pytest.raises(ProfileError, match="must be a mapping"):
        load_profile(f, repo / "notebooks")


def test_validate_ok_returns_declared_parameters(repo):
    declared = validate_profile(load_profile("small", repo / "notebooks"), repo / "notebooks")
    assert set(declared) == {"a", "b"} and declared["b"]["profile"].help == "run profile"


def test_validate_collects_every_problem(repo):
    (repo / "profiles" / "bad.yaml").write_text(
        "profile: bad\n"
        "devices: cuda\n"                       # unknown top-level key
        "notebooks:\n"
        "  a:\n"
        "    epoch: 3\n"                        # unknown parameter (did you mean epochs?)
        "    lr: fast\n"                        # wrong type
        "    use_bias: maybe\n"                 # not a boolean
        "    epochs: true\n"                    # bool is not an int
        "    weight_decays: [0.1, x]\n"         # an item that is not a number
        "  zz_missing:\n"                       # no such notebook
        "    n: 1\n")                           # and notebook b is missing from the profile
    with pytest.raises(ProfileError) as info:
        validate_profile(load_profile("bad", repo / "notebooks"), repo / "notebooks")
    msg, problems = str(info.value), info.value.problems
    assert len(problems) == 8, msg
    assert "unknown top-level key 'devices'" in msg
    assert "a: unknown parameter 'epoch' (did you mean 'epochs'?); allowed: epochs, lr, name, use_bias, " in msg
    assert "a: parameter 'lr' = 'fast' is not allowed: expected a finite number" in msg
    assert "a: parameter 'use_bias' = 'maybe' is not allowed: expected a boolean (true or false)" in msg
    assert "a: parameter 'epochs' = True is not allowed: expected an integer" in msg
    assert "a: parameter 'weight_decays' = [0.1, 'x'] (item 1: 'x') is not allowed: expected a list of finite numbers" in msg
    assert "unknown notebook 'zz_missing'" in msg
    assert "notebook 'b'" in msg and "missing from the profile" in msg
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("notebook, values, needle", [
    ("t8_rank_vs_weight_decay", {"rank_tol": 0.05}, "parameter 'rank_tol' = 0.05 is not allowed: expected 0.01 or 0.001"),
    ("t2_rank_tcv_bound", {"weight_decays": [0.0, 0.1]}, "parameter 'weight_decays' = [0.0, 0.1] (item 0: 0.0) is "
                                                       "not allowed: expected a non-empty list of finite numbers > 0"),
    ("derivation_theorem_a", {"layer": 9}, "parameter 'layer' = 9 is not allowed: expected an integer in 1..4"),
    ("t1_stationarity", {"epoch": 3}, "unknown parameter 'epoch' (did you mean 'epochs'?)"),
])
def test_real_profile_values_are_checked_by_the_notebook_model(notebook, values, needle):
    """The type fits the cell (a float, a list, an int) but the model forbids the value: one line."""
    profile = load_profile("smoke", REPO / "notebooks")
    profile.notebooks[notebook] = {**profile.notebooks[notebook], **values}
    with pytest.raises(ProfileError) as info:
        validate_profile(profile, REPO / "notebooks")
    assert len(info.value.problems) == 1 and "\n" not in str(info.value)
    assert str(info.value).endswith(f"is invalid: {notebook}: {needle}" + str(info.value).split(needle, 1)[1])


def test_validate_reports_broken_parameters_cell(repo):
    write_notebook(repo / "notebooks" / "c.ipynb", "x = 1")
    p = load_profile("small", repo / "notebooks")
    p.notebooks["c"] = {}
    with pytest.raises(ProfileError, match=r"c.ipynb: parameters cell, line 1"):
        validate_profile(p, repo / "notebooks")


# ----------------------------------------------------------------------------------------------
# the repository's own profiles


REAL_PROFILES = sorted((REPO / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", REAL_PROFILES, ids=[p.stem for p in REAL_PROFILES])
def test_real_profile_is_valid(path):
    profile = load_profile(path, REPO / "notebooks")
    declared = validate_profile(profile, REPO / "notebooks")
    assert set(declared) == set(profile.notebooks)


def test_real_profiles_exist():
    missing = [n for n in ("smoke", "paper") if not (REPO / "profiles" / f"{n}.yaml").is_file()]
    assert not missing, f"profiles/{{{','.join(missing)}}}.yaml missing: every notebook runs under smoke and paper"


# ----------------------------------------------------------------------------------------------
# the full profile: one shared MNIST sweep (issue 12)

SHARED_T = ("t2_rank_tcv_bound", "t3_lemma_a2_constant", "t4_any_partition", "t8_rank_vs_weight_decay")
SHARED_E = ("e1_rank_vs_weight_decay", "e6_low_rank_compression")


def _values(profile, name):
    from nrc_companion.profiles import notebook_parameters

    declared = notebook_parameters(REPO / "notebooks" / f"{name}.ipynb")
    return {**{k: p.default for k, p in declared.items()}, **profile.notebooks[name]}


def _member_keys(name, v):
    """The cache keys of a notebook's MNIST members, from the set-up the notebook itself builds
    (``setups.prepare``) and the training configuration of each of its losses."""
    from nrc_companion import setups

    nb = setups.prepare(name, dict(v))
    data = nb.data if nb.data is not None else setups.data_for(nb.params, dataset="mnist")  # E1: one per data set
    losses = v["losses"] if "losses" in v else [v["loss"]]
    configs = [setups.train_config(loss, epochs=v["epochs"], batch_size=v["batch_size"], lr=v["lr"],
                                   refine_steps=v["refine_steps"], momentum=v.get("momentum", 0.9))
               for loss in losses]
    return {k for c in configs for k in nb.store.member_keys(nb.arch, c, data, nb.members)}


def test_full_profile_notebooks_build_the_shared_sweep_through_setups():
    # _member_keys above builds what these notebooks build: their set-up through setups.prepare
    for name in SHARED_T + SHARED_E:
        cells = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert f'setups.prepare("{name}", globals())' in code, name


def test_full_profile_shares_one_mnist_sweep():
    pytest.importorskip("nrc_companion.setups")
    profile = load_profile("full", REPO / "notebooks")
    e1 = _values(profile, "e1_rank_vs_weight_decay")
    assert "mnist" in e1["datasets"] and "fashion-mnist" in e1["datasets"]
    try:
        reference = _member_keys("e1_rank_vs_weight_decay", e1)
    except FileNotFoundError as e:
        pytest.skip(f"MNIST not available offline: {e}")
    assert len(reference) == len(e1["weight_decays"]) * len(e1["seeds"])
    for name in SHARED_T + ("e6_low_rank_compression",):
        keys = _member_keys(name, _values(profile, name))
        assert keys <= reference, f"{name}: {len(keys - reference)} of {len(keys)} members not in E1's MNIST sweep"
    # T8 and E6 use the whole grid, T2-T4 its positive weight decays
    assert _member_keys("t8_rank_vs_weight_decay", _values(profile, "t8_rank_vs_weight_decay")) == reference


def test_full_profile_meets_the_minimum_scale():
    profile = load_profile("full", REPO / "notebooks")
    for name in SHARED_T + SHARED_E + ("e3_residual_networks",):
        v = _values(profile, name)
        hidden = v["hidden"] if "hidden" in v else v["widths"][1:-1]
        positive = sorted(float(w) for w in v["weight_decays"] if float(w) > 0)
        assert v["per_class"] >= 1000, name
        assert len(hidden) >= 3 and min(hidden) >= 256, name
        assert len(positive) >= 6 and positive[-1] / positive[0] >= 1000 * (1 - 1e-9), name  # three decades
        assert len(v["seeds"]) >= 3, name
    for name, v in profile.notebooks.items():
        if "seeds" in v:
            assert len(v["seeds"]) >= 3, f"{name}: fewer than 3 seeds"
