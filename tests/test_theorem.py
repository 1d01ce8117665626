import numpy as np
import pytest
import torch

import nrc
from nrc.train import regularized_loss


@pytest.fixture(scope="module")
def trained():
    """SGD-trained (not stationary) tiny networks, two losses, with and without bias."""
    data = nrc.make_gaussian_mixture(num_classes=3, dim=8, per_class=20, spread=0.6, seed=2)
    out = {}
    for loss, bias in [("ce", True), ("mse", False)]:
        arch = nrc.Architecture((8, 12, 12, 3), bias=bias)
        sweep = nrc.train(arch, data, nrc.grid(weight_decay=[1e-3, 1e-2, 1e-1], seed=[0, 1]),
                          nrc.TrainConfig(loss=loss, epochs=8, batch_size=10), progress=False)
        out[loss] = (sweep, nrc.analyze(sweep, data))
    return data, out


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_gradient_term_matches_autograd(trained, loss):
    data, runs = trained
    sweep, analysis = runs[loss]
    params = {k: v.double().requires_grad_(True) for k, v in sweep.params.items()}
    wd = sweep.weight_decays()
    total = regularized_loss(sweep.arch, params, data.x_train.double(), data.y_train, wd, loss,
                             sweep.config.regularize_bias).sum()
    grads = torch.autograd.grad(total, [params[s] for s in ("W1", "W2", "W3")])
    for l, g in enumerate(grads, start=1):
        got = analysis.sites[analysis.sites["site"] == f"W{l}"].sort_values("member")["grad_norm"].to_numpy()
        np.testing.assert_allclose(got, g.flatten(1).norm(dim=1).numpy(), rtol=1e-9)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_bound_forms_hold_and_are_ordered_at_any_parameter(trained, loss):
    _, runs = trained
    s = runs[loss][1].sites
    assert len(s) == 18
    assert (s["dK"] <= s["bound"] * (1 + 1e-12)).all()
    assert (s["bound"] <= s["bound_cs"] * (1 + 1e-12)).all()
    assert (s["bound_cs"] <= s["bound_a2"] * (1 + 1e-12)).all()
    assert (s["bound"] <= s["bound_tcv1"] * (1 + 1e-12)).all()
    assert (s["dKm1"] <= s["bound_km1"] * (1 + 1e-12)).all()
    # Lemma A3 (TCV propagation) holds for any weights
    hidden = s.dropna(subset=["tcv2_out"])
    assert len(hidden) == 12
    assert (hidden["tcv2_out"] <= hidden["a3_bound"] * (1 + 1e-12)).all()


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_exact_identity_holds_at_any_parameter(trained, loss):
    # d_K(W - G/lambda) = d_K(Delta^T U)/(lambda N), whatever the parameter
    _, runs = trained
    s = runs[loss][1].sites
    assert s["identity_gap"].max() < 1e-8


def test_at_stationarity_bound_holds_and_identity_is_exact():
    data = nrc.make_gaussian_mixture(num_classes=4, dim=10, per_class=30, spread=0.7, seed=0)
    arch = nrc.Architecture((10, 32, 32, 32, 4))
    config = nrc.TrainConfig(loss="mse", epochs=0, refine="lbfgs", refine_steps=2000)
    sweep = nrc.train(arch, data, [{"weight_decay": 0.1}], config, progress=False)
    s = nrc.analyze(sweep, data).sites
    assert s["stationarity"].max() < 1e-4
    assert (s["dK"] <= s["bound"]).all()
    # at a stationary point G ~ 0, so d_K(W) ~ d_K(Delta^T Z)/(lambda N); both tiny here
    hidden = s[s["site"] != "W4"]
    np.testing.assert_allclose(hidden["dK"], hidden["dK_grad_form"], atol=1e-5)
    # DNC1-style collapse of the last hidden layer brings the hidden weights to rank <= K
    assert (hidden["rank_1e-3"] <= 4).all()


def test_kmeans_partition_gives_a_valid_bound(trained):
    data, runs = trained
    sweep, _ = runs["mse"]
    s = nrc.analyze(sweep, data, partition="kmeans").sites
    assert (s["dK"] <= s["bound"] * (1 + 1e-12)).all()


def test_analyze_model_on_user_module_agrees_with_analyze(trained):
    data, runs = trained
    sweep, analysis = runs["ce"]
    module = nrc.to_module(sweep.arch, sweep.params, member=2)
    own = nrc.analyze_model(module, data, loss="ce", weight_decay=sweep.members[2]["weight_decay"])
    ref = analysis.sites[analysis.sites["member"] == 2].reset_index(drop=True)
    for col in ["dK", "bound", "nc1", "tcv2", "grad_norm"]:
        np.testing.assert_allclose(own.sites[col].to_numpy(), ref[col].to_numpy(), rtol=1e-6)
    long = own.tidy()
    assert set(long.columns) >= {"member", "site", "layer", "metric", "value"}
    with pytest.raises(ValueError, match="weight_decay must be > 0"):
        nrc.analyze_model(module, data, loss="ce", weight_decay=0.0)
