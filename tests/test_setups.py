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
