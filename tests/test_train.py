import math

import numpy as np
import pytest
import torch

from conftest import mixture

import nrc
from nrc.train import data_order


def _reference(arch, data, member, config, steps_limit=None):
    """One ordinary nn.Module trained with torch.optim.SGD on the same data order."""
    params = nrc.init_params(arch, [member["seed"]], init_scale=config.init_scale)
    model = nrc.to_module(arch, params, 0)
    opt = torch.optim.SGD(model.parameters(), lr=member["lr"], momentum=config.momentum,
                          weight_decay=member["weight_decay"])
    N = data.x_train.shape[0]
    B = min(config.batch_size, N)
    steps = N // B
    total = max(1, config.epochs * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    gen = data_order(member["seed"])
    for _ in range(config.epochs):
        perm = torch.randperm(N, generator=gen)
        for b in range(steps):
            idx = perm[b * B:(b + 1) * B]
            out = model(data.x_train[idx])
            if config.loss == "ce":
                loss = torch.nn.functional.cross_entropy(out, data.y_train[idx])
            else:
                t = torch.nn.functional.one_hot(data.y_train[idx], arch.num_classes).float()
                loss = 0.5 * ((out - t) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model


@pytest.mark.parametrize("loss,bias", [("ce", True), ("mse", False)])
def test_stacked_trainer_reproduces_independent_modules(loss, bias):
    data = mixture()
    arch = nrc.Architecture((6, 16, 16, 3), activation="relu", bias=bias)
    config = nrc.TrainConfig(loss=loss, epochs=4, batch_size=8, lr=0.05, momentum=0.9)
    members = [{"weight_decay": 1e-3, "seed": 3, "lr": 0.05}, {"weight_decay": 3e-2, "seed": 7, "lr": 0.1}]
    sweep = nrc.train(arch, data, members, config, device="cpu", progress=False)
    for m, member in enumerate(members):
        ref = _reference(arch, data, member, config)
        linears = [l for l in ref if isinstance(l, torch.nn.Linear)]
        for l, lin in enumerate(linears, start=1):
            torch.testing.assert_close(sweep.params[f"W{l}"][m], lin.weight.detach(), rtol=1e-5, atol=1e-6)
            if bias:
                torch.testing.assert_close(sweep.params[f"b{l}"][m], lin.bias.detach(), rtol=1e-5, atol=1e-6)
    # and the members really moved away from their initialisation
    init = nrc.init_params(arch, [3, 7])
    assert float((sweep.params["W1"] - init["W1"]).abs().max()) > 1e-3


def test_member_result_does_not_depend_on_its_companions():
    data = mixture()
    arch = nrc.Architecture((6, 12, 3))
    config = nrc.TrainConfig(epochs=3, batch_size=8)
    alone = nrc.train(arch, data, [{"weight_decay": 1e-3, "seed": 5}], config, progress=False)
    crowd = nrc.train(arch, data, nrc.grid(weight_decay=[0.0, 1e-3, 1e-1], seed=[4, 5]), config, progress=False)
    idx = [i for i, m in enumerate(crowd.members) if m["weight_decay"] == 1e-3 and m["seed"] == 5][0]
    for k in alone.params:
        torch.testing.assert_close(crowd.params[k][idx], alone.params[k][0], rtol=1e-6, atol=1e-7)


def test_weight_decay_shrinks_weights_and_per_member_data():
    arch = nrc.Architecture((6, 12, 3))
    config = nrc.TrainConfig(epochs=5, batch_size=8)
    datasets = [mixture(seed=0), mixture(seed=1)]
    sweep = nrc.train(arch, datasets, [{"weight_decay": 0.0}, {"weight_decay": 0.5}], config, progress=False)
    norms = sweep.params["W1"].flatten(1).norm(dim=1)
    assert norms[1] < norms[0]
    assert sweep.history["loss"].shape == (5, 2)


def test_diverged_member_is_marked_and_isolated():
    data = mixture()
    arch = nrc.Architecture((6, 12, 3))
    config = nrc.TrainConfig(loss="mse", epochs=3, batch_size=8, schedule="constant")
    members = [{"weight_decay": 1e-3, "lr": 0.05}, {"weight_decay": 1e-3, "lr": 1e4}]
    sweep = nrc.train(arch, data, members, config, progress=False)
    assert sweep.diverged.tolist() == [False, True]
    assert torch.isfinite(sweep.params["W1"][0]).all()
    assert torch.isnan(sweep.params["W1"][1]).all()
    solo = nrc.train(arch, data, members[:1], config, progress=False)
    torch.testing.assert_close(sweep.params["W2"][0], solo.params["W2"][0])
    analysis = nrc.analyze(sweep, data)
    assert analysis.members["diverged"].tolist() == [False, True]
    assert set(analysis.sites["member"]) == {0}


def test_killed_sweep_resumes_from_checkpoint(tmp_path):
    data = mixture()
    arch = nrc.Architecture((6, 12, 3))
    members = nrc.grid(weight_decay=[1e-3, 1e-2], seed=0)
    full = nrc.train(arch, data, members, nrc.TrainConfig(epochs=6, batch_size=8), progress=False)
    ckpt = tmp_path / "run.pt"

    class Killed(Exception):
        pass

    def kill_after_four(epoch, params, diverged):
        if epoch == 3:
            raise Killed

    config = nrc.TrainConfig(epochs=6, batch_size=8, checkpoint_every=2)
    with pytest.raises(Killed):
        nrc.train(arch, data, members, config, checkpoint=ckpt, progress=False, callback=kill_after_four)
    assert ckpt.exists()
    seen = []
    resumed = nrc.train(arch, data, members, config, checkpoint=ckpt, progress=False,
                        callback=lambda e, p, d: seen.append(e))
    assert seen == [4, 5]  # epochs 0-3 were not redone (checkpoint at epoch 4)
    assert not ckpt.exists()
    for k in full.params:
        torch.testing.assert_close(resumed.params[k], full.params[k])
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"])


@pytest.mark.parametrize("kwargs,match", [
    ({"loss": "hinge"}, "loss must be one of"),
    ({"epochs": -1}, "epochs must be >= 0"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"refine": "adam"}, "refine must be one of"),
    ({"lr": 0}, "lr must be > 0"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nrc.TrainConfig(**kwargs)


def test_member_and_architecture_validation():
    data = mixture()
    arch = nrc.Architecture((6, 8, 3))
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        nrc.train(arch, data, [{"weight_decay": -1.0}], progress=False)
    with pytest.raises(ValueError, match="unknown scalar"):
        nrc.train(arch, data, [{"weight_decay": 0.1, "dropout": 0.5}], progress=False)
    with pytest.raises(ValueError, match="3 classes but the network has 4"):
        nrc.train(nrc.Architecture((6, 8, 4)), data, [{"weight_decay": 0.1}], progress=False)
    with pytest.raises(ValueError, match="widths must all be >= 1"):
        nrc.Architecture((6, 0, 3))
    with pytest.raises(ValueError, match="activation must be one of"):
        nrc.Architecture((6, 8, 3), activation="swish")
    with pytest.raises(ValueError, match="residual network"):
        nrc.Architecture((6, 8, 9, 3), residual=True)


def test_lbfgs_refinement_reaches_stationarity():
    # the setting of SPEC section 4.4 (K=4, n=30, d0=10, MLP 10-32-32-32-4, MSE, no bias)
    data = nrc.make_gaussian_mixture(num_classes=4, dim=10, per_class=30, spread=0.7, seed=0)
    arch = nrc.Architecture((10, 32, 32, 32, 4))
    config = nrc.TrainConfig(loss="mse", epochs=0, refine="lbfgs", refine_steps=2000)
    sweep = nrc.train(arch, data, [{"weight_decay": 0.1}], config, progress=False)
    assert sweep.params["W1"].dtype == torch.float64
    sites = nrc.analyze(sweep, data).sites
    assert sites["stationarity"].max() < 1e-4
    # Lemma A4: balanced Frobenius norms at stationarity (ReLU, no bias)
    assert sites["frob"].std() / sites["frob"].mean() < 1e-4


def test_residual_network_trains_and_has_w_and_v_sites():
    data = mixture()
    arch = nrc.Architecture((6, 10, 10, 10, 3), residual=True, bias=True)
    sweep = nrc.train(arch, data, [{"weight_decay": 1e-2}], nrc.TrainConfig(epochs=3, batch_size=8), progress=False)
    sites = nrc.analyze(sweep, data).sites
    assert list(sites["site"]) == ["W1", "W2", "V2", "W3", "V3", "W4"]
    assert (sites["dK"] <= sites["bound"] * (1 + 1e-9)).all()


@pytest.mark.parametrize("loss,activation,bias", [("mse", "tanh", False), ("ce", "relu", True)])
def test_batched_lbfgs_follows_torch_lbfgs_member_by_member(loss, activation, bias):
    # the refinement runs torch.optim.LBFGS's algorithm for all members at once; over a short run
    # each member must match torch's optimiser run alone. Only the summation order of dot products
    # differs, and L-BFGS amplifies that: ~1e-8 relative after 15 iterations (measured), while
    # a wrong step, history or line search differs at the 1e-2 level
    from nrc.train import regularized_loss

    data = mixture(per_class=12)
    arch = nrc.Architecture((6, 10, 10, 3), activation=activation, bias=bias)
    members = [{"weight_decay": w, "seed": s} for w, s in [(1e-3, 0), (3e-2, 1), (1e-1, 2)]]
    # with biases, leave them out of the weight decay (T5's setting): the masked penalty path
    config = nrc.TrainConfig(loss=loss, epochs=2, batch_size=8, refine="lbfgs", refine_steps=15,
                             regularize_bias=not bias)
    sweep = nrc.train(arch, data, members, config, progress=False)
    sgd = nrc.train(arch, data, members, nrc.TrainConfig(loss=loss, epochs=2, batch_size=8,
                                                         regularize_bias=not bias), progress=False)
    x = data.x_train.double()
    for m, member in enumerate(members):
        pm = {k: v[m:m + 1].double().clone().requires_grad_(True) for k, v in sgd.params.items()}
        wd = torch.tensor([member["weight_decay"]], dtype=torch.float64)
        opt = torch.optim.LBFGS(list(pm.values()), lr=1.0, max_iter=15, tolerance_grad=1e-15,
                                tolerance_change=1e-18, history_size=50, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            value = regularized_loss(arch, pm, x, data.y_train, wd, loss, not bias).sum()
            value.backward()
            return value

        opt.step(closure)
        for k in pm:
            torch.testing.assert_close(sweep.params[k][m], pm[k][0].detach(), rtol=1e-6, atol=1e-7)
        with torch.no_grad():
            ref = float(regularized_loss(arch, pm, x, data.y_train, wd, loss, not bias))
        assert sweep.history["refine_loss"][0, m] == pytest.approx(ref, rel=1e-6)
        # and the refinement did move the member
        assert float((sweep.params["W1"][m] - sgd.params["W1"][m].double()).abs().max()) > 1e-6


def test_batched_lbfgs_skips_diverged_members_and_keeps_others_independent():
    data = mixture()
    arch = nrc.Architecture((6, 12, 3))
    config = nrc.TrainConfig(loss="mse", epochs=3, batch_size=8, schedule="constant", refine="lbfgs",
                             refine_steps=20)
    members = [{"weight_decay": 1e-2, "lr": 0.05}, {"weight_decay": 1e-2, "lr": 1e4}]
    both = nrc.train(arch, data, members, config, progress=False)
    alone = nrc.train(arch, data, members[:1], config, progress=False)
    assert both.diverged.tolist() == [False, True]
    assert torch.isnan(both.params["W1"][1]).all()
    torch.testing.assert_close(both.params["W1"][0], alone.params["W1"][0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("threshold", [0, 1 << 62])
def test_both_sgd_update_paths_reproduce_torch_sgd(monkeypatch, threshold):
    # members below FUSED_SGD_MIN_NUMEL take the broadcast update, larger ones torch's fused kernel
    # member by member; force each path at a small size and compare with torch.optim.SGD
    import importlib

    monkeypatch.setattr(importlib.import_module("nrc.train"), "FUSED_SGD_MIN_NUMEL", threshold)
    data = mixture()
    arch = nrc.Architecture((6, 16, 16, 3), activation="relu", bias=True)
    config = nrc.TrainConfig(loss="ce", epochs=3, batch_size=8, lr=0.05, momentum=0.9, regularize_bias=True)
    members = [{"weight_decay": 1e-3, "seed": 3, "lr": 0.05}, {"weight_decay": 3e-2, "seed": 7, "lr": 0.1}]
    sweep = nrc.train(arch, data, members, config, device="cpu", progress=False)
    for m, member in enumerate(members):
        ref = _reference(arch, data, member, config)
        linears = [l for l in ref if isinstance(l, torch.nn.Linear)]
        for l, lin in enumerate(linears, start=1):
            torch.testing.assert_close(sweep.params[f"W{l}"][m], lin.weight.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(sweep.params[f"b{l}"][m], lin.bias.detach(), rtol=1e-5, atol=1e-6)


def test_batched_lbfgs_with_per_member_data_matches_each_member_alone():
    # T9 and E2 refine members trained on different data sets (one spread each)
    arch = nrc.Architecture((6, 10, 3), activation="tanh")
    config = nrc.TrainConfig(loss="mse", epochs=2, batch_size=8, refine="lbfgs", refine_steps=10)
    datasets = [mixture(seed=0), mixture(seed=1)]
    members = [{"weight_decay": 1e-2, "seed": 0}, {"weight_decay": 3e-2, "seed": 1}]
    both = nrc.train(arch, datasets, members, config, progress=False)
    for m in range(2):
        alone = nrc.train(arch, datasets[m], members[m:m + 1], config, progress=False)
        for k in alone.params:
            torch.testing.assert_close(both.params[k][m], alone.params[k][0], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("activation,loss", [("tanh", "mse"), ("relu", "ce")])
def test_refine_snapshots_equal_separate_runs(tmp_path, activation, loss):
    # one refinement with snapshots gives, at every budget, exactly (bitwise) what a separate run
    # with that refine_steps gives. Budget 1 always leaves the long run's path (torch gives it
    # max_eval = 1, so its first line search gets max_ls = 0): the fork path; budgets 5 and 12
    # mostly follow the long run: the snapshot path. The lr = 1e4 member diverges in SGD.
    from dataclasses import replace

    data = mixture(per_class=12)
    arch = nrc.Architecture((6, 10, 10, 3), activation=activation)
    members = [{"weight_decay": 1e-2, "seed": 0}, {"weight_decay": 3e-2, "seed": 1},
               {"weight_decay": 1e-2, "seed": 2, "lr": 1e4}]
    budgets = [0, 1, 5, 12]
    base = nrc.TrainConfig(loss=loss, epochs=2, batch_size=8, schedule="constant", refine="lbfgs")
    config = replace(base, refine_steps=30, refine_snapshots=tuple(budgets))
    fresh = nrc.train(arch, data, members, config, progress=False)
    cached = nrc.ResultStore(tmp_path).train(arch, data, members, config, progress=False)
    cached = nrc.ResultStore(tmp_path).train(arch, data, members, config, progress=False)  # loaded back
    assert fresh.diverged.tolist() == [False, False, True]
    for budget in budgets + [30]:
        if budget == 0:
            expected = replace(base, refine="none", refine_steps=0)
        else:
            expected = replace(base, refine_steps=budget)
        alone = nrc.train(arch, data, members, expected, progress=False)
        for sweep in (fresh, cached):
            got = sweep.refined_at(budget)
            assert got.config == expected
            assert got.diverged.tolist() == alone.diverged.tolist()
            assert set(got.history) == set(alone.history)
            for k in alone.history:
                np.testing.assert_array_equal(got.history[k], alone.history[k])
            for k in alone.params:
                assert got.params[k].dtype == alone.params[k].dtype
                torch.testing.assert_close(got.params[k], alone.params[k], rtol=0, atol=0, equal_nan=True)
    # the budgets do differ (a snapshot is not the final iterate)
    assert not torch.equal(fresh.refined_at(5).params["W1"][0], fresh.params["W1"][0])
    with pytest.raises(ValueError, match="budget must be one of"):
        fresh.refined_at(7)


@pytest.mark.parametrize("kwargs,match", [
    ({"refine": "lbfgs", "refine_steps": 10, "refine_snapshots": (10,)}, r"refine_snapshots must lie in \[0, refine_steps\)"),
    ({"refine": "gd", "refine_steps": 10, "refine_snapshots": (3,)}, "with refine='lbfgs'"),
    ({"refine": "lbfgs", "refine_steps": 10, "refine_snapshots": (2.5,)}, "integer budgets"),
])
def test_refine_snapshots_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nrc.TrainConfig(**kwargs)
    # no snapshots: the configuration's dictionary (its cache key) has no such field
    assert "refine_snapshots" not in nrc.TrainConfig(refine="lbfgs", refine_steps=10).to_dict()
