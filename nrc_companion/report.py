"""Helpers shared by the notebooks: tables, verdicts, glue and page style.

Every notebook page shows results, not plumbing; what more than one page needs lives here
(no helper is defined in two notebooks). Functions return values or display HTML; none of
them trains or measures anything. :func:`publish` is the closing step of every notebook: it
glues the verdict sentences, writes the record and tables and shows the verdicts.
"""
from __future__ import annotations

import html as _html
from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["page_setup", "show_table", "table_html", "column_format", "fold_html", "verdict_table",
           "verdict_markdown", "verdict_html", "normalise_check", "verdict_badge", "glue", "show", "publish",
           "fmt_list"]

#: Font size (points) of every figure; with figures 7.5 in wide at 100 dpi shown at the book's
#: content width (about 750 px) text renders at 13-14 px.
FONT_SIZE = 11


def page_setup():
    """Set the figure style of the book for this kernel (seaborn theme, size, dpi, font size, SVG).

    Called once in the hidden import cell of each notebook. Figures are shown as SVG with text
    kept as text (``svg.fonttype = "none"``), so they scale to any column width.
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
        # SVG keeps text as text: it scales with the column, stays sharp when enlarged, and its
        # declared font size is what the book's browser test measures.
        "svg.fonttype": "none",
    })
    try:  # inline figures (and glued ones, which go through the same formatter) as SVG
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # no IPython kernel tools: plain scripts draw with their own backend
        return
    if get_ipython() is not None:  # only in a kernel; a plain script must not create a shell
        set_matplotlib_formats("svg")


#: A table longer than this many rows is folded behind a summary line (raw data, not the result).
FOLD_ROWS = 12
#: Width (px) of the book's text column on a laptop; a table estimated wider than this is folded.
COLUMN_PX = 760
_CHAR_PX = 7.6   # average width of a character of the table font (0.85 rem) ...
_CELL_PAD_PX = 22  # ... and the horizontal padding of a cell


def _spec_parts(spec: str | None):
    """``"{:.3g}"`` -> ``(3, "g")``; ``"{:g}"`` -> ``(None, "g")``; None for other specs."""
    import re

    if spec is None:
        return None, "g"
    m = re.fullmatch(r"\{:([+ ]?)(?:\.(\d+))?([gG])\}", spec)
    if not m:
        return None
    return (int(m.group(2)) if m.group(2) else None), "g"


def column_format(values, spec: str | None = None) -> str:
    """One format spec for a whole float column, chosen from the data's range.

    Explicit fixed or scientific specs (``"{:.2f}"``, ``"{:.2e}"``) are kept. A ``g`` spec (or
    none) would switch between fixed and scientific from row to row ("13.4" above "6.79e+00"); it
    becomes fixed when every nonzero value lies in [1e-3, 1e5) and spans less than three decades,
    else scientific, with the spec's significant digits (3 by default; for a bare ``{:g}`` the
    fewest that show every value as ``g`` would).

    Parameters
    ----------
    values : array-like of float
    spec : str, optional
        The format the caller asked for.

    Returns
    -------
    str
        A ``str.format`` spec used for every value of the column.
    """
    parts = _spec_parts(spec)
    if parts is None:
        return spec
    sig, _ = parts
    a = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    a = np.abs(a[np.isfinite(a) & (a != 0)])
    if sig is None:
        if spec is None:
            sig = 3
        else:  # bare {:g}: as many digits as the values need, at most 6
            sig = max([len(f"{v:.6e}".split("e")[0].replace(".", "").rstrip("0")) for v in a] or [1])
    if a.size == 0:
        return "{:.0f}"
    lo, hi = float(a.min()), float(a.max())
    if lo >= 1e-3 and hi < 1e5 and hi / lo < 1e3:
        if np.all(a == np.round(a)) and hi < 10 ** sig:
            return "{:.0f}"
        decimals = int(min(6, max(0, sig - 1 - np.floor(np.log10(lo)))))
        return f"{{:.{decimals}f}}"
    return f"{{:.{max(0, sig - 1)}e}}"


def _table_px(df: pd.DataFrame, formats: Mapping[str, str], labels: list[str]) -> float:
    """Rough rendered width of the table in px (characters of the widest cell per column)."""
    px = 0.0
    for c, label in zip(df.columns, labels):
        spec = formats.get(c)
        cells = [str(label)]
        for v in df[c].head(200):
            try:
                cells.append(spec.format(v) if spec and v == v else str(v))
            except (ValueError, TypeError):
                cells.append(str(v))
        px += max(len(x) for x in cells) * _CHAR_PX + _CELL_PAD_PX
    return px


def fold_html(inner: str, *, n_rows: int, n_cols: int, wide: bool, caption: str | None = None) -> str:
    """Wrap a table's HTML in a closed ``<details>`` when it is long or wide (raw data off the page).

    Returns ``inner`` unchanged when the table is at most :data:`FOLD_ROWS` rows and not ``wide``.
    """
    if n_rows <= FOLD_ROWS and not wide:
        return inner
    what = _html.escape(caption) if caption else "Table"
    why = f"{n_rows} rows × {n_cols} columns"
    return (f'<details class="nrc-fold"><summary>{what} ({why}; click to show)</summary>'
            f"{inner}</details>")


def show_table(df: pd.DataFrame, formats: Mapping[str, str] | None = None, *, caption: str | None = None,
               rename: Mapping[str, str] | None = None, fold: bool | None = None):
    """Display ``df`` as a styled HTML table: no index, no truncation, one number format per column.

    Tables longer than :data:`FOLD_ROWS` rows or wider than the text column are raw data, not the
    page's result: they are folded behind a one-line summary (a ``<details>``) and scroll inside
    their own box when opened.

    Parameters
    ----------
    df : DataFrame
        The table (its index is not shown; reset it first if it carries data).
    formats : mapping, optional
        Column name -> format spec, e.g. ``{"weight_decay": "{:g}", "ratio": "{:.2e}"}``. Fixed
        (``f``) and scientific (``e``) specs are used as given; ``g`` specs, and float columns
        without a spec, get one format for the whole column from :func:`column_format`.
    caption : str, optional
        One line above the table (and the summary line when it is folded).
    rename : mapping, optional
        Column labels to show instead of the column names.
    fold : bool, optional
        Force folding on (True) or off (False); by default from the table's size.

    Returns
    -------
    None
        The table is displayed (nothing is returned, so a cell ending with this call does not
        show it twice).
    """
    from IPython.display import HTML, display

    display(HTML(table_html(df, formats, caption=caption, rename=rename, fold=fold)))


def table_html(df: pd.DataFrame, formats: Mapping[str, str] | None = None, *, caption: str | None = None,
               rename: Mapping[str, str] | None = None, fold: bool | None = None) -> str:
    """The HTML that :func:`show_table` displays."""
    formats = dict(formats or {})
    for c in df.columns:
        if pd.api.types.is_float_dtype(df[c]):
            formats[c] = column_format(df[c], formats.get(c))
    styler = df.style.format(formats, na_rep="n/a", escape="html").hide(axis="index")
    labels = [rename.get(c, c) if rename else c for c in df.columns]
    if rename:
        styler = styler.relabel_index(labels, axis="columns")
    styler = styler.set_table_styles([
        {"selector": "", "props": "border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em;"},
        {"selector": "th", "props": "text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #999;"
                                    " white-space: nowrap;"},
        {"selector": "td", "props": "padding: 0.25em 0.8em; border-bottom: 1px solid #e5e5e5;"
                                    " vertical-align: top; font-variant-numeric: tabular-nums;"},
    ])
    cap = f"<p><em>{_html.escape(caption)}</em></p>" if caption else ""
    inner = f'<div class="nrc-table" style="overflow-x: auto; max-width: 100%;">{cap}{styler.to_html()}</div>'
    wide = _table_px(df, formats, labels) > COLUMN_PX
    if fold is False:
        return inner
    if fold:
        return fold_html(inner, n_rows=max(len(df), FOLD_ROWS + 1), n_cols=df.shape[1], wide=True,
                         caption=caption)
    return fold_html(inner, n_rows=len(df), n_cols=df.shape[1], wide=wide, caption=caption)


# --------------------------------------------------------------------------------------------
# verdicts

#: Verdicts a check can carry, and the badge text each shows.
VERDICTS = ("pass", "differs", "inconclusive", "reported")
_KINDS = {"empirical": "empirical", "construction": "by construction", "convergence": "convergence",
          "report": "report", "method": "method"}
_MD_SPECIAL = set("\\`*_{}[]<>#|$~&")


def _md_text(text) -> str:
    """Plain text escaped for MyST (old-format records write ASCII pseudo-TeX, not markdown)."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in " ".join(str(text).split()))


