"""The validation layer on the Python side: notebook parameters, metrics on bad arrays, models.

Expected values come from independent reasoning (0/0 -> nan, a rescaled loss -> a rescaled
weight decay), not from running the code under test.
"""
import math

import numpy as np
import pytest
import torch

from conftest import mixture, write_notebook

import nrc
from nrc_companion.config import ConfigError, check, field_defaults, field_types
from nrc_companion.params import MODELS, cell_model, validate_parameters

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------
# notebook parameters: the coercion rule, unit level (a fake kernel history)

PARAMS_CELL = ("weight_decays: list = [0.0, 0.001]  # grid\nrank_tol: float = 1e-2\nseeds: list = [0, 1]\n"
               "bias: bool = False\nepochs: int = 3\nname: str = 'x'\nhidden: list = [8, 8]")
# the model of that cell, as a notebook's model is declared in nrc_companion.params (run here and in a kernel)
MODEL_SRC = """\
from nrc_companion.config import Number
from nrc_companion.params import NotebookParameters, validate_parameters

class Example(NotebookParameters):
    weight_decays: list[Number] = [0.0, 0.001]
    rank_tol: Number = 1e-2
    seeds: list[int] = [0, 1]
    bias: bool = False
    epochs: int = 3
    name: str = "x"
    hidden: list[int] = [8, 8]
"""
#: The cell a notebook runs after its parameters cell: the model, then the check.
VALIDATE_CELL = MODEL_SRC + "validate_parameters(Example, globals())"
_scope: dict = {}
exec(MODEL_SRC, _scope)
Example = _scope["Example"]


