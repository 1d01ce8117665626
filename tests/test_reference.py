"""Every number nrc reports, against an independent float64 reference (tests/nrc_reference.py).

The weights are built as ``U diag(s) V^T`` with known singular values ``s``, so every spectral
column (norms, ranks, distances to rank K, the spectra table) has a closed form; the Theorem A
columns (gradients, back-propagated errors, residuals, TCV, NC1, the bound's forms) come from a
hand-written NumPy backward pass with loops over samples and classes. Tolerances are 1e-8
relative: a 1 % (let alone 2x or 0.5x) error in any reported number fails here, without running
a notebook. Covered: the per-site table (``Analysis.sites``, every column of ``SITE_COLUMNS``),
the per-member table, the spectra table, ``Analysis.tidy``, ``analyze_model`` and the tables
printed by ``nrc sweep``.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

import nrc
import nrc_reference as ref
from nrc.train import Sweep, TrainConfig

RTOL = 1e-8

SCENARIOS = {
    # name: widths, activation, bias, residual, loss, weight decays, diverged mask
    "relu_ce_bias": ((6, 8, 7, 3), "relu", True, False, "ce", [0.01, 0.05, 0.1, 0.5], [False, True, False, False]),
    "tanh_mse": ((5, 9, 6, 4), "tanh", False, False, "mse", [0.02, 0.2], [False, False]),
    "residual_tanh_ce": ((6, 5, 5, 5, 3), "tanh", True, True, "ce", [0.03, 0.3], [False, False]),
}

_RATIOS = [0.25, 0.45, 0.6, 0.35, 0.7, 0.3, 0.55]


def _known_spectrum(r, m, j):
    """A decaying spectrum ``c q^(i-1)``, different for every member m and site j."""
    q = _RATIOS[(3 * m + j) % len(_RATIOS)]
    c = 0.8 + 0.3 * ((m + 2 * j) % 4)
    s = [c * q**i for i in range(r)]
    for tol in (1e-2, 1e-3):  # no value within 1e-6 of a rank threshold
        assert all(abs(v / s[0] - tol) > 1e-6 * tol for v in s)
    return s


def build(name, seed=0):
    """A sweep with known singular values, its data, and the reference tables."""
    widths, act, bias, residual, loss, wds, diverged = SCENARIOS[name]
    arch = nrc.Architecture(widths, activation=act, bias=bias, residual=residual)
    K = arch.num_classes
    data = nrc.make_gaussian_mixture(num_classes=K, dim=widths[0], per_class=8, test_per_class=5,
                                     spread=0.8, seed=seed)
    rng = np.random.default_rng(seed)
    params, known = {}, []
    per_member = []
    for m in range(len(wds)):
        p, ks = {}, {}
        for j, (site, d_out, d_in) in enumerate(arch.sites()):
            s = _known_spectrum(min(d_out, d_in), m, j)
            p[site] = ref.matrix_with_singular_values(rng, d_out, d_in, s)
            ks[site] = s
            if bias:
                p[ref.bias_name(site)] = 0.3 * rng.standard_normal(d_out)
        per_member.append(p)
        known.append(ks)
    params = {k: torch.tensor(np.stack([p[k] for p in per_member])) for k in per_member[0]}
    members = [{"weight_decay": w, "seed": m, "lr": 0.0} for m, w in enumerate(wds)]
    sweep = Sweep(arch, TrainConfig(loss=loss), members, params, {}, np.array(diverged), 0.0, "cpu")
    x = data.x_train.double().numpy()
    y = data.y_train.numpy()
    sites, mem = ref.reference_tables(widths, act, residual, list(zip(per_member, wds)), x, y, loss, K, known,
                                      data.x_test.double().numpy(), data.y_test.numpy())
    return sweep, data, pd.DataFrame(sites), pd.DataFrame(mem), known


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def case(request):
    sweep, data, ref_sites, ref_members, known = build(request.param)
    return request.param, sweep, data, nrc.analyze(sweep, data), ref_sites, ref_members, known


def test_reference_backward_pass_matches_float64_autograd():
    """The reference's hand-written gradients agree with autograd of an independent torch forward."""
    for name in sorted(SCENARIOS):
        sweep, data, _, _, _ = build(name)
        widths, act, _, residual, loss, wds, _ = SCENARIOS[name]
        p = {k: v[0].clone().requires_grad_(True) for k, v in sweep.params.items()}
        x = data.x_train.double()
        f = {"relu": torch.relu, "tanh": torch.tanh}[act]

        def lin(n, u):
            b = p.get(ref.bias_name(n))
            return u @ p[n].T + (b if b is not None else 0)

        L = len(widths) - 1
        if residual:
            z = f(lin("W1", x))
            for l in range(2, L):
                z = z + lin(f"V{l}", f(lin(f"W{l}", z)))
        else:
            z = x
            for l in range(1, L):
                z = f(lin(f"W{l}", z))
        out = lin(f"W{L}", z)
        onehot = torch.nn.functional.one_hot(data.y_train, widths[-1]).double()
        if loss == "ce":
            per = torch.logsumexp(out, 1) - (out * onehot).sum(1)
        else:
            per = 0.5 * ((out - onehot) ** 2).sum(1)
        grads = torch.autograd.grad(per.mean(), [p[n] for n in ref.site_names(widths, residual)])
        np_p = {k: v.detach().numpy() for k, v in p.items()}
        _, ell, sites = ref.network(widths, act, residual, np_p, x.numpy(), data.y_train.numpy(), loss)
        np.testing.assert_allclose(ell, per.detach().numpy(), rtol=1e-12)
        for n, g in zip(ref.site_names(widths, residual), grads):
            U, _, D = sites[n]
            np.testing.assert_allclose(D.T @ U / len(ell), g.numpy(), rtol=1e-10, atol=1e-14)


