"""The validation layer on the Python side: notebook parameters, metrics on bad arrays, models.

Expected values come from independent reasoning (0/0 -> nan, a rescaled loss -> a rescaled
weight decay), not from running the code under test.
"""
import math

import numpy as np
import pytest
import torch

import nrc
from nrc_companion.config import ConfigError, coerce_parameter, typed_parameters

# ------------------------------------------------------------------------------------------------
# notebook parameters: coercion rule, unit level (a fake kernel history)

PARAMS_CELL = ("weight_decays: list = [0.0, 0.001]  # grid\nrank_tol: float = 1e-2\nseeds: list = [0, 1]\n"
               "bias: bool = False\nepochs: int = 3\nname: str = 'x'\nhidden: list = [8, 8]")


def _namespace(injected: dict, extra_cell: str | None = None) -> dict:
    ns = {"weight_decays": [0.0, 0.001], "rank_tol": 1e-2, "seeds": [0, 1], "bias": False, "epochs": 3,
          "name": "x", "hidden": [8, 8]}
    ns.update(injected)
    cells = ["", PARAMS_CELL]
    if injected or extra_cell:
        cells.append(extra_cell or "# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in injected.items()))
    cells.append("nrc_companion.typed_parameters(globals())")
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
def test_typed_parameters_coerces(injected, expected):
    ns = _namespace(injected)
    typed_parameters(ns)
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
def test_typed_parameters_rejects_with_one_line(injected, needles):
    with pytest.raises(ConfigError) as info:
        typed_parameters(_namespace(injected))
    msg = str(info.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_typed_parameters_rejects_unknown_injected_name():
    ns = _namespace({}, extra_cell="# Parameters\nseed = 3\n")
    ns["seed"] = 3
    with pytest.raises(ConfigError, match=r"unknown parameter 'seed' \(did you mean 'seeds'\?\)"):
        typed_parameters(ns)


def test_coerce_parameter_optional():
    assert coerce_parameter("x", "int | None", None) is None
    assert coerce_parameter("x", "Optional[float]", 2) == 2.0


def _notebook(path, param_src, body):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell(param_src)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import nrc_companion\nnrc_companion.typed_parameters(globals())"),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))


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
    _notebook(tmp_path / "t.ipynb", PARAMS_CELL,
              "import json\nopen('got.json', 'w').write(json.dumps([weight_decays, rank_tol, seeds, bias]))")
    r = _papermill_cli(tmp_path, "-p", "weight_decays", "[0.01, 0.1]", "-p", "rank_tol", "1e-3",
                       "-p", "seeds", "0", "-p", "bias", "no")
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    assert json.loads((tmp_path / "got.json").read_text()) == [[0.01, 0.1], 0.001, [0], False]


def test_papermill_cli_unknown_parameter_fails_the_run(tmp_path):
    _notebook(tmp_path / "t.ipynb", PARAMS_CELL, "open('ran', 'w').close()")
    r = _papermill_cli(tmp_path, "-p", "seed", "3")
    assert r.returncode != 0
    assert "unknown parameter 'seed' (did you mean 'seeds'?)" in r.stdout + r.stderr
    assert not (tmp_path / "ran").exists()


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


def _data(K=3):
    return nrc.make_gaussian_mixture(num_classes=K, dim=5, per_class=8, spread=0.5, seed=0)


def test_analyze_model_checks_k_against_model_and_data():
    data = _data(3)
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
    data = _data(3)
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
    data = _data(3)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(8, 3, bias=False))
    a = nrc.analyze_model(model, data, loss=torch.nn.CrossEntropyLoss(), weight_decay=0.1)
    b = nrc.analyze_model(model, data, loss="ce", weight_decay=0.1)
    assert np.allclose(a.sites["bound"], b.sites["bound"])
