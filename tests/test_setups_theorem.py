"""The set-up of the Theorem A notebooks (T2-T4: ``setups.theorem_sweep``) and the figures of the theorem group."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nrc
from nrc_companion import plots, setups

SMALL = dict(dataset="synthetic", num_classes=3, dim=5, per_class=6, spread=0.7, data_seed=1, hidden=[6, 6],
             activation="relu", bias=False, losses=["mse", "ce"], weight_decays=[0.01, 0.1], seeds=[0, 1],
             epochs=2, batch_size=6, lr=0.05, refine_steps=3, device="auto")


@pytest.fixture
def nb(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))
    return setups.prepare("t2_rank_tcv_bound", dict(SMALL))


def test_analysis_device_keeps_auto_on_the_cpu(nb):
    assert nb.analysis_device is None  # "auto": nrc.analyze measures on the CPU, as the notebooks always did
    assert nb.device in ("cpu", "cuda")


def test_theorem_sweep_equals_the_sweeps_built_by_hand(nb):
    run = setups.theorem_sweep(nb)
    # independently: the data, network and grid written out, one training and one analysis per loss
    data = nrc.make_gaussian_mixture(num_classes=3, dim=5, per_class=6, spread=0.7, seed=1)
    arch = nrc.Architecture((5, 6, 6, 3), activation="relu", bias=False)
    grid = nrc.grid(weight_decay=[0.01, 0.1], seed=[0, 1])
    store = nrc.ResultStore(nb.store.root)
    assert list(run.sweeps) == ["mse", "ce"]
    seconds = 0.0
    for loss in ("mse", "ce"):
        config = nrc.TrainConfig(loss=loss, epochs=2, batch_size=6, lr=0.05, momentum=0.9, schedule="cosine",
                                 refine="lbfgs", refine_steps=3, refine_dtype="float64")
        assert {store.member_key(arch, config, data, m) for m in grid} == \
            {nb.store.member_key(nb.arch, run.sweeps[loss].config, nb.data, m) for m in nb.members}
        sweep = store.train(arch, data, grid, config)
        seconds += float(sweep.seconds)
        ref = nrc.analyze(sweep, data).sites
        got = run.sites[run.sites["loss"] == loss].reset_index(drop=True)
        pd.testing.assert_frame_equal(got[ref.columns], ref.reset_index(drop=True))
        # the flags, recomputed: every weight of the member near 0, or a side of at most K
        for r in got.itertuples():
            frobs = ref.loc[ref["member"] == r.member, "frob"]
            assert r.collapsed == bool(np.prod(frobs) < 1e-6)
        shapes = {"W1": (6, 5), "W2": (6, 6), "W3": (3, 6)}
        assert list(got["trivial"]) == [min(shapes[s]) <= 3 for s in got["site"]]
    assert run.seconds == pytest.approx(seconds)
    assert len(run.member_table) == 2 * len(grid)
    assert "8 members" in run.scale
    assert "losses mse, ce, 3 L-BFGS steps" in run.scale


def test_theorem_figures_one_call_each(nb):
    rows = [{"activation": a, "loss": l, "weight_decay": w, "seed": s, "budget": b, "stationarity": 10.0 ** -b}
            for a in ("relu", "tanh") for l in ("mse", "ce") for w in (0.01, 0.1) for s in (0, 1) for b in (0, 1, 3)]
    fig = plots.lines_by_panel(pd.DataFrame(rows), "budget", "stationarity", col="activation", hue="weight_decay",
                               style="loss", ref=1e-4, ref_label="tolerance")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2 and fig.legends
    assert fig.get_size_inches()[0] == pytest.approx(plots.WIDTH)
    wide = pd.DataFrame({"site": ["W1", "W2"] * 2, "layer": [1, 2] * 2, "loss": ["mse", "mse", "ce", "ce"],
                         "a": [0.5, 0.7, np.nan, 0.9], "b": [1.5, 2.0, 1.2, 1.1]})
    fig = plots.ratio_strips(wide, {"a": "first", "b": "second"}, col="loss")
    assert len(fig.axes) == 2 and fig.legends and fig.axes[0].get_yscale() == "log"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["first", "second"]
    # one dot per value, NaN left out: 2 + 2 in the mse panel, 1 + 2 in the ce panel
    assert [sum(len(c.get_offsets()) for c in ax.collections) for ax in fig.axes] == [4, 3]
