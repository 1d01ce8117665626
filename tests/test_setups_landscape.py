"""The landscape group's set-up (E4, E4b, E5) and its small library functions, against independent computations."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import nrc
from nrc import landscape
from nrc.cache import ResultStore
from nrc_companion import setups

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _parameters(stem: str) -> dict:
    """The defaults of a notebook's ``parameters`` cell, as a namespace."""
    nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    ns: dict = {}
    exec("".join(cell["source"]), ns)
    ns.pop("__builtins__", None)
    return ns


def _np_forward(params: dict, x: np.ndarray) -> np.ndarray:
    """Bias-free ReLU MLP in numpy: ``x W1^T -> relu -> ... -> W_L``."""
    names = sorted((k for k in params if k.startswith("W")), key=lambda k: int(k[1:]))
    h = x
    for i, k in enumerate(names):
        h = h @ params[k].T
        if i < len(names) - 1:
            h = np.maximum(h, 0.0)
    return h


def _net(seed: int = 0):
    data = nrc.make_gaussian_mixture(num_classes=3, dim=5, per_class=4, seed=seed)
    arch = nrc.Architecture((5, 7, 6, 3), activation="relu", bias=False)
    p = nrc.init_params(arch, [seed], dtype=torch.float64)
    params = {k: v[0] for k, v in p.items()}
    return arch, params, data.x_train.to(torch.float64), data.y_train


def _np_objective(params, x, y, lam):
    f = _np_forward(params, x)
    t = np.eye(f.shape[1])[y]
    return 0.5 * ((f - t) ** 2).sum(1).mean() + 0.5 * lam * sum((v ** 2).sum() for v in params.values())


def test_fit_matches_numpy():
    arch, params, x, y = _net()
    got = landscape.fit(arch, params, x, y, loss="mse")
    pn = {k: v.numpy() for k, v in params.items()}
    f = _np_forward(pn, x.numpy())
    assert got["train_acc"] == pytest.approx(float((f.argmax(1) == y.numpy()).mean()))
    assert got["train_loss"] == pytest.approx(_np_objective(pn, x.numpy(), y.numpy(), 0.0), rel=1e-12)


def test_objective_and_gradient_norm_matches_finite_differences():
    arch, params, x, y = _net(1)
    lam = 0.05
    value, gn = landscape.objective_and_gradient_norm(arch, params, x, y, lam, loss="mse")
    pn = {k: v.numpy().copy() for k, v in params.items()}
    xn, yn = x.numpy(), y.numpy()
    assert value == pytest.approx(_np_objective(pn, xn, yn, lam), rel=1e-12)
    sq, h = 0.0, 1e-6
    for k, v in pn.items():
        for idx in np.ndindex(v.shape):
            old = v[idx]
            v[idx] = old + h
            up = _np_objective(pn, xn, yn, lam)
            v[idx] = old - h
            down = _np_objective(pn, xn, yn, lam)
            v[idx] = old
            sq += ((up - down) / (2 * h)) ** 2
    assert gn == pytest.approx(np.sqrt(sq), rel=1e-5)
    assert all(not t.requires_grad for t in params.values())  # the input is left untouched


def test_ridge_collapse_values_match_closed_form():
    rng = np.random.default_rng(0)
    K, n, d, lam = 3, 5, 4, 0.1
    labels = np.repeat(np.arange(K), n)
    Z = rng.normal(size=(K * n, d)) + 2 * rng.normal(size=(K, d))[labels]
    factors = [0.0, 0.5, 1.0, 2.0]
    got = landscape.ridge_collapse_values(torch.tensor(Z), torch.tensor(labels), K, lam, factors)
    E = np.eye(K)[labels]
    M = np.stack([Z[labels == k].mean(0) for k in range(K)])
    R = Z - E @ M
    N = len(labels)
    for s, v in zip(factors, got):
        Zs = E @ M + s * R
        W = np.linalg.solve(Zs.T @ Zs + lam * N * np.eye(d), Zs.T @ E).T
        ref = 0.5 * ((Zs @ W.T - E) ** 2).sum() / N + 0.5 * lam * (W ** 2).sum()
        assert v == pytest.approx(ref, rel=1e-10)
    assert got == sorted(got)  # non-decreasing in s