def normalise_check(c: Mapping) -> dict:
    """A check in the current format (``id, claim, kind, statement, measured, verdict, ...``).

    Old records (``claim, what, measured, passed``) map ``passed`` True to ``"pass"`` and False
    to ``"differs"``; their ``what`` and ``measured`` are plain text, escaped for MyST (flag
    ``"plain": True``).
    """
    c = dict(c)
    if "verdict" not in c:
        passed = c.get("passed")
        c["verdict"] = "pass" if passed else "differs"
        c.setdefault("statement", _md_text(c.get("what", "")))
        c["measured"] = _md_text(c.get("measured", ""))
        c["plain"] = True
    if c["verdict"] not in VERDICTS:
        raise ValueError(f"check {c.get('id', c.get('claim'))}: verdict must be one of {VERDICTS}, "
                         f"got {c['verdict']!r}")
    c.setdefault("kind", "")
    return c


def verdict_badge(verdict: str) -> str:
    """Inline HTML badge of a verdict (styled by the book's ``nrc.css``)."""
    return f'<span class="nrc-verdict nrc-verdict-{verdict}">{_html.escape(verdict)}</span>'


def verdict_markdown(checks: list[Mapping]) -> str:
    """The checks as MyST: one card per check, details folded (what the book renders).

    Each card shows the verdict badge, a link to the claim, the statement (math rendered), the
    measured number with its interval; threshold, reason and detail sit in a closed dropdown.
    Cards stack, so nothing that carries a verdict scrolls sideways on a phone.
    """
    out = ["::::::{container} nrc-verdicts", ""]
    for raw in checks:
        c = normalise_check(raw)
        kind = _KINDS.get(str(c.get("kind")), "")
        claim = c.get("claim")
        head = verdict_badge(c["verdict"])
        if claim is not None:
            head += f" [Claim {int(claim)}](#paper-claim-{int(claim)})"
        if kind:
            head += f' <span class="nrc-kind">({kind})</span>'
        # badge, claim and statement in one paragraph: the verdict is read with what it is about
        out += [f":::::{{container}} nrc-check nrc-check-{c['verdict']}", "",
                f"{head}: {' '.join(str(c.get('statement', '')).split())}", ""]
        measured = " ".join(str(c.get("measured", "")).split())
        if measured:
            out += [f"**Measured:** {measured}", ""]
        extra = []
        if c.get("threshold"):
            extra += [f"**Threshold:** {c['threshold']}", ""]
        if c.get("reason"):
            extra += [f"**Why this reads the claim fairly:** {c['reason']}", ""]
        if c.get("detail"):
            extra += [str(c["detail"]), ""]
        if c.get("id"):
            extra += [f"Check `{c['id']}`.", ""]
        if extra:
            out += ["::::{dropdown} Threshold and reading", ":class-container: nrc-check-detail", ""]
            out += extra + ["::::", ""]
        out += [":::::", ""]
    out += ["::::::", ""]
    return "\n".join(out)