def _kept(sweep):
    return [m for m in range(len(sweep.members)) if not sweep.diverged[m]]


def test_site_table_matches_reference_column_by_column(case):
    name, sweep, _, analysis, ref_sites, _, _ = case
    got = analysis.sites
    reported = [c for c in got.columns if c in nrc.SITE_COLUMNS]
    assert set(reported) == set(nrc.SITE_COLUMNS), "a reported column has no reference"
    assert set(nrc.SITE_COLUMNS) <= set(ref_sites.columns)
    expect = ref_sites[ref_sites["member"].isin(_kept(sweep))]
    assert len(got) == len(expect)
    merged = expect.merge(got, on=["member", "site"], suffixes=("_ref", ""))
    assert len(merged) == len(expect)
    np.testing.assert_array_equal(merged["layer"], merged["layer_ref"])
    np.testing.assert_allclose(merged["weight_decay"],
                               [sweep.members[m]["weight_decay"] for m in merged["member"]], rtol=0)
    for col in nrc.SITE_COLUMNS:
        if col == "identity_gap":
            continue
        np.testing.assert_allclose(merged[col].to_numpy(float), merged[f"{col}_ref"].to_numpy(float),
                                   rtol=RTOL, atol=1e-13, err_msg=f"{name}: column {col}")
    # the identity d_K(W - G/lambda) = d_K(Delta^T U)/(lambda N) holds by construction
    assert (merged["identity_gap"].abs() < 1e-9).all()


def test_members_table_matches_reference(case):
    name, sweep, _, analysis, _, ref_members, _ = case
    got = analysis.members.sort_values("member").reset_index(drop=True)
    assert got["member"].tolist() == list(range(len(sweep.members)))
    assert got["diverged"].tolist() == [bool(d) for d in sweep.diverged]
    assert got["weight_decay"].tolist() == [m["weight_decay"] for m in sweep.members]
    assert got["seed"].tolist() == [m["seed"] for m in sweep.members]
    kept = _kept(sweep)
    for col in ("train_loss", "reg_loss", "train_acc", "test_acc"):
        np.testing.assert_allclose(got.loc[kept, col].to_numpy(float), ref_members.loc[kept, col].to_numpy(float),
                                   rtol=RTOL, err_msg=f"{name}: column {col}")