def test_group_minima():
    sols = [{"value": v} for v in (1.0, 1.00005, 1.5, 1.50001, 1.50002, 3.0)]
    groups = landscape.group_minima(sols, 1e-4)
    assert [[s["value"] for s in g] for g in groups] == [[1.0, 1.00005], [1.5, 1.50001, 1.50002], [3.0]]
    assert landscape.group_minima([], 1e-4) == []


def test_e4_setup_keeps_its_cache_keys(tmp_path):
    """E4 trains at ``train_weight_decay`` with SGD alone: the same members and config as before the set-up."""
    ns = _parameters("e4_no_loss_barrier")
    nb = setups.prepare("e4_no_loss_barrier", ns)
    old_config = nrc.TrainConfig(loss=ns["loss"], epochs=ns["epochs"], batch_size=ns["batch_size"], lr=ns["lr"],
                                 momentum=ns["momentum"], schedule="cosine")
    old_members = nrc.grid(weight_decay=float(ns["train_weight_decay"]), seed=[int(s) for s in ns["seeds"]])
    old_data = nrc.make_gaussian_mixture(num_classes=ns["num_classes"], dim=ns["dim"], per_class=ns["per_class"],
                                         spread=ns["spread"], center_scale=ns["center_scale"], seed=ns["data_seed"])
    old_arch = nrc.Architecture((old_data.dim, *ns["hidden"], old_data.num_classes), activation="relu", bias=False)
    store = ResultStore(tmp_path)
    assert nb.members == old_members
    for m in old_members:
        assert (store.member_key(nb.arch, nb.config, nb.data, m)
                == store.member_key(old_arch, old_config, old_data, m))


@pytest.mark.parametrize("stem", ["e4b_dnc1_optimality", "e5_singular_value_forecast"])
def test_refined_setups_keep_their_cache_keys(tmp_path, stem):
    ns = _parameters(stem)
    nb = setups.prepare(stem, ns)
    steps = ns["refine_steps"]
    old_config = nrc.TrainConfig(loss=ns["loss"], epochs=ns["epochs"], batch_size=ns["batch_size"], lr=ns["lr"],
                                 momentum=ns["momentum"], schedule="cosine", refine="lbfgs" if steps > 0 else "none",
                                 refine_steps=steps, refine_dtype="float64")
    old_data = nrc.make_gaussian_mixture(num_classes=ns["num_classes"], dim=ns["dim"], per_class=ns["per_class"],
                                         spread=ns["spread"], seed=ns["data_seed"])
    old_arch = nrc.Architecture((old_data.dim, *ns["hidden"], old_data.num_classes), activation="relu",
                                bias=ns.get("bias", False))
    old_members = nrc.grid(weight_decay=sorted(float(w) for w in ns["weight_decays"]),
                           seed=[int(s) for s in ns["seeds"]])
    store = ResultStore(tmp_path)
    assert nb.members == old_members
    for m in old_members:
        assert (store.member_key(nb.arch, nb.config, nb.data, m)
                == store.member_key(old_arch, old_config, old_data, m))


def test_trained_starts_and_float64_training(tmp_path):
    data = nrc.make_gaussian_mixture(num_classes=3, dim=6, per_class=5, seed=0)
    arch = nrc.Architecture((6, 8, 3), activation="relu", bias=False)
    members = setups.members([0.0, 0.01], [0])
    config = setups.train_config("mse", epochs=3, batch_size=5, lr=0.05)
    nb = setups.Setup(name="test", params=None, device="cpu", store=ResultStore(tmp_path), data=data, arch=arch,
                      members=members, config=config)
    x, y = setups.float64_training(nb)
    assert x.dtype == torch.float64 and torch.equal(x, data.x_train.double()) and torch.equal(y, data.y_train)
    run = setups.trained_starts(nb)
    assert run.n_cached == 0 and run.seconds >= 0
    again = setups.trained_starts(nb)
    assert again.n_cached == len(members)
    assert [s["member"] for s in run.starts] == [m for m in range(len(members)) if not run.sweep.diverged[m]]
    for st in run.starts:
        W = {k: v[st["member"]].double().numpy() for k, v in run.sweep.params.items()}
        assert all(np.array_equal(st["params"][k].numpy(), W[k]) for k in W)
        f = _np_forward(W, x.numpy())
        assert st["train_acc"] == pytest.approx(float((f.argmax(1) == y.numpy()).mean()))
        assert st["train_loss"] == pytest.approx(_np_objective(W, x.numpy(), y.numpy(), 0.0), rel=1e-12)
        assert st["weight_decay"] == members[st["member"]]["weight_decay"]