def verdict_html(checks: list[Mapping]) -> str:
    """The checks as plain HTML cards, for Jupyter and Colab (the book renders the MyST instead)."""
    cards = []
    for raw in checks:
        c = normalise_check(raw)
        if c.get("plain"):  # old record: show its own text, not the MyST-escaped copy
            c.update(statement=raw.get("what", ""), measured=raw.get("measured", ""))
        e = _html.escape
        claim = f" claim {int(c['claim'])}" if c.get("claim") is not None else ""
        body = [f"<p>{verdict_badge(c['verdict'])}<strong>{claim}</strong> {e(str(c.get('kind') or ''))}</p>",
                f"<p>{e(str(c.get('statement', '')))}</p>"]
        if c.get("measured"):
            body.append(f"<p><strong>Measured:</strong> {e(str(c['measured']))}</p>")
        extra = "".join(f"<p><strong>{lab}:</strong> {e(str(c[k]))}</p>"
                        for k, lab in (("threshold", "Threshold"), ("reason", "Why"), ("detail", "Detail"))
                        if c.get(k))
        if extra:
            body.append(f"<details><summary>Threshold and reading</summary>{extra}</details>")
        cards.append(f'<div class="nrc-check nrc-check-{c["verdict"]}" style="border-top: 1px solid #ccc; '
                     f'padding: 0.3em 0;">{"".join(body)}</div>')
    return f'<div class="nrc-verdicts">{"".join(cards)}</div>'