def test_members_accuracy_closed_form():
    """Accuracy on a constructed case: a linear map that classifies exactly 2 of 3 classes right."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.1]])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    W = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]], dtype=torch.float64)  # class 2 never wins
    data = nrc.Dataset(x, y, x[:3], y[:3], 3, "synthetic")
    arch = nrc.Architecture((2, 3), activation="linear")
    sweep = Sweep(arch, TrainConfig(loss="mse"), [{"weight_decay": 0.5, "seed": 0, "lr": 0.0}],
                  {"W1": W}, {}, np.zeros(1, dtype=bool), 0.0, "cpu")
    m = nrc.analyze(sweep, data).members.iloc[0]
    assert m["train_acc"] == pytest.approx(4 / 6, rel=1e-12)
    assert m["test_acc"] == pytest.approx(2 / 3, rel=1e-12)
    logits = x.double() @ W[0].T
    mse = 0.5 * ((logits - torch.nn.functional.one_hot(y, 3)) ** 2).sum(1).mean()
    assert m["train_loss"] == pytest.approx(float(mse), rel=1e-12)
    assert m["reg_loss"] == pytest.approx(float(mse) + 0.5 * 0.5 * float((W**2).sum()), rel=1e-12)


def test_spectra_table_is_the_known_spectrum(case):
    name, sweep, _, analysis, _, _, known = case
    spec = analysis.spectra
    kept = _kept(sweep)
    expected_rows = sum(len(known[m][s]) for m in kept for s in known[m])
    assert len(spec) == expected_rows
    for (m, site), g in spec.groupby(["member", "site"]):
        assert m in kept
        s = known[m][site]
        g = g.sort_values("j")
        assert g["j"].tolist() == list(range(1, len(s) + 1))
        np.testing.assert_allclose(g["s"], s, rtol=RTOL, err_msg=f"{name} {m} {site}")
        np.testing.assert_allclose(g["s_rel"], np.array(s) / s[0], rtol=RTOL)
        assert (g["weight_decay"] == sweep.members[m]["weight_decay"]).all()


def test_tidy_table_carries_the_site_values(case):
    _, _, _, analysis, _, _, _ = case
    long = analysis.tidy()
    wide = long.pivot_table(index=["member", "site"], columns="metric", values="value", dropna=False)
    sites = analysis.sites.set_index(["member", "site"]).sort_index()
    for col in nrc.SITE_COLUMNS:
        np.testing.assert_allclose(wide.loc[sites.index, col].to_numpy(float), sites[col].to_numpy(float),
                                   rtol=1e-15, err_msg=col)


def _user_module(sweep, member):
    """A float64 ``nn.Sequential`` written by hand, as a user would (not through ``nrc.to_module``)."""
    layers = []
    names = [n for n, _, _ in sweep.arch.sites()]
    for i, n in enumerate(names):
        W = sweep.params[n][member]
        lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=sweep.arch.bias, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(W)
            if sweep.arch.bias:
                lin.bias.copy_(sweep.params[ref.bias_name(n)][member])
        layers.append(lin)
        if i < len(names) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("via", ["user_module", "to_module"])
def test_analyze_model_matches_reference(via):
    sweep, data, ref_sites, _, _ = build("relu_ce_bias")
    member = 2
    module = _user_module(sweep, member) if via == "user_module" else nrc.to_module(sweep.arch, sweep.params, member)
    got = nrc.analyze_model(module, data, loss="ce", weight_decay=sweep.members[member]["weight_decay"]).sites
    expect = ref_sites[ref_sites["member"] == member].reset_index(drop=True)
    assert got["site"].tolist() == expect["site"].tolist()
    for col in nrc.SITE_COLUMNS:
        if col == "identity_gap":
            continue
        np.testing.assert_allclose(got[col].to_numpy(float), expect[col].to_numpy(float), rtol=RTOL, atol=1e-13,
                                   err_msg=col)


# ------------------------------------------------------------------------------- nrc sweep's printout

def _printed_block(text, header):
    """The rows ``site -> [values]`` and the column labels of the table printed after ``header``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if header in ln)
    columns, rows = None, {}
    for ln in lines[start + 1:]:
        tok = ln.split()
        if not tok:
            if rows:
                break
            continue
        if tok[0] == "weight_decay":
            columns = [float(t) for t in tok[1:]]
        elif re.fullmatch(r"[WV]\d+", tok[0]):
            rows[tok[0]] = [float(t) for t in tok[1:]]
        elif rows:
            break
    return columns, rows


