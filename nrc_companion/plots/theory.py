"""Figures of the theory checks: lines per panel and ratios per weight matrix (derivation, T1-T4); a measured value against its bound, profiles over the layers, descent paths (T5-T9, E2)."""
from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nrc.timing import timed

from .style import BAND, WIDTH, fmt_value, hue_palette, lambda_axis, legend_outside, log_y, sites_of


@timed("figures")  # nrc.timing
def lines_by_panel(df: pd.DataFrame, x: str, y: str, *, col: str, hue: str, style: str | None = None,
                   ref: float | None = None, ref_label: str | None = None, floor: float | None = None,
                   xlabel: str | None = None, ylabel: str | None = None, height: float = 3.6):
    """``y`` against ``x`` (log-log), one panel per value of ``col``, one line per ``hue`` (and ``style``).

    Each line is the mean over the rows sharing its ``x``, ``hue``, ``style`` and panel (e.g. the
    seeds) with a min-max band. A numeric ``hue`` (e.g. the weight decay) takes
    :func:`lambda_palette`, any other the colour-blind palette (weight matrices in layer order). An
    ``x`` with 0 among its values keeps it at the left end of a symlog axis (:func:`lambda_axis`).
    ``ref`` draws a dashed horizontal line on every panel (e.g. a tolerance, or 1). Values below
    ``floor`` are drawn at the floor. The legend sits right of the panels.

    T1 draws the relative gradient residual against the L-BFGS budget with it (panels: activation,
    hue: :math:`\\lambda`, style: loss); T2 the slack ratio against :math:`\\lambda` (panels: loss,
    hue: weight matrix).
    """
    data = df.copy()
    if floor is not None:
        data[y] = np.maximum(data[y].to_numpy(dtype=float), floor)
    panels = list(dict.fromkeys(data[col]))
    numeric = pd.api.types.is_numeric_dtype(data[hue])
    hues = sites_of(data) if hue == "site" else (sorted(data[hue].unique()) if numeric else list(dict.fromkeys(data[hue])))
    pal = hue_palette(hues)
    hue_name = {"weight_decay": r"$\lambda$", "site": "weight"}.get(hue, hue)
    data[hue_name] = data[hue].map(fmt_value)
    palette = {fmt_value(k): v for k, v in pal.items()}
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, height), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes[0], panels):
        last = ax is axes[0][-1]
        sns.lineplot(data=data[data[col] == panel], x=x, y=y, hue=hue_name, hue_order=list(palette),
                     palette=palette, style=style, markers=True if style else None, marker=None if style else "o",
                     dashes=style is not None, errorbar=BAND, ax=ax, lw=1.6, markersize=6, legend=last)
        lambda_axis(ax, data[x], label=xlabel or x)
        ticks = sorted(data[x].unique())
        if len(ticks) <= 8:  # few values (a grid): label each of them, nothing else
            ax.set_xticks(ticks, [fmt_value(t) for t in ticks])
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_yscale("log")
        if ref is not None:
            ax.axhline(ref, color="0.3", ls="--", lw=1.2, label=ref_label if last else None)
        ax.set_title(f"{col} = {panel}")
    log_y(axes[0][0])  # once all panels are drawn: the y axis is shared
    axes[0][0].set_ylabel(ylabel or y)
    legend_outside(fig, axes[0][-1], title=None if style else hue_name)  # with a style, seaborn titles each part
    return fig


@timed("figures")  # nrc.timing
def ratio_strips(df: pd.DataFrame, ratios: dict, *, x: str = "site", col: str | None = None, ref: float = 1.0,
                 ylabel: str = "ratio", xlabel: str = "weight matrix"):
    """Ratios per weight matrix on a log axis, one dot per row and ratio, one colour per ratio, one panel per ``col``.

    ``df`` has one row per weight matrix and case (columns ``x``, optionally ``col`` and ``layer``,
    which orders the weight matrices) and one column per ratio; ``ratios`` maps those columns to
    their legend labels. The columns are drawn from their tidy long form (one row per value);
    missing values (NaN) are left out. A dashed line marks ``ref`` (1: the two sides are equal).
    The legend sits right of the panels.

    T3 draws the measured distance and the Cauchy-Schwarz and Lemma A2 forms over the exact bound
    with it (panels: loss); T4 the k-means and random bounds over the label bound.
    """
    hue, y = "ratio ", "value "
    ids = [c for c in dict.fromkeys((x, col, "layer")) if c is not None and c in df]
    long = df.melt(id_vars=ids, value_vars=list(ratios), var_name=hue, value_name=y).dropna(subset=[y])
    long[hue] = long[hue].map(ratios)
    panels = list(dict.fromkeys(long[col])) if col else [None]
    order = sites_of(long) if x == "site" else list(dict.fromkeys(long[x]))
    hues = list(ratios.values())
    pal = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 3.6), sharey=True, squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], panels):
        sub = long if panel is None else long[long[col] == panel]
        sns.stripplot(data=sub, x=x, y=y, order=order, hue=hue, hue_order=hues, palette=pal, dodge=True,
                      jitter=0.15, log_scale=True, size=5, ax=ax, legend=ax is axes[0][0])
        ax.axhline(ref, color="0.3", ls="--", lw=1.2)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        if panel is not None:
            ax.set_title(f"{col} = {panel}")
    log_y(axes[0][0])  # once all panels are drawn: the y axis is shared
    legend_outside(fig, axes[0][0])
    return fig


