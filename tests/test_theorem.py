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


def _cross_reference(sweep, data, groups_of):
    """||Delta^T R||_F and TCV_2/N per (member, site) for the groups ``groups_of(member, site_index, U)``,
    from nrc.within_class and a plain autograd Delta (as T4's notebook computed them by hand)."""
    p = {k: v.double().requires_grad_(True) for k, v in sweep.params.items()}
    logits, sites = nrc.forward(sweep.arch, p, data.x_train.double(), record=True)
    M = logits.shape[0]
    per = nrc.member_losses(logits, data.y_train.unsqueeze(0).expand(M, -1), sweep.config.loss)
    deltas = torch.autograd.grad(per.sum(), [s.output for s in sites])
    out = {}
    for j, (site, D) in enumerate(zip(sites, deltas)):
        for m in range(M):
            U = site.input[m].detach()
            R = nrc.within_class(U, groups_of(m, j, U), sweep.arch.num_classes)
            out[(m, site.name)] = (float((D[m].T @ R).norm()), float((R * R).sum()) / U.shape[0])
    return out


def test_any_partition_as_name_tensor_or_callable(trained):
    data, runs = trained
    sweep, analysis = runs["ce"]
    arch, K, y = sweep.arch, sweep.arch.num_classes, data.y_train
    wd = sweep.weight_decays().numpy()
    args = (arch, sweep.params, data.x_train, y, wd)
    labels = analysis.sites.set_index(["member", "site"])
    g = torch.Generator().manual_seed(5)
    fixed = y[torch.randperm(len(y), generator=g)]
    cases = {
        "tensor=labels": (y, lambda m, j, U: y),
        "tensor (M, N)": (fixed.expand(len(wd), -1), lambda m, j, U: fixed),
        "callable": (lambda U, lab, k: (U[:, 0] > U[:, 0].median()).long(),
                     lambda m, j, U: (U[:, 0] > U[:, 0].median()).long()),
    }
    for name, (partition, groups_of) in cases.items():
        # member_chunk=4 < M = 6: a per-member tensor is indexed by the member, not its place in a chunk
        got = nrc.site_quantities(*args, loss="ce", partition=partition, member_chunk=4).set_index(["member", "site"])
        ref = _cross_reference(sweep, data, groups_of)
        for key, (cross, tcv2) in ref.items():
            assert got.loc[key, "cross_norm"] == pytest.approx(cross, rel=1e-10), name
            assert got.loc[key, "tcv2"] == pytest.approx(tcv2, rel=1e-10), name
        # the partition changes only R: the gradient term and the spectra are those of the labels run
        np.testing.assert_allclose(got["grad_norm"], labels.loc[got.index, "grad_norm"], rtol=1e-12)
        np.testing.assert_allclose(got["dK"], labels.loc[got.index, "dK"], rtol=1e-12)
    same = nrc.site_quantities(*args, loss="ce", partition=y).set_index(["member", "site"])
    np.testing.assert_allclose(same["bound"], labels.loc[same.index, "bound"], rtol=1e-12)


def test_random_partition_is_balanced_seeded_and_chunk_independent(trained):
    data, runs = trained
    sweep, analysis = runs["mse"]
    wd = sweep.weight_decays().numpy()
    args = (sweep.arch, sweep.params, data.x_train, data.y_train, wd)
    # rows come site by site within a chunk: compare in (member, site) order
    a, b, c = (nrc.site_quantities(*args, loss="mse", partition="random", seed=s, member_chunk=mc)
               .sort_values(["member", "layer"], ignore_index=True) for s, mc in ((3, 8), (3, 1), (4, 8)))
    np.testing.assert_allclose(a["cross_norm"], b["cross_norm"], rtol=1e-12)
    assert not np.allclose(a["cross_norm"], c["cross_norm"])
    # a random balanced partition ignores the classes: more within-group variation than the labels
    lab = analysis.sites.set_index(["member", "site"])["tcv2"]
    assert (a.set_index(["member", "site"])["tcv2"] > lab.loc[list(zip(a["member"], a["site"]))].to_numpy()).mean() > 0.9