def test_cli_printed_tables_match_reference(monkeypatch, capsys, tmp_path):
    """``nrc sweep`` prints rank_tau, d_K/||W|| and the member means of the trained sweep.

    Training is replaced by weights with known singular values, so the printed numbers have a
    closed form (rank averaged over seeds, so a half-integer shows).
    """
    import sys

    train_mod = sys.modules["nrc.train"]  # the module (``nrc.train`` is also the re-exported function)

    wds, seeds, tol = [0.01, 0.1], [0, 1], 1e-2
    known, last_sweep = {}, []

    def fake_train(arch, data, members, config, **kw):
        rng = np.random.default_rng(7)
        params = {}
        for site, d_out, d_in in arch.sites():
            mats = []
            for i, m in enumerate(members):
                q = {(0.01, 0): 0.6, (0.01, 1): 0.45, (0.1, 0): 0.25, (0.1, 1): 0.3}[(m["weight_decay"], m["seed"])]
                q = q if site != "W2" else q * 0.9
                s = [1.5 * q**k for k in range(min(d_out, d_in))]
                known[(site, m["weight_decay"], m["seed"])] = s
                mats.append(ref.matrix_with_singular_values(rng, d_out, d_in, s))
            params[site] = torch.tensor(np.stack(mats))
        last_sweep[:] = [Sweep(arch, config, members, params, {}, np.zeros(len(members), dtype=bool), 0.0, "cpu")]
        return last_sweep[0]

    monkeypatch.setattr(train_mod, "train", fake_train)
    argv = ["sweep", "--quiet", "--no-cache", "--widths", "8,7", "--classes", "3", "--dim", "6", "--per-class", "5",
            "--weight-decays", ",".join(map(str, wds)), "--seeds", ",".join(map(str, seeds)), "--tol", str(tol),
            "--epochs", "1", "--cache-dir", str(tmp_path)]
    from nrc_companion.cli import main

    assert main(argv) == 0
    text = capsys.readouterr().out
    sites = ["W1", "W2", "W3"]
    cols, rows = _printed_block(text, "Numerical rank")
    assert cols == wds and sorted(rows) == sites
    for site in sites:
        expect = [np.mean([ref.rank_from_s(known[(site, w, s)], tol) for s in seeds]) for w in wds]
        np.testing.assert_allclose(rows[site], expect, rtol=1e-12, err_msg=f"rank of {site}")
    assert any(v != int(v) for r in rows.values() for v in r)  # a seed mean, not one seed
    cols, rows = _printed_block(text, "Distance to rank")
    assert cols == wds and sorted(rows) == sites
    for site in sites:
        expect = [np.mean([ref.dist_from_s(known[(site, w, s)], 3) / ref.dist_from_s(known[(site, w, s)], 0)
                           for s in seeds]) for w in wds]
        np.testing.assert_allclose(rows[site], expect, rtol=6e-3, err_msg=f"d_K/||W|| of {site}")
    # the member means: the same synthetic data the CLI loads, the reference forward pass (MSE, ReLU)
    data = nrc.load_dataset("synthetic", num_classes=3, dim=6, per_class=5, spread=1.0, seed=0)
    x, y = data.x_train.double().numpy(), data.y_train.numpy()
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if "Per weight decay" in ln)
    header = lines[start + 1].split()
    printed = {}
    for ln in lines[start + 2:]:
        tok = ln.split()
        if not tok or not re.fullmatch(r"[0-9.e+-]+", tok[0]):
            if printed:
                break
            continue
        printed[float(tok[0])] = dict(zip(header, map(float, tok[1:])))
    assert sorted(printed) == wds
    sweep = last_sweep[0]
    ref_members = ref.reference_tables((6, 8, 7, 3), "relu", False,
                                       [({k: v[i].numpy() for k, v in sweep.params.items()}, m["weight_decay"])
                                        for i, m in enumerate(sweep.members)],
                                       x, y, "mse", 3, [{n: known[(n, m["weight_decay"], m["seed"])] for n in sites}
                                                        for m in sweep.members])[1]
    for w in wds:
        idx = [i for i, m in enumerate(sweep.members) if m["weight_decay"] == w]
        for col in ("train_acc", "train_loss"):
            expect = np.mean([ref_members[i][col] for i in idx])
            assert printed[w][col] == pytest.approx(expect, rel=2e-3, abs=1e-3), f"{col} at lambda={w}"
        assert printed[w]["diverged"] == 0
