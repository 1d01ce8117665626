"""The synthetic group's set-ups and figures (T5-T9, E2), checked against independent computations."""
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import nrc  # noqa: E402
from nrc_companion import plots, setups  # noqa: E402


def _same_data(a, b):
    return torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)


def test_spread_sweep_fixed_data_seed_matches_hand_built_mixtures():
    params = {"num_classes": 3, "dim": 6, "per_class": 5, "center_scale": 1.5, "data_seed": 4,
              "hidden": [7, 7], "activation": "tanh", "bias": True, "weight_decay": 0.02, "seeds": [0, 2]}
    run = setups.spread_sweep(params, [0.5, 0.2])
    combos = [(0.5, 0), (0.5, 2), (0.2, 0), (0.2, 2)]  # spread outer, seed inner, spreads in the given order
    assert run.members == [{"weight_decay": 0.02, "seed": s} for _, s in combos]
    assert run.info == [{"spread": s} for s, _ in combos]
    for d, (s, _) in zip(run.datasets, combos):
        ref = nrc.make_gaussian_mixture(num_classes=3, dim=6, per_class=5, spread=s, center_scale=1.5, seed=4)
        assert _same_data(d, ref)
    assert run.arch == nrc.Architecture((6, 7, 7, 3), activation="tanh", bias=True)
    store = nrc.ResultStore("/nonexistent")  # cache keys only: nothing is read or written
    ref0 = nrc.make_gaussian_mixture(num_classes=3, dim=6, per_class=5, spread=0.5, center_scale=1.5, seed=4)
    assert store.member_key(run.arch, nrc.TrainConfig(), run.datasets[0], run.members[0]) == \
        store.member_key(run.arch, nrc.TrainConfig(), ref0, {"weight_decay": 0.02, "seed": 0})


def test_spread_sweep_data_seed_per_seed_and_overrides():
    params = {"num_classes": [3, 5], "dim": 8, "per_class": 4, "center_scale": 2.0, "hidden": [6],
              "weight_decay": 0.01, "seeds": [1, 3]}
    run = setups.spread_sweep(params, [0.1, 0.4], data_seed_per_seed=True, info={"K": 5}, num_classes=5)
    combos = [(0.1, 1), (0.1, 3), (0.4, 1), (0.4, 3)]
    assert run.info == [{"K": 5, "spread": s} for s, _ in combos]
    assert list(run.info[0]) == ["K", "spread"]  # the column order of nrc.analyze's member_info
    for d, (s, seed) in zip(run.datasets, combos):
        ref = nrc.make_gaussian_mixture(num_classes=5, dim=8, per_class=4, spread=s, center_scale=2.0, seed=seed)
        assert _same_data(d, ref)
    assert not _same_data(run.datasets[0], run.datasets[1])
    assert run.arch == nrc.Architecture((8, 6, 5), activation="relu", bias=False)