def test_partition_validation(trained):
    data, runs = trained
    sweep, _ = runs["ce"]
    args = (sweep.arch, sweep.params, data.x_train, data.y_train, sweep.weight_decays().numpy())
    with pytest.raises(ValueError, match="partition must be one of"):
        nrc.site_quantities(*args, loss="ce", partition="spectral")
    with pytest.raises(ValueError, match="shape"):
        nrc.site_quantities(*args, loss="ce", partition=data.y_train[:5])
    with pytest.raises(ValueError, match=r"lie in \[0, 2\]"):
        nrc.site_quantities(*args, loss="ce", partition=data.y_train + 1)
    with pytest.raises(ValueError, match="callable"):
        nrc.site_quantities(*args, loss="ce", partition=lambda U, lab, k: lab[:3])


def test_several_partitions_in_one_pass_are_each_partition_alone(trained, tmp_path):
    """A list of names shares the forward and backward pass and the spectra: every table equals the
    one-partition call's, bit for bit, in chunks too; with a store, a partition already cached is
    loaded and only the others are computed, each stored under its own key."""
    import pandas as pd

    data, runs = trained
    sweep, _ = runs["mse"]
    args = (sweep.arch, sweep.params, data.x_train, data.y_train, sweep.weight_decays().numpy())
    names = ["labels", "kmeans", "random"]
    together = nrc.site_quantities(*args, loss="mse", partition=names, seed=3, member_chunk=4)
    assert len(together) == 3
    for name, got in zip(names, together):
        pd.testing.assert_frame_equal(got, nrc.site_quantities(*args, loss="mse", partition=name, seed=3,
                                                               member_chunk=4), check_exact=True)
    with pytest.raises(ValueError, match="at most once"):
        nrc.site_quantities(*args, loss="mse", partition=["random", "random"])
    store = nrc.ResultStore(tmp_path)
    nrc.analyze(sweep, data, partition="kmeans", seed=3, store=store)
    assert len(list((tmp_path / "analyses").glob("*.pt"))) == 1
    km, rnd = nrc.analyze(sweep, data, partition=["kmeans", "random"], seed=3, store=store)
    assert len(list((tmp_path / "analyses").glob("*.pt"))) == 2
    for an, name in ((km, "kmeans"), (rnd, "random")):
        alone = nrc.analyze(sweep, data, partition=name, seed=3)
        for table in ("sites", "members", "spectra"):
            pd.testing.assert_frame_equal(getattr(an, table), getattr(alone, table), check_exact=True)


@pytest.mark.parametrize("partition", ["labels", "random"])
def test_analysis_cached_in_the_store_is_the_analysis_computed(trained, tmp_path, partition):
    """A stored analysis loads back equal, column types included; a changed parameter is a new entry."""
    import pandas as pd

    data, runs = trained
    sweep, _ = runs["ce"]
    store = nrc.ResultStore(tmp_path)
    fresh = nrc.analyze(sweep, data, partition=partition, seed=3)
    first = nrc.analyze(sweep, data, partition=partition, seed=3, store=store)
    entries = sorted((tmp_path / "analyses").glob("*.pt"))
    assert len(entries) == 1
    again = nrc.analyze(sweep, data, partition=partition, seed=3, store=store)
    for table in ("sites", "members", "spectra"):
        pd.testing.assert_frame_equal(getattr(first, table), getattr(fresh, table))
        pd.testing.assert_frame_equal(getattr(again, table), getattr(fresh, table))
    moved = nrc.Sweep(sweep.arch, sweep.config, sweep.members, {k: v * 1.5 for k, v in sweep.params.items()},
                      sweep.history, sweep.diverged, sweep.seconds, sweep.device)
    other = nrc.analyze(moved, data, partition=partition, seed=3, store=store)
    assert len(list((tmp_path / "analyses").glob("*.pt"))) == 2
    assert not np.allclose(other.sites["frob"], fresh.sites["frob"])
