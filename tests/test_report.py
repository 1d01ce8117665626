"""nrc_companion.report (notebook helpers) and nrc_companion.plots (book figures), checked against independent computations."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nrc_companion import plots, report  # noqa: E402


def _cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


def test_show_table_full_text_no_index_padded(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
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


def _capture(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append((obj, kw)))
    return shown


NEW_CHECK = {"id": "e1.claim2.dk_rel", "claim": 2, "kind": "empirical",
             "statement": "$d_K^F(W)/\\|W\\|_F$ falls as $\\lambda$ grows in every hidden layer",
             "measured": "$\\rho=-0.93$ [−0.97, −0.88], 3 seeds", "value": -0.93, "interval": [-0.97, -0.88],
             "verdict": "inconclusive", "threshold": "upper end of the interval below 0",
             "reason": "a rank correlation reads 'falls' without assuming a shape", "detail": "Per layer: ..."}


def test_verdict_table_old_records(monkeypatch):
    """Old records (what, measured, passed) still render: passed -> pass, failed -> differs; their
    ASCII pseudo-TeX is escaped, so MyST shows it as text (no stray emphasis or math)."""
    shown = _capture(monkeypatch)
    report.verdict_table([{"claim": 2, "what": "x_i falls, ||W||_F < 1", "measured": "W1: -1.00", "passed": False},
                          {"claim": 3, "what": "y", "measured": "m", "passed": True}])
    (bundle, kw), = shown
    assert kw == {"raw": True}
    md = bundle["text/markdown"]
    assert md.count("nrc-verdict-differs") == 1 and md.count("nrc-verdict-pass") == 1
    assert "x\\_i falls, \\|\\|W\\|\\|\\_F \\< 1" in md
    assert "[Claim 2](#paper-claim-2)" in md and "**Measured:** W1: -1.00" in md
    assert "differs" in bundle["text/html"] and "x_i falls, ||W||_F &lt; 1" in bundle["text/html"]


def test_verdict_table_new_records_cards_with_folded_details(monkeypatch):
    """One card per check: badge, claim link, statement with its math, measured number with its
    interval; threshold, reason and detail only inside the folded dropdown."""
    shown = _capture(monkeypatch)
    report.verdict_table([NEW_CHECK, dict(NEW_CHECK, id="b", verdict="reported", claim=5, threshold="",
                                          reason="", detail="")])
    md = shown[0][0]["text/markdown"]
    cards = md.split(":::::{container} nrc-check ")[1:]
    assert len(cards) == 2
    first = cards[0]
    assert first.startswith("nrc-check-inconclusive")
    assert '<span class="nrc-verdict nrc-verdict-inconclusive">inconclusive</span>' in first
    assert NEW_CHECK["statement"] in first  # math passed through to MyST untouched
    assert "**Measured:** " + NEW_CHECK["measured"] in first
    head, fold = first.split("::::{dropdown}", 1)
    for field in ("threshold", "reason", "detail"):
        assert NEW_CHECK[field] not in head and NEW_CHECK[field] in fold
    assert "**Threshold:**" not in cards[1] and "nrc-verdict-reported" in cards[1]  # empty fields: not shown
    with pytest.raises(ValueError, match="verdict must be one of"):
        report.verdict_markdown([dict(NEW_CHECK, verdict="holds")])


@pytest.mark.parametrize("values, spec, expected", [
    ([13.4, 6.79, 0.51], "{:.3g}", ["13.400", "6.790", "0.510"]),         # fixed: one decade range
    ([13.4, 6.79e-5], "{:.3g}", ["1.34e+01", "6.79e-05"]),               # wide range: all scientific
    ([0.0, 1e-5, 1e-4, 0.01], "{:g}", ["0e+00", "1e-05", "1e-04", "1e-02"]),
    ([1.0, 2.0, 30.0], None, ["1", "2", "30"]),
    ([0.8132, 2.3], "{:.4f}", ["0.8132", "2.3000"]),                     # explicit specs are kept
])
def test_column_format_one_format_per_column(values, spec, expected):
    fmt = report.column_format(values, spec)
    cells = [fmt.format(v) for v in values]
    assert cells == expected
    assert len({"e" in c for c in cells}) == 1  # never fixed above scientific in one column


def test_show_table_folds_long_and_wide_tables(monkeypatch):
    shown = _capture(monkeypatch)
    short = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    report.show_table(short)
    assert "<details" not in shown[-1][0].data
    report.show_table(pd.DataFrame({"a": np.arange(report.FOLD_ROWS + 1, dtype=float)}), caption="Per member")
    long_html = shown[-1][0].data
    assert long_html.startswith('<details class="nrc-fold"><summary>Per member (13 rows')
    wide = pd.DataFrame({f"column_{i}_with_a_long_name": [1.5] for i in range(15)})
    report.show_table(wide)
    assert "<details" in shown[-1][0].data and "15 columns" in shown[-1][0].data
    report.show_table(wide, fold=False)
    assert "<details" not in shown[-1][0].data


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


def test_legends_sit_outside_the_axes():
    """No legend over data: every legend of the book's figures is a figure legend outside the axes."""
    rows = [{"weight_decay": lam, "seed": s, "site": site, "dK_rel": 1.0 / (1 + 100 * lam) + 0.01 * s,
             "nc1": 1.0 + lam, "tcv1": 1.0 + s + lam, "dK": 0.5 + s, "bound": 2.0 + s, "layer": int(site[1])}
            for lam in (0.0, 0.01, 0.1) for s in (0, 1) for site in ("W1", "W2")]
    df = pd.DataFrame(rows)
    figs = [plots.vs_lambda(df, ["dK_rel", "nc1"], ["a", "b"], ["W1", "W2"]),
            plots.metric_vs(df, "weight_decay", "nc1"),
            plots.bound_scatter(df, bounds=("bound",)),
            plots.loglog_fit(df[df["weight_decay"] > 0], "tcv1", "dK", col="weight_decay")]
    try:
        for fig in figs:
            fig.canvas.draw()
            assert all(ax.get_legend() is None for ax in fig.axes), "a legend inside the axes"
            assert fig.legends, "no legend at all"
            leg = fig.legends[0].get_window_extent()
            for ax in fig.axes:
                box = ax.get_window_extent()
                overlap_w = min(leg.x1, box.x1) - max(leg.x0, box.x0)
                overlap_h = min(leg.y1, box.y1) - max(leg.y0, box.y0)
                assert overlap_w <= 1 or overlap_h <= 1, "the legend overlaps a panel"
    finally:
        for fig in figs:
            plt.close(fig)


def test_page_setup_keeps_svg_text_as_text():
    import io

    report.page_setup()
    fig, ax = plt.subplots()
    ax.set_xlabel("weight decay")
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    assert re.search(r"<text[^>]*font-size: \d+(\.\d+)?px", buf.getvalue()), "text drawn as paths"


def test_spectra_by_site_colours_many_lambdas_with_a_colour_bar():
    """Seven weight decays: one ordered colour bar (ticks = the values), not seven legend swatches."""
    lams = [0.0, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    spec = pd.DataFrame([{"weight_decay": lam, "seed": 0, "site": site, "j": j, "s_rel": 0.5 ** j}
                         for lam in lams for site in ("W1", "W2") for j in range(1, 6)])
    fig = plots.spectra_by_site(spec)
    try:
        bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(bars) == 1 and not fig.legends
        labels = [t.get_text() for t in bars[0].get_yticklabels()]
        assert labels == ["0", "1e-05", "0.0001", "0.0003", "0.001", "0.003", "0.01"]
    finally:
        plt.close(fig)