def _namespace(injected: dict, extra_cell: str | None = None) -> dict:
    ns = {"weight_decays": [0.0, 0.001], "rank_tol": 1e-2, "seeds": [0, 1], "bias": False, "epochs": 3,
          "name": "x", "hidden": [8, 8]}
    ns.update(injected)
    cells = ["", PARAMS_CELL]
    if injected or extra_cell:
        cells.append(extra_cell or "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in injected.items()))
    cells.append("validate_parameters(Example, globals())")
    ns["In"] = cells
    return ns


@pytest.mark.parametrize("injected,expected", [
    ({"weight_decays": "[0.01, 0.1]"}, {"weight_decays": [0.01, 0.1]}),    # -p weight_decays "[0.01, 0.1]"
    ({"weight_decays": "0.01,0.1"}, {"weight_decays": [0.01, 0.1]}),
    ({"weight_decays": 1}, {"weight_decays": [1.0]}),                       # scalar -> list, int -> float
    ({"rank_tol": 0.001}, {"rank_tol": 0.001}),                             # -p rank_tol 1e-3
    ({"rank_tol": 1}, {"rank_tol": 1.0}),
    ({"rank_tol": "1e-3"}, {"rank_tol": 0.001}),
    ({"seeds": 0}, {"seeds": [0]}),                                         # -p seeds 0
    ({"bias": "no"}, {"bias": False}),
    ({"bias": "True"}, {"bias": True}),
    ({"epochs": 5.0}, {"epochs": 5}),
    ({"hidden": "[16, 16, 16]"}, {"hidden": [16, 16, 16]}),
])
def test_validate_parameters_coerces(injected, expected):
    ns = _namespace(injected)
    validate_parameters(Example, ns)
    for k, v in expected.items():
        assert ns[k] == v and type(ns[k]) is type(v)
        if isinstance(v, list):
            assert [type(a) for a in ns[k]] == [type(a) for a in v]


@pytest.mark.parametrize("injected,needles", [
    ({"epochs": "ten"}, ["'epochs'", "'ten'", "an integer", '-y "epochs: 3"']),
    ({"epochs": 2.5}, ["'epochs'", "2.5", "an integer"]),
    ({"rank_tol": float("inf")}, ["'rank_tol'", "inf", "finite number"]),
    ({"rank_tol": True}, ["'rank_tol'", "True"]),
    ({"weight_decays": "[0.1, abc]"}, ["'weight_decays'", "list of finite numbers", '-y "weight_decays: [0.0, 0.001]"']),
    ({"bias": "maybe"}, ["'bias'", "'maybe'", "boolean", '-y "bias: false"']),
    ({"name": 3}, ["'name'", "a string", "-y \"name: 'x'\""]),
    ({"seeds": "[0.5]"}, ["'seeds'", "list of integers"]),
])
def test_validate_parameters_rejects_with_one_line(injected, needles):
    with pytest.raises(ConfigError) as info:
        validate_parameters(Example, _namespace(injected))
    msg = str(info.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_validate_parameters_rejects_unknown_injected_name():
    ns = _namespace({}, extra_cell="# Parameters\nseed = 3\n")
    ns["seed"] = 3
    with pytest.raises(ConfigError, match=r"unknown parameter 'seed' \(did you mean 'seeds'\?\)"):
        validate_parameters(Example, ns)


def test_an_undeclared_cell_type_takes_none_where_its_annotation_does():
    model = cell_model("x", {"a": ("int | None", 1, ""), "b": ("Optional[float]", None, ""), "c": ("int", 0, "")})
    assert check(model, {"a": None}).a is None
    assert check(model, {"b": 2}).b == 2.0 and type(check(model, {"b": 2}).b) is float
    with pytest.raises(ConfigError, match="parameter 'c' = None is not allowed: expected an integer"):
        check(model, {"c": None})


# every notebook: its model is its parameters cell, and bad values get the one-line error


def _cell_base(type_name: str):
    return {"int": int, "float": float, "str": str, "bool": bool, "list": list}[type_name]


def _model_base(annotation):
    import typing

    from nrc_companion.config import unwrap_annotated

    base, _ = unwrap_annotated(annotation)
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        return type(typing.get_args(base)[0])
    return origin or base


NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_model_equals_its_parameters_cell(name):
    """Names and their order, defaults (value and type), help text and type of the cell = the model's."""
    from nrc_companion.profiles import notebook_parameters

    cell = notebook_parameters(REPO / "notebooks" / f"{name}.ipynb")
    model = MODELS[name]
    defaults, types = field_defaults(model), field_types(model)
    assert list(defaults) == list(cell), name
    for p in cell.values():
        assert defaults[p.name] == p.default and type(defaults[p.name]) is type(p.default), (name, p.name)
        assert model.model_fields[p.name].description == p.help, (name, p.name)
        assert _model_base(types[p.name]) is _cell_base(p.type), (name, p.name)
    model()  # the defaults pass the model's own constraints and rules
    assert set(MODELS) == set(NOTEBOOKS)


@pytest.mark.parametrize("name,values,needles", [
    ("t1_stationarity", {"weight_decays": [0.0, 0.1]}, ["parameter 'weight_decays'", "(item 0: 0.0)", "> 0"]),
    ("t1_stationarity", {"losses": ["mse", "hinge"]}, ["'losses'", "'hinge'", "'mse', 'ce'"]),
    ("t1_stationarity", {"device": "tpu"}, ["'device'", "'tpu'", "'auto', 'cpu' or 'cuda'"]),
    ("t8_rank_vs_weight_decay", {"rank_tol": 0.05}, ["'rank_tol'", "0.05", "0.01 or 0.001"]),
    ("t8_rank_vs_weight_decay", {"weight_decays": [0.1, 0.1]}, ["'weight_decays'", "at least 2 distinct"]),
    ("derivation_theorem_a", {"layer": 5}, ["'layer' = 5", "1..4"]),
    ("derivation_theorem_a", {"hidden": [8, 8], "layer": 3}, None),                # a rule sees both values
    ("e2_proportional_to_tcv", {"dim": 5}, ["'dim' = 5", "> every K (here > 10)"]),
    ("e2_proportional_to_tcv", {"spreads": [0.1, 0.2, 0.2, 0.4]}, ["'spreads'", "none repeated"]),
    ("e4_no_loss_barrier", {"penalties": [1.0, 0.1]}, ["'penalties'", "increasing"]),
    ("e4b_dnc1_optimality", {"fact_dim": 10}, ["'fact_dim' = 10", ">= fact_classes * fact_per_class = 32"]),
    ("e4b_dnc1_optimality", {"spread_grid": [0.0, 0.5]}, ["'spread_grid'", "holding 0 and 1"]),
    ("e6_low_rank_compression", {"widths": [784, 128, 10]}, ["'widths'", "at least 2 hidden widths"]),
    ("e6_low_rank_compression", {"test_per_class": 0}, ["'test_per_class' = 0", "-1"]),
    ("e3_residual_networks", {"widths": [784, 64, 128, 10]}, ["'widths'", "equal hidden widths"]),
    ("e1_rank_vs_weight_decay", {"datasets": ["mnist", "mnist"]}, ["'datasets'", "distinct"]),
    ("e8_theorem_a_bites", {"checkpoints": [0, 100]}, ["'checkpoints'", "[0, epochs) = [0, 100)"]),
    ("t6_tcv_propagation", {"early_epochs": 5, "epochs": 4}, ["'early_epochs' = 5", "1..4"]),
    ("t9_rank_vs_tcv", {"tcv_column": "tcv3"}, ["'tcv_column'", "'tcv1', 'tcv2' or 'tcv_ratio'"]),
    ("t2_rank_tcv_bound", {"seeds": "[0, 1"}, ["'seeds' = '[0, 1'", "a non-empty list of integers >= 0"]),
])
def test_bad_notebook_values_are_one_line_naming_the_parameter(name, values, needles):
    ns = {**field_defaults(MODELS[name]), **values}
    if needles is None:
        validate_parameters(name, ns)
        assert all(ns[k] == v for k, v in values.items())
        return
    with pytest.raises(ConfigError) as info:
        validate_parameters(name, ns)
    msg = str(info.value)
    assert "\n" not in msg and "is not allowed: expected" in msg and "pass it with papermill as -y" in msg
    for n in needles:
        assert n in msg, msg


def _papermill_cli(tmp_path, *args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(nrc.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "papermill", "t.ipynb", "o.ipynb", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_papermill_cli_values_as_people_type_them(tmp_path):
    """A real papermill run: -p values arrive as strings/floats/ints and are coerced in the kernel."""
    write_notebook(tmp_path / "t.ipynb", PARAMS_CELL, VALIDATE_CELL,
                   "import json\nopen('got.json', 'w').write(json.dumps([weight_decays, rank_tol, seeds, bias]))")
    r = _papermill_cli(tmp_path, "-p", "weight_decays", "[0.01, 0.1]", "-p", "rank_tol", "1e-3",
                       "-p", "seeds", "0", "-p", "bias", "no")
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    assert json.loads((tmp_path / "got.json").read_text()) == [[0.01, 0.1], 0.001, [0], False]


def test_papermill_cli_unknown_parameter_fails_the_run(tmp_path):
    write_notebook(tmp_path / "t.ipynb", PARAMS_CELL, VALIDATE_CELL, "open('ran', 'w').close()")
    r = _papermill_cli(tmp_path, "-p", "seed", "3")
    assert r.returncode != 0
    assert "unknown parameter 'seed' (did you mean 'seeds'?)" in r.stdout + r.stderr
    assert not (tmp_path / "ran").exists()


def test_no_notebook_checks_its_parameters_inline():
    """One way to check: the model. No ``raise ValueError`` is left in a notebook's code cells."""
    import json

    for name in NOTEBOOKS:
        cells = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "raise ValueError" not in code, name
        # the notebook's parameters go through its model (setups.prepare calls validate_parameters)
        assert (f'setups.prepare("{name}", globals()' in code
                or f'validate_parameters("{name}", globals())' in code), name


# ------------------------------------------------------------------------------------------------
# metrics on bad arrays


def test_nan_and_inf_inputs_raise_naming_the_argument():
    with pytest.raises(ValueError, match="^s contains 1 non-finite"):
        nrc.numerical_rank([np.nan, 1.0])
    with pytest.raises(ValueError, match="^a contains 1 non-finite"):
        nrc.svdvals(np.array([[1.0, np.inf], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="^a contains"):
        nrc.svdvals(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="^s contains"):
        nrc.energy_rank([1.0, np.inf])
    with pytest.raises(ValueError, match="^s contains"):
        nrc.dist_to_rank([1.0, np.nan], 1)
    Z = torch.randn(6, 3, dtype=torch.float64)
    Z[2, 1] = float("nan")
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    for f in (nrc.nc1, nrc.nc2, nrc.tcv, nrc.within_total_ratio):
        with pytest.raises(ValueError, match="^Z contains 1 non-finite"):
            f(Z, y, 3)
    with pytest.raises(ValueError, match="^Z contains 1 non-finite"):
        nrc.kmeans(Z, 3)


def test_fewer_than_two_classes_is_a_value_error_everywhere():
    Z = torch.randn(6, 3, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    for f in (nrc.nc1, nrc.nc2, nrc.tcv, nrc.within_total_ratio):
        with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
            f(Z, y, 1)
    with pytest.raises(ValueError, match="num_clusters must be an integer in"):
        nrc.kmeans(Z, 1)


def test_empty_class_rule():
    torch.manual_seed(0)
    Z = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 2, 2, 2])  # class 1 has no sample
    for f in (nrc.nc1, nrc.nc2):
        with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
            f(Z, y, 3)
    # sums over samples: the same as the partition without the empty group (independent value)
    assert torch.allclose(nrc.tcv(Z, y, 3), nrc.tcv(Z, (y == 2).long(), 2))
    assert torch.allclose(nrc.within_total_ratio(Z, y, 3), nrc.within_total_ratio(Z, (y == 2).long(), 2))


def test_constant_features_are_nan_ratios_and_zero_tcv():
    Z = torch.ones(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    assert math.isnan(float(nrc.nc1(Z, y, 3)))
    assert math.isnan(float(nrc.within_total_ratio(Z, y, 3)))
    assert all(math.isnan(float(v)) for v in nrc.nc2(Z, y, 3).values())
    assert float(nrc.tcv(Z, y, 3)) == 0.0


def test_kmeans_never_returns_an_empty_cluster():
    Z = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 1.0]], dtype=torch.float64)  # 2 distinct rows, 3 clusters
    assign = nrc.kmeans(Z, 3)
    assert sorted(torch.bincount(assign, minlength=3).tolist())[0] >= 1
    assert int(assign[5]) != int(assign[0]) or torch.bincount(assign).numel() == 3


def test_architecture_rejects_non_integer_widths():
    with pytest.raises(ValueError, match="widths must all be integers, got 8.5"):
        nrc.Architecture((4, 8.5, 3))
    assert nrc.Architecture((4, 8.0, 3)).widths == (4, 8, 3)


# ------------------------------------------------------------------------------------------------
# analyze_model: K checks and loss conventions


def test_analyze_model_checks_k_against_model_and_data():
    data = mixture(dim=5, per_class=8)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(8, 4, bias=False))
    with pytest.raises(ValueError, match="the model has 4 outputs but the data have 3 classes"):
        nrc.analyze_model(model, data, loss="ce", weight_decay=0.1)
    model3 = torch.nn.Sequential(torch.nn.Linear(5, 8, bias=False), torch.nn.ReLU(),
                                 torch.nn.Linear(8, 3, bias=False))
    keep = data.y_train < 2
    sub = nrc.Dataset(data.x_train[keep], data.y_train[keep], data.x_test[:0], data.y_test[:0], num_classes=3,
                      name="two")
    with pytest.raises(ValueError, match=r"none for class\(es\) \[2\]"):
        nrc.analyze_model(model3, sub, loss="ce", weight_decay=0.1)
    with pytest.raises(ValueError, match="weight_decay must be > 0 and finite"):
        nrc.analyze_model(model3, data, loss="ce", weight_decay=float("inf"))
    with pytest.raises(ValueError, match="loss must be"):
        nrc.analyze_model(model3, data, loss=torch.nn.L1Loss(), weight_decay=0.1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_analyze_model_with_torch_mse_loss_gets_the_stationary_bound(reduction):
    """A model fitted to a stationary point of nn.MSELoss + lambda/2 ||W||^2: with the loss object the
    measured gradient residual is ~0; with nrc's own "mse" convention and the same lambda it is not."""
    data = mixture(dim=5, per_class=8)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3, bias=False)).double()
    lam = 0.05 if reduction == "mean" else 1.0
    lossf = torch.nn.MSELoss(reduction=reduction)
    x, t = data.x_train.double(), torch.nn.functional.one_hot(data.y_train, 3).double()
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=400, tolerance_grad=1e-14,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = lossf(model(x), t) + lam / 2 * sum((p ** 2).sum() for p in model.parameters())
        value.backward()
        return value

    for _ in range(3):
        opt.step(closure)
    right = nrc.analyze_model(model, data, loss=lossf, weight_decay=lam)
    wrong = nrc.analyze_model(model, data, loss="mse", weight_decay=lam)
    assert right.sites["stationarity"].max() < 1e-5
    assert wrong.sites["stationarity"].min() > 0.1
    assert (right.sites["dK"] <= right.sites["bound"] * (1 + 1e-9)).all()
    scale = 3 / 2 if reduction == "mean" else 1 / (2 * data.n_train)
    assert right.members["weight_decay"].iloc[0] == pytest.approx(lam * scale)
    assert right.members["weight_decay_given"].iloc[0] == lam


def test_analyze_model_cross_entropy_object_equals_string():
    data = mixture(dim=5, per_class=8)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(8, 3, bias=False))
    a = nrc.analyze_model(model, data, loss=torch.nn.CrossEntropyLoss(), weight_decay=0.1)
    b = nrc.analyze_model(model, data, loss="ce", weight_decay=0.1)
    assert np.allclose(a.sites["bound"], b.sites["bound"])
