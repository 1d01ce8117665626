"""nrc_companion.setups for the image notebooks (E1, E3, E6, E7, E8): what they used to build by hand."""
import numpy as np
import pytest
import torch

import nrc
from nrc_companion import setups
from nrc_companion.config import field_defaults
from nrc_companion.params import MODELS


def _namespace(stem: str, **values) -> dict:
    """A notebook's globals after its parameters cell: the model's defaults, ``values`` replacing some."""
    return {**field_defaults(MODELS[stem]), **values}


def test_truncation_ranks_against_a_direct_count():
    """E6's kept ranks: fixed ranks capped at the matrix size, rank_tau counted singular value by value."""
    gen = torch.Generator().manual_seed(0)
    mats = torch.randn(3, 12, 7, generator=gen, dtype=torch.float64)
    mats[1, :, 4:] = 1e-6 * mats[1, :, :3]  # member 1 close to rank 4
    s = torch.linalg.svdvals(mats)  # (3, 7), descending
    K, tau = 5, 0.01
    direct = [sum(1 for v in row if v > tau * row[0]) for row in np.linalg.svd(mats.numpy(), compute_uv=False)]
    assert setups.truncation_ranks("rank_tau", s, K, tau).tolist() == direct
    assert direct[1] == 4 and direct[0] == 7
    assert setups.truncation_ranks("full", s, K, tau).tolist() == [7, 7, 7]
    assert setups.truncation_ranks("rank K", s, K, tau).tolist() == [5, 5, 5]
    assert setups.truncation_ranks("rank K-1", s, K, tau).tolist() == [4, 4, 4]
    assert setups.truncation_ranks("rank K", s, 10, tau).tolist() == [7, 7, 7]  # capped at min(d_out, d_in)
    assert setups.truncation_ranks("rank K-1", s, 10, tau).tolist() == [7, 7, 7]
    assert set(setups.TRUNCATIONS) == {"full", "rank K", "rank K-1", "rank_tau"}
    with pytest.raises(ValueError, match="strategy"):
        setups.truncation_ranks("rank 3", s, K, tau)


def test_prepare_builds_e1s_hand_written_set_up():
    """E1: several data sets (no data), the MLP of ``widths``, E1's training configuration and grid."""
    ns = _namespace("e1_rank_vs_weight_decay", device="cpu")
    nb = setups.prepare("e1_rank_vs_weight_decay", ns)
    assert nb.data is None and nb.device == "cpu"
    assert nb.arch == nrc.Architecture(tuple(ns["widths"]), activation="relu", bias=False)
    assert nb.config == setups.train_config("ce", epochs=ns["epochs"], batch_size=ns["batch_size"], lr=ns["lr"],
                                            refine_steps=ns["refine_steps"], momentum=ns["momentum"])
    assert nb.members == setups.members(ns["weight_decays"], ns["seeds"])


def test_prepare_residual_and_the_image_data(need_data):
    """E3 (residual MLP), E7 (its hand-built TrainConfig), E8 (no test split): the same objects and tensors."""
    need_data("mnist")
    ns = _namespace("e3_residual_networks", per_class=3, test_per_class=2, device="cpu")
    nb = setups.prepare("e3_residual_networks", ns, residual=True)
    assert nb.arch == nrc.Architecture(tuple(ns["widths"]), activation="relu", bias=False, residual=True)
    by_hand = nrc.load_dataset("mnist", per_class=3, test_per_class=2)
    assert torch.equal(nb.data.x_train, by_hand.x_train) and torch.equal(nb.data.x_test, by_hand.x_test)
    assert not setups.prepare("e1_rank_vs_weight_decay", _namespace("e1_rank_vs_weight_decay")).arch.residual

    ns = _namespace("e7_any_model", per_class=3, test_per_class=-1)
    nb = setups.prepare("e7_any_model", ns)
    assert nb.data.n_test == len(nrc.load_dataset("mnist", per_class=1, test_per_class=None).y_test)
    assert nb.arch == nrc.Architecture((784, *ns["hidden"], 10), activation="relu", bias=True)
    assert nb.config == nrc.TrainConfig(loss="ce", epochs=ns["epochs"], batch_size=ns["batch_size"], lr=ns["lr"],
                                        momentum=ns["momentum"], schedule="cosine")

    ns = _namespace("e8_theorem_a_bites", per_class=3, data_seed=1)
    nb = setups.prepare("e8_theorem_a_bites", ns)
    by_hand = setups.load_data("mnist", per_class=3, data_seed=1, test_per_class=0)
    assert torch.equal(nb.data.x_train, by_hand.x_train) and nb.data.n_test == 0
    assert nb.arch == setups.architecture(by_hand, ns["hidden"], bias=False)