def test_unregularised_tables_match_numpy_svd():
    arch = nrc.Architecture((5, 6, 3))
    gen = torch.Generator().manual_seed(0)
    params = {"W1": torch.randn(3, 6, 5, generator=gen), "W2": torch.randn(3, 3, 6, generator=gen)}
    params["W1"][2, 4:] = 0  # rank 4 < 5: exact zeros in the spectrum
    members = [{"weight_decay": 0.0, "seed": 0}, {"weight_decay": 0.1, "seed": 0}, {"weight_decay": 0.0, "seed": 1}]
    sweep = SimpleNamespace(arch=arch, members=members, params=params, diverged=np.array([False, False, False]))
    sites, spectra = setups.unregularised_tables(sweep, 2, "ce")
    assert list(zip(sites["seed"], sites["site"])) == [(0, "W1"), (0, "W2"), (1, "W1"), (1, "W2")]
    assert (sites["layer"] == [1, 2, 1, 2]).all() and (sites["loss"] == "ce").all()
    for row, (m, name) in zip(sites.itertuples(), [(0, "W1"), (0, "W2"), (2, "W1"), (2, "W2")]):
        s = np.linalg.svd(params[name][m].double().numpy(), compute_uv=False)
        frob = np.sqrt((s ** 2).sum())
        assert row.dK == pytest.approx(np.sqrt((s[2:] ** 2).sum()), rel=1e-12, abs=1e-14)
        assert row.dK_rel == pytest.approx(np.sqrt((s[2:] ** 2).sum()) / frob, rel=1e-12, abs=1e-14)
        assert row.frob == pytest.approx(frob, rel=1e-12)
        assert sites.loc[row.Index, "rank_1e-2"] == (s > 1e-2 * s[0]).sum()
        assert sites.loc[row.Index, "rank_1e-3"] == (s > 1e-3 * s[0]).sum()
        assert row.sK1_ratio == pytest.approx(s[2] / s[0], rel=1e-12)
        assert np.isnan(row.stationarity) and np.isnan(row.tcv2) and np.isnan(row.bound)
        spec = spectra[(spectra["member"] == 10_000 + m) & (spectra["site"] == name)]
        np.testing.assert_allclose(spec["s"], s, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(spec["s_rel"], s / s[0], rtol=1e-12, atol=1e-14)
        assert list(spec["j"]) == list(range(1, len(s) + 1))
    sweep.diverged = np.array([True, False, True])
    sites, spectra = setups.unregularised_tables(sweep, 2, "ce")
    assert sites.empty and spectra.empty


def test_setup_elapsed_counts_from_its_creation():
    nb = setups.Setup(name="x", params={}, device="cpu", store=None)
    first = nb.elapsed()
    assert 0 <= first <= nb.elapsed()


def test_loglog_fit_slope_label_is_the_fit_over_positive_points():
    rng = np.random.default_rng(0)
    x = np.geomspace(0.1, 3, 8)
    df = pd.DataFrame({"x": np.r_[x, x], "y": np.r_[2 * x ** 1.5 * np.exp(0.1 * rng.standard_normal(8)), x],
                       "site": ["W1"] * 8 + ["W2"] * 8, "layer": [1] * 8 + [2] * 8,
                       "flag": [False, True] * 8})
    df.loc[3, "y"] = 0.0  # drawn at the floor, left out of the fit
    fig = plots.loglog_fit(df, "x", "y", hollow="flag", slope_label=True)
    keep = (df["site"] == "W1") & (df["y"] > 0)
    slope = np.polyfit(np.log(df.loc[keep, "x"]), np.log(df.loc[keep, "y"]), 1)[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [f"W1: slope {slope:.2f}", "W2: slope 1.00"]
    plt.close(fig)


@pytest.mark.parametrize("draw", ["measured_vs_bound", "layer_profile", "descent_paths", "spectra", "metric_vs"])
def test_synthetic_figures_draw_every_line(draw):
    rows = [{"layer": l, "weight_decay": lam, "seed": s, "activation": a, "stage": st, "step": l,
             "method": "GD" if s == 0 else "SGD", "m": 1.0 + l + s, "b": 2.0 + l + s}
            for l in range(3) for lam in (0.0, 0.1) for s in (0, 1) for a in ("relu", "tanh")
            for st in ("init", "end")]
    df = pd.DataFrame(rows)
    if draw == "measured_vs_bound":
        fig = plots.measured_vs_bound(df, "b", "m", hue="stage", style="activation")
        assert len(fig.axes) == 1
    elif draw == "layer_profile":
        fig = plots.layer_profile(df, {"m": "measured", "b": "bound"}, ylabel="v", col="activation")
        assert [ax.get_title() for ax in fig.axes] == ["relu", "tanh"]
        assert len(fig.axes[0].lines) >= 4  # two lambdas x two quantities
    elif draw == "descent_paths":
        fig = plots.descent_paths(df, [("m", "m"), ("b", "b")], refs={"b": 1.0})
        assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "symlog"
    elif draw == "spectra":
        spec = pd.DataFrame({"site": "W1", "weight_decay": [0.1] * 4, "j": [1, 2, 3, 4], "s_rel": [1, 0.5, 1e-3, 0]})
        fig = plots.spectra_by_site(spec, cut=2, ref=1e-4)
        ax = fig.axes[0]
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.lines)
        assert any(list(line.get_ydata()) == [1e-4, 1e-4] for line in ax.lines)
    else:
        fig = plots.metric_vs(df, "weight_decay", "m", by="activation", style="method", ref=1.0)
        assert fig.axes[0].get_xscale() == "symlog"
    plt.close(fig)
