"""nrc.report (notebook helpers) and nrc.plots (book figures), checked against independent computations."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from nrc import plots, report  # noqa: E402


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=30).astype(float)  # ties on purpose
    y = x * rng.choice([-1.0, 1.0]) + rng.normal(size=30)
    assert report.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_guards():
    assert np.isnan(report.spearman([1, 1, 1], [1, 2, 3]))  # constant side
    assert np.isnan(report.spearman([1, 2, np.nan], [1, 2, 3]))  # non-finite value
    assert np.isnan(report.spearman([1, 2, np.inf], [1, 2, 3]))
    assert np.isnan(report.spearman([1.0], [2.0]))
    with pytest.raises(ValueError, match="same length"):
        report.spearman([1, 2], [1, 2, 3])


def test_sign_helpers_and_format():
    assert report.negative({"W1": -0.5, "W2": -1.0})
    assert not report.negative({"W1": -0.5, "W2": np.nan})
    assert not report.negative({})
    assert report.positive(pd.Series([0.1, 2.0]))
    assert not report.positive([0.1, 0.0])
    assert report.fmt_by_site({"W1": -0.9, "W2": np.nan}) == "W1: -0.90, W2: nan (constant)"
    assert report.verdict_text(True, "a", "b") == "holds: a"
    assert report.verdict_text(False, "a", "b") == "differs: b"


def _cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


def test_show_table_full_text_no_index_padded(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    long_text = "d_K^F(W)/||W||_F falls as lambda grows (Spearman < 0) in every hidden layer"
    df = pd.DataFrame({"what": [long_text, "short"], "ratio": [0.8132, 2.3], "small": [0.0, 0.2]},
                      index=[7, 8])
    assert report.show_table(df, {"ratio": "{:.4f}", "small": "{:.2e}"}) is None
    assert len(shown) == 1
    html = shown[0].data
    cells = _cells(html)
    # every value is its own cell, in full: nothing truncated, numbers cannot run together
    assert cells == [long_text.replace("<", "&lt;"), "0.8132", "0.00e+00", "short", "2.3000", "2.00e-01"]
    assert "overflow-x: auto" in html  # wide tables scroll inside their box
    assert "padding" in html
    assert ">7<" not in html and ">8<" not in html  # no index


def test_verdict_table(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    report.verdict_table([{"claim": 2, "what": "x falls", "measured": "W1: -1.00", "passed": False}])
    assert _cells(shown[0].data) == ["2", "x falls", "W1: -1.00", "differs"]


def test_lambda_palette_is_ordered_in_lightness():
    pal = plots.lambda_palette([0.0, 0.001, 0.01, 0.1, 0.03])
    assert list(pal) == [0.0, 0.001, 0.01, 0.03, 0.1]
    lum = [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b, _ in pal.values()]
    assert all(a < b for a, b in zip(lum, lum[1:]))  # reads in greyscale: monotone lightness
    assert max(lum) < 0.75  # no pale yellow end on white


def test_vs_lambda_draws_mean_with_min_max_band_and_reference():
    rows = [{"weight_decay": lam, "seed": s, "site": site, "dK_rel": 1.0 / (1 + 100 * lam) + 0.01 * s,
             "rank_1e-2": 20 - int(100 * lam) - s}
            for lam in (0.0, 0.01, 0.1) for s in (0, 1) for site in ("W1", "W2")]
    df = pd.DataFrame(rows)
    fig = plots.vs_lambda(df, ["dK_rel", "rank_1e-2"], ["a", "b"], ["W1", "W2"], logy=[True, False],
                          refs={"rank_1e-2": (10, "rank $K$")})
    try:
        assert fig.get_size_inches()[0] == pytest.approx(plots.WIDTH)
        ax = fig.axes[1]
        assert any(np.allclose(line.get_ydata(), 10) for line in ax.lines)  # the rank-K line
        w1 = [line for line in ax.lines if line.get_label() in ("W1", "_child0")][0]
        expected = df[df["site"] == "W1"].groupby("weight_decay")["rank_1e-2"].mean().to_numpy()
        assert np.allclose(w1.get_ydata(), expected)
        assert ax.collections  # the band
        assert ax.get_xscale() == "symlog"  # lambda = 0 is kept on the axis
    finally:
        plt.close(fig)
