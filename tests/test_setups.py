"""nrc_companion.setups: the shared set-up of the theory notebooks builds what the notebooks built by hand."""
import nrc
from nrc_companion import setups
from nrc.cache import ResultStore


def test_train_config_matches_the_hand_written_configs():
    sgd_only = setups.train_config("ce", epochs=40, batch_size=32, lr=0.05, refine_steps=0)
    assert sgd_only == nrc.TrainConfig(loss="ce", epochs=40, batch_size=32, lr=0.05, momentum=0.9,
                                       schedule="cosine", refine="none", refine_steps=0, refine_dtype="float64")
    refined = setups.train_config("mse", epochs=5, batch_size=8, lr=0.1, refine_steps=30, regularize_bias=False)
    assert (refined.refine, refined.refine_steps, refined.regularize_bias) == ("lbfgs", 30, False)


def test_members_are_sorted_and_typed():
    grid = setups.members([0.1, 0, "0.01"], [1, 0])
    assert [m["weight_decay"] for m in grid[::2]] == [0.0, 0.01, 0.1]
    assert all(isinstance(m["weight_decay"], float) and isinstance(m["seed"], int) for m in grid)


def test_cache_keys_equal_a_hand_built_sweep(tmp_path):
    """Same parameter values -> same member keys, so notebooks share trained members (e.g. E1 and T8)."""
    data = setups.load_data("synthetic", num_classes=3, dim=5, per_class=4, spread=0.5, data_seed=2)
    by_hand = nrc.make_gaussian_mixture(num_classes=3, dim=5, per_class=4, spread=0.5, seed=2)
    arch = setups.architecture(data, [7, 6], activation="relu", bias=False)
    assert arch.widths == (5, 7, 6, 3)
    hand_arch = nrc.Architecture((5, 7, 6, 3), activation="relu", bias=False)
    cfg = setups.train_config("ce", epochs=3, batch_size=4, lr=0.05, refine_steps=0)
    hand_cfg = nrc.TrainConfig(loss="ce", epochs=3, batch_size=4, lr=0.05, momentum=0.9, schedule="cosine",
                               refine="none", refine_steps=0, refine_dtype="float64")
    store = ResultStore(tmp_path)
    for m, hand in zip(setups.members([0.01, 0.1], [0]), nrc.grid(weight_decay=[0.01, 0.1], seed=[0])):
        assert store.member_key(arch, cfg, data, m) == store.member_key(hand_arch, hand_cfg, by_hand, hand)
    other = setups.train_config("ce", epochs=3, batch_size=4, lr=0.05, refine_steps=1)
    assert store.member_key(arch, other, data, hand) != store.member_key(arch, cfg, data, hand)


def test_image_sweep_values_against_its_own_tables(tmp_path):
    """setups.sweep_values (E1, E3) summarises the analysis tables: recomputed here from the rows."""
    import numpy as np
    import pytest

    data = nrc.make_gaussian_mixture(num_classes=3, dim=6, per_class=8, spread=0.5, seed=0)
    arch = nrc.Architecture((6, 8, 8, 3), activation="relu", bias=False)
    members = setups.members([0.0, 0.01, 0.1], [0, 1])
    config = setups.train_config("ce", epochs=3, batch_size=8, lr=0.05)
    run = setups.image_sweep(ResultStore(tmp_path), arch, data, members, config, device="cpu")
    assert run.n_cached == 0 and run.n_diverged == 0
    sites = run.an.sites
    claim10, rho = setups.collapse_inputs(sites, run.an.members, run.nc1_start, "W3")
    v = setups.sweep_values(run, claim10, rho, "W1")
    pos = sites[sites["weight_decay"] > 0]
    last = pos[pos["site"] == "W3"]
    start = np.asarray(run.nc1_start)[last["member"].to_numpy()]
    assert (v["n_members"], v["n_lambdas"], v["n_seeds"], v["lambda_max"]) == (6, 3, 2, 0.1)
    assert v["n_bound_cases"] == len(pos)
    assert v["max_bound_ratio"] == pytest.approx((pos["dK"] / pos["bound"]).max(), rel=1e-12)
    assert v["n_informative"] + v["n_vacuous"] == len(pos)
    assert v["n_informative"] == int((pos["bound"] < pos["frob"]).sum())
    assert v["nc1_input"] == sites.loc[sites["site"] == "W1", "nc1"].iloc[0]
    assert (v["min_nc1_last_pos"], v["max_nc1_last_pos"]) == (last["nc1"].min(), last["nc1"].max())
    assert (v["nc1_start_min"], v["nc1_start_max"]) == (start.min(), start.max())
    assert v["n_nc1_fell"] == int((last["nc1"].to_numpy() < start).sum())


def test_initial_nc1_reads_one_value_per_seed():
    """Members sharing a seed share an initialisation, so their NC1 at the start is one number."""
    import numpy as np

    data = nrc.make_gaussian_mixture(num_classes=3, dim=6, per_class=8, spread=0.5, seed=0)
    arch = nrc.Architecture((6, 8, 8, 3), activation="relu", bias=False)
    config = setups.train_config("ce", epochs=0, batch_size=8, lr=0.05)
    grid = setups.members([0.0, 0.01, 0.1], [4, 2])
    per_member = setups.initial_nc1(arch, data, grid, config)
    alone = {s: setups.initial_nc1(arch, data, [{"weight_decay": 0.0, "seed": s}], config)[0] for s in (4, 2)}
    assert np.array_equal(per_member, [alone[m["seed"]] for m in grid])


def test_relative_difference_against_numpy():
    import numpy as np
    import torch

    a, b = np.array([[1.0, 2.0], [3.0, -4.0]]), np.array([[1.5, 2.0], [2.0, -4.0]])
    expected = np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b))
    assert abs(setups.relative_difference(torch.tensor(a), torch.tensor(b)) - expected) < 1e-15
    assert abs(setups.relative_difference(a, b) - expected) < 1e-15
    assert setups.relative_difference(0.0, 0.0) == 0.0
