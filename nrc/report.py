"""Helpers shared by the notebooks: tables, verdicts, rank correlations, glue and page style.

Every notebook page shows results, not plumbing; what more than one page needs lives here
(no helper is defined in two notebooks). Functions return values or display HTML; none of
them trains or measures anything.
"""
from __future__ import annotations

import html as _html
from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["page_setup", "show_table", "verdict_table", "spearman", "fmt_by_site", "negative",
           "positive", "glue", "fmt_list", "verdict_text"]

#: Font size (points) of every figure; with figures 7.5 in wide at 100 dpi shown at the book's
#: content width (about 750 px) text renders at 13-14 px.
FONT_SIZE = 11


def page_setup():
    """Set the figure style of the book for this kernel (seaborn theme, size, dpi, font size).

    Called once in the hidden import cell of each notebook.
    """
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="ticks", font_scale=1.0)
    mpl.rcParams.update({
        "figure.figsize": (7.5, 4.0), "figure.dpi": 100, "savefig.dpi": 100,
        "font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 1, "axes.labelsize": FONT_SIZE,
        "xtick.labelsize": FONT_SIZE - 1, "ytick.labelsize": FONT_SIZE - 1,
        "legend.fontsize": FONT_SIZE - 1, "legend.title_fontsize": FONT_SIZE,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.alpha": 0.3, "figure.constrained_layout.use": True,
    })


def show_table(df: pd.DataFrame, formats: Mapping[str, str] | None = None, *, caption: str | None = None,
               rename: Mapping[str, str] | None = None):
    """Display ``df`` as a styled HTML table: no index, no truncation, padded cells, scrolls when wide.

    Parameters
    ----------
    df : DataFrame
        The table (its index is not shown; reset it first if it carries data).
    formats : mapping, optional
        Column name -> format spec, e.g. ``{"weight_decay": "{:g}", "ratio": "{:.2e}"}``.
        Floats of other columns are shown with ``{:.3g}``.
    caption : str, optional
        One line above the table.
    rename : mapping, optional
        Column labels to show instead of the column names.

    Returns
    -------
    None
        The table is displayed (nothing is returned, so a cell ending with this call does not
        show it twice).
    """
    from IPython.display import HTML, display

    formats = dict(formats or {})
    for c in df.columns:
        if c not in formats and pd.api.types.is_float_dtype(df[c]):
            formats[c] = "{:.3g}"
    styler = df.style.format(formats, na_rep="n/a", escape="html").hide(axis="index")
    if rename:
        styler = styler.relabel_index([rename.get(c, c) for c in df.columns], axis="columns")
    styler = styler.set_table_styles([
        {"selector": "", "props": "border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em;"},
        {"selector": "th", "props": "text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #999;"
                                    " white-space: nowrap;"},
        {"selector": "td", "props": "padding: 0.25em 0.8em; border-bottom: 1px solid #e5e5e5;"
                                    " vertical-align: top;"},
    ])
    cap = f"<p><em>{_html.escape(caption)}</em></p>" if caption else ""
    out = HTML(f'<div class="nrc-table" style="overflow-x: auto; max-width: 100%;">{cap}'
               f"{styler.to_html()}</div>")
    display(out)


def verdict_table(checks: list[dict]):
    """Display the checks of :func:`nrc.check` as a table: claim, what was tested, measured, verdict."""
    df = pd.DataFrame(checks, columns=["claim", "what", "measured", "passed"])
    df["verdict"] = np.where(df["passed"], "holds", "differs")
    show_table(df[["claim", "what", "measured", "verdict"]], {"claim": "{:d}"})


def spearman(x, y) -> float:
    """Spearman rank correlation of ``x`` and ``y``.

    NaN when either side is constant or holds a non-finite value (no correlation to report).
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.shape} and {ya.shape}")
    if xa.size < 2 or not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        return float("nan")
    rx, ry = pd.Series(xa).rank().to_numpy(), pd.Series(ya).rank().to_numpy()
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def fmt_by_site(d: Mapping[str, float], spec: str = ".2f") -> str:
    """``{'W1': -0.9, ...}`` -> ``'W1: -0.90, ...'`` (NaN shown as ``'nan (constant)'``)."""
    return ", ".join(f"{k}: {v:{spec}}" if np.isfinite(v) else f"{k}: nan (constant)" for k, v in d.items())


def _values(d):
    return list(d.values()) if isinstance(d, Mapping) else list(np.asarray(d, dtype=float))


def negative(d) -> bool:
    """Every value (of a mapping, or of a sequence / Series) finite and below 0; False when empty."""
    vals = _values(d)
    return bool(vals) and all(np.isfinite(v) and v < 0 for v in vals)


def positive(d) -> bool:
    """Every value (of a mapping, or of a sequence / Series) finite and above 0; False when empty."""
    vals = _values(d)
    return bool(vals) and all(np.isfinite(v) and v > 0 for v in vals)


def glue(name: str, value, display: bool = False):
    """``myst_nb.glue`` when myst-nb is installed (a no-op otherwise); returns ``value``."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value


def fmt_list(values, spec: str = "g") -> str:
    """``[0.0, 0.001, 0.01]`` -> ``'0, 0.001, 0.01'``."""
    return ", ".join(format(v, spec) if isinstance(v, (int, float, np.number)) else str(v) for v in values)


def verdict_text(passed: bool, holds: str, differs: str) -> str:
    """``'holds: ...'`` or ``'differs: ...'`` for glued verdict sentences."""
    return f"holds: {holds}" if passed else f"differs: {differs}"