def _lambda_hue(data: pd.DataFrame, hue: str) -> tuple[pd.DataFrame, str, dict]:
    """``data`` with a text column for ``hue`` (the values as :func:`fmt_value` writes them), its name and palette.

    A numeric ``hue`` (e.g. the weight decay) takes :func:`lambda_palette`, any other the colour-blind palette.
    """
    numeric = pd.api.types.is_numeric_dtype(data[hue])
    values = sorted(data[hue].unique()) if numeric else list(dict.fromkeys(data[hue]))
    pal = hue_palette(values)
    name = {"weight_decay": r"$\lambda$"}.get(hue, hue)
    return data.assign(**{name: data[hue].map(fmt_value)}), name, {fmt_value(k): v for k, v in pal.items()}


@timed("figures")  # nrc.timing
def measured_vs_bound(df: pd.DataFrame, bound: str, measured: str, *, hue: str, style: str | None = None,
                      xlabel: str | None = None, ylabel: str | None = None):
    """A measured value against its bound (log-log), one point per row, with the line :math:`y = x`.

    Colour: ``hue`` (e.g. the training stage), marker: ``style`` (e.g. the activation). Every point
    must lie on or below the line; its distance below is the slack. T6 draws
    :math:`\\mathrm{TCV}_2(Z_\\ell)/N` against the Lemma A3 bound with it.
    """
    hues = list(dict.fromkeys(df[hue]))
    fig, ax = plt.subplots(figsize=(WIDTH, 4.6), layout="constrained")
    sns.scatterplot(data=df, x=bound, y=measured, hue=hue, hue_order=hues, style=style,
                    palette=dict(zip(hues, sns.color_palette("colorblind", len(hues)))), s=30, alpha=0.75, ax=ax)
    lo = min(df[bound].min(), df[measured].min())
    hi = max(df[bound].max(), df[measured].max())
    ax.plot([lo, hi], [lo, hi], color="0.3", ls="--", lw=1.2, label="$y = x$")
    ax.set(xscale="log", yscale="log", xlabel=xlabel or bound, ylabel=ylabel or measured)
    legend_outside(fig, ax)
    return fig


@timed("figures")  # nrc.timing
def layer_profile(df: pd.DataFrame, columns: dict, *, ylabel: str, hue: str = "weight_decay",
                  col: str | None = None, logy: bool = True, xlabel: str = r"layer $\ell$"):
    """Values per layer (x: the integer column ``layer``), one line per ``hue`` and quantity, one panel per ``col``.

    ``columns`` maps the columns of ``df`` to draw to their names in the legend (line style: solid
    for the first, dashed for the next, e.g. measured and bound). Lines are the mean over the rows
    sharing a layer, ``hue`` value and panel (e.g. the seeds) with a min-max band; a numeric ``hue``
    takes :func:`lambda_palette`. T6 draws the within-class variability of each layer and its
    chained Lemma A3 bound with it (panels: activation); T7 each layer's norm and the norm that
    Lemma A4 predicts.
    """
    keep = [c for c in ["layer", hue, col] if c is not None]
    long = df.melt(id_vars=keep, value_vars=list(columns), var_name="_column", value_name="_value")
    long["quantity"] = long["_column"].map(columns)
    long, hue_name, palette = _lambda_hue(long, hue)
    panels = list(dict.fromkeys(long[col])) if col else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 3.6), sharey=True, squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], panels):
        sub = long if panel is None else long[long[col] == panel]
        sns.lineplot(data=sub, x="layer", y="_value", hue=hue_name, hue_order=list(palette), palette=palette,
                     style="quantity", style_order=list(columns.values()), markers=True, dashes=True,
                     errorbar=BAND, ax=ax, lw=1.6, markersize=6, legend=ax is axes[0][-1])
        if logy:
            log_y(ax)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set(xlabel=xlabel, ylabel=ylabel, title=panel if panel is not None else "")
    legend_outside(fig, axes[0][-1])
    return fig


@timed("figures")  # nrc.timing
def descent_paths(df: pd.DataFrame, panels, *, x: str = "step", hue: str = "weight_decay", style: str = "method",
                  refs: dict | None = None, xlabel: str | None = None):
    """Quantities along training runs, one panel per quantity, one line per ``hue`` and ``style``.

    ``panels`` is a list of ``(column, axis label)``; ``refs`` maps a column to the value of a
    dashed horizontal line on its panel (e.g. 1: the budget). The step axis is symlog (step 0, the
    initialisation, at its left end), the values log. Lines are the mean over the rows sharing a
    step, ``hue`` and ``style`` value (e.g. the seeds) with a min-max band. T7 draws the regularised
    loss relative to its start and the share of the norm budget used, along gradient descent and
    SGD, with it.
    """
    data, hue_name, palette = _lambda_hue(df, hue)
    styles = list(dict.fromkeys(data[style]))
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 3.6), squeeze=False, layout="constrained")
    for ax, (column, label) in zip(axes[0], panels):
        sns.lineplot(data=data, x=x, y=column, hue=hue_name, hue_order=list(palette), palette=palette, style=style,
                     style_order=styles, errorbar=BAND, ax=ax, lw=1.5, legend=ax is axes[0][-1])
        if refs and column in refs:
            ax.axhline(refs[column], color="0.3", ls="--", lw=1.2)
        lambda_axis(ax, data[x], label=xlabel or x)
        log_y(ax)
        ax.set_ylabel(label)
    legend_outside(fig, axes[0][-1])
    return fig
