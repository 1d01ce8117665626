import numpy as np
import pytest
import torch

import nrc


def _with_spectrum(s, m=7, n=5, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, m)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    S = np.zeros((m, n))
    S[: len(s), : len(s)] = np.diag(s)
    return U @ S @ V.T


def test_svdvals_recovers_known_spectrum_in_float64():
    s = np.array([5.0, 2.0, 1.0, 1e-9, 0.0])
    W = _with_spectrum(s)
    got = nrc.svdvals(torch.tensor(W, dtype=torch.float64))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got[:4], s[:4], rtol=1e-8, atol=1e-14)
    assert got[4] < 1e-14


def test_svdvals_batches_and_matches_single():
    Ws = np.stack([_with_spectrum([3, 2, 1, 0.5, 0.1], seed=i) for i in range(5)]).reshape(5, 1, 7, 5)
    got = nrc.svdvals(Ws)
    assert got.shape == (5, 1, 5)
    for i in range(5):
        np.testing.assert_allclose(got[i, 0], [3, 2, 1, 0.5, 0.1], rtol=1e-10)


def test_svdvals_rejects_bad_input():
    with pytest.raises(ValueError, match="backend"):
        nrc.svdvals(np.eye(2), backend="gpu")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nrc.svdvals(np.ones(3))


def test_rank_measures_on_closed_form_spectrum():
    s = np.array([1.0, 0.5, 1e-2 * 0.9, 1e-4, 0.0])
    assert nrc.numerical_rank(s, 1e-2) == 2
    assert nrc.numerical_rank(s, 1e-3) == 3
    assert nrc.numerical_rank(np.zeros(3), 1e-3) == 0
    # d_k^F by Eckart-Young: the tail's Frobenius norm
    assert nrc.dist_to_rank(s, 2) == pytest.approx(np.sqrt(0.009**2 + 1e-8))
    assert nrc.dist_to_rank(s, 0) == pytest.approx(np.linalg.norm(s))
    assert nrc.relative_dist_to_rank(s, 1) == pytest.approx(np.linalg.norm(s[1:]) / np.linalg.norm(s))
    # energy rank: smallest r with tail energy <= eps^2 total
    assert nrc.energy_rank(np.array([1.0, 0.1, 0.001]), 0.2) == 1
    assert nrc.energy_rank(np.array([1.0, 0.1, 0.001]), 0.05) == 2


def test_dist_to_rank_equals_best_approximation_error():
    W = _with_spectrum([4.0, 3.0, 2.0, 1.0, 0.5], seed=3)
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    best2 = (U[:, :2] * s[:2]) @ Vt[:2]
    assert nrc.dist_to_rank(nrc.svdvals(W), 2) == pytest.approx(np.linalg.norm(W - best2), rel=1e-12)


@pytest.mark.parametrize("bad", [0.0, 1.0, -1.0])
def test_tolerances_validated(bad):
    with pytest.raises(ValueError, match="tol"):
        nrc.numerical_rank([1.0], bad)
    with pytest.raises(ValueError, match="eps"):
        nrc.energy_rank([1.0], bad)
    with pytest.raises(ValueError, match="k must be"):
        nrc.dist_to_rank([1.0], -1)