def verdict_table(checks: list[Mapping]):
    """Display a notebook's checks: one card per check (claim, statement, measured, verdict).

    Accepts the records of :mod:`nrc_companion.verdicts` (``statement``, ``measured``, ``verdict``, ...)
    and the old ones of :func:`nrc.check` (``what``, ``measured``, ``passed``). The output carries
    MyST markdown, which the book renders (math, claim links, folded details), and HTML for
    Jupyter.
    """
    from IPython.display import display

    checks = list(checks)
    display({"text/markdown": verdict_markdown(checks), "text/html": verdict_html(checks),
             "text/plain": f"{len(checks)} checks: " + ", ".join(normalise_check(c)["verdict"] for c in checks)},
            raw=True)


def _close_figure(obj) -> None:
    """Close ``obj`` in pyplot when it is a matplotlib Figure (the kernel then holds no open figure)."""
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        import matplotlib.pyplot as plt

        plt.close(obj)


def glue(name: str, value, display: bool = False):
    """``myst_nb.glue`` when myst-nb is installed (a no-op otherwise); returns ``value``.

    A matplotlib Figure is closed once glued: its rendering is already stored in the output, and
    an open figure would be drawn a second time at the end of the cell.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        _glue = None
    if _glue is not None:
        _glue(name, value, display=display)
    _close_figure(value)
    return value


def show(fig) -> None:
    """Display a figure, then close it, so the kernel holds no open figures.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure, typically from ``nrc_companion.plots`` (any displayable object is shown;
        only a Figure is closed).

    Returns
    -------
    None
        Nothing, so a cell ending with this call shows the figure once.
    """
    from IPython.display import display

    display(fig)
    _close_figure(fig)


def publish(notebook: str, values: Mapping, checks: list[Mapping] | None = None, *,
            inputs: Mapping, verdict=None, texts: Mapping[str, str] | None = None,
            tables: Mapping[str, pd.DataFrame] | None = None) -> list[dict]:
    """Close a notebook: glue its verdict sentences and texts, record it, save its tables, show its checks.

    In this order: each verdict sentence (:func:`nrc_companion.verdicts.sentence` of the chosen
    checks, joined by spaces) and each extra text is glued as Markdown (not displayed);
    ``nrc_companion.records.record`` writes ``values``, ``checks`` and ``inputs`` (and glues
    every value); each table is written by ``nrc_companion.records.save_table``; last,
    ``verdict_table`` shows the checks.

    Parameters
    ----------
    notebook : str
        The notebook's name (file stem).
    values : mapping
        Key numbers of the record.
    checks : list of dict, optional
        The evaluated checks; by default ``verdicts.evaluate(notebook, inputs)`` (pass them when
        ``values`` or ``texts`` quote them).
    inputs : mapping
        The structured inputs of the checks (check id -> rows), stored in the record.
    verdict : None, sequence of str or mapping, optional
        Which checks make which glued sentence. None (the default): one sentence of all checks,
        glued as ``"<prefix>_verdict"`` where ``<prefix>`` is the notebook name up to its first
        ``_`` (``"t2_rank_tcv_bound"`` -> ``"t2_verdict"``); a sequence of check ids: one
        sentence of those checks under the same name; a mapping: glue name -> check ids (None
        for all checks), one sentence each (an empty mapping glues none).
    texts : mapping, optional
        Further glue name -> Markdown text.
    tables : mapping, optional
        Table name -> DataFrame, each written as ``<name>.csv`` beside the record.

    Returns
    -------
    list of dict
        The checks (evaluated here when not given).
    """
    from IPython.display import Markdown

    from . import verdicts
    from .records import record, save_table

    if checks is None:
        checks = verdicts.evaluate(notebook, inputs)
    checks = list(checks)
    if isinstance(verdict, str):
        verdict = (verdict,)
    if verdict is None or not isinstance(verdict, Mapping):
        verdict = {f"{notebook.split('_')[0]}_verdict": verdict}
    by_id = {c.get("id"): c for c in checks}
    for name, ids in verdict.items():
        chosen = checks if ids is None else [by_id[i] for i in ids]
        glue(name, Markdown(" ".join(verdicts.sentence(c) for c in chosen)))
    for name, text in (texts or {}).items():
        glue(name, Markdown(text))
    record(notebook, dict(values), checks, inputs=dict(inputs))
    for name, df in (tables or {}).items():
        save_table(df, notebook, name)
    verdict_table(checks)
    return checks


def fmt_list(values, spec: str = "g") -> str:
    """``[0.0, 0.001, 0.01]`` -> ``'0, 0.001, 0.01'``."""
    return ", ".join(format(v, spec) if isinstance(v, (int, float, np.number)) else str(v) for v in values)
