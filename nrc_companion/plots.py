"""Figures drawn with seaborn from the tidy tables of :class:`nrc.Analysis` (one figure per call).

Each function takes a long-form DataFrame and returns the matplotlib ``Figure``; it never calls
``plt.show`` or changes the backend, so notebooks display it and ``myst_nb.glue`` can store it.
Conventions of the book (legible at its content width of about 750 px):

* figures 7.5 in wide at 100 dpi, text of at least 10 pt (:func:`nrc_companion.report.page_setup`);
* lines are the mean over seeds, bands the min-max range over seeds (seaborn ``("pi", 100)``);
* weight decay :math:`\\lambda` is coloured with a sequential palette (viridis without its yellow
  end), so it reads on white and in greyscale; :math:`\\lambda = 0` sits at the left end of a
  symlog axis;
* reference lines (rank :math:`K`, :math:`y = x`) are drawn where they matter;
* legends sit outside the axes (below or right of the panels), never over the data;
* the book shows figures as SVG with text kept as text (:func:`nrc_companion.report.page_setup`).
"""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nrc.timing import timed

def instrument_matplotlib() -> None:
    """Credit figure rendering to "figures" while a timing file is asked for (``NRC_TIMING_FILE``).

    Wraps ``FigureCanvasBase.print_figure``, through which IPython's inline display and
    ``savefig`` render every figure, including those a notebook draws with seaborn directly
    (measured: rendering took 2.4 of a 2.7 s figure cell in T4's smoke run, outside
    ``nrc_companion.plots``). Does nothing without ``NRC_TIMING_FILE``, so matplotlib is left untouched
    for ordinary use; called when :mod:`nrc_companion.plots` is imported.
    """
    if not os.environ.get("NRC_TIMING_FILE"):
        return
    from matplotlib.backend_bases import FigureCanvasBase

    if getattr(FigureCanvasBase.print_figure, "_nrc_timed", False):
        return
    wrapped = timed("figures")(FigureCanvasBase.print_figure)
    wrapped._nrc_timed = True
    FigureCanvasBase.print_figure = wrapped


instrument_matplotlib()  # figure rendering counts as "figures" in a timed run

__all__ = ["lambda_palette", "lambda_colorbar", "lambda_axis", "spectra_by_site", "metric_vs", "vs_lambda",
           "bound_scatter", "loglog_fit", "against_nc1", "singular_values", "bound_terms_bars", "WIDTH",
           "loss_path", "collapse_waypoints", "straight_lines", "fact_ratios", "collapse_cost_ratios",
           "ridge_values", "forecast_spectra", "forecast_errors"]

#: Figure width in inches (at 100 dpi: the book's content width).
WIDTH = 7.5
_BAND = ("pi", 100)  # min-max over the members drawn together (seeds)


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def lambda_palette(values) -> dict:
    """Sequential colours for the sorted distinct ``values`` (viridis from dark to green, no yellow)."""
    vals = sorted(set(values))
    cmap = plt.get_cmap("viridis")
    pos = np.linspace(0.0, 0.78, max(2, len(vals)))[: len(vals)] if len(vals) > 1 else [0.3]
    return {v: cmap(p) for v, p in zip(vals, pos)}


def lambda_colorbar(fig, axes, values, label: str = r"weight decay $\lambda$"):
    """A discrete colour bar for the sorted distinct ``values`` (coloured by :func:`lambda_palette`).

    Used instead of a legend when a figure has many :math:`\\lambda` values: one bar, ordered like
    the values, reads better than a list of near-identical swatches. Returns the colour bar.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap

    pal = lambda_palette(values)
    keys = list(pal)
    cmap = ListedColormap([pal[k] for k in keys])
    norm = BoundaryNorm(np.arange(len(keys) + 1) - 0.5, len(keys))
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=axes, ticks=np.arange(len(keys)), label=label, fraction=0.05, pad=0.02,
                      location="right")
    cb.ax.set_yticklabels([_fmt(k) for k in keys])
    cb.ax.tick_params(length=0)
    cb.outline.set_visible(False)
    return cb


def _hue_palette(values) -> dict:
    vals = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.number)) for v in vals):
        return lambda_palette(vals)
    return dict(zip(vals, sns.color_palette("colorblind", len(vals))))


def _sites(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df.sort_values("layer")["site"])) if "layer" in df else list(dict.fromkeys(df["site"]))


def _legend_outside(fig, ax, title=None):
    """The axes' legend moved out of the plot area (right of it), so it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, title=title, frameon=False, loc="outside right center")


def _log_y(ax):
    """Log y axis; below two decades of data the ticks are written as plain numbers (0.2, 0.5)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def tidy_log_x(ax):
    """Label a short log x axis at 1, 2 and 5 times powers of ten only (minor labels would overlap)."""
    from matplotlib.ticker import LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def lambda_axis(ax, lams, label: str = r"weight decay $\lambda$"):
    """A log :math:`\\lambda` axis that still shows :math:`\\lambda = 0` (symlog, linear below the smallest positive value)."""
    lams = [float(v) for v in lams]
    pos = sorted(v for v in set(lams) if v > 0)
    if pos and min(lams) == 0:
        ax.set_xscale("symlog", linthresh=pos[0], linscale=0.6)
        ax.set_xlim(left=0)
    elif pos:
        ax.set_xscale("log")
    ax.set_xlabel(label)


@timed("figures")  # nrc.timing
def spectra_by_site(spec: pd.DataFrame, *, hue: str = "weight_decay", floor: float = 1e-12,
                    title: str | None = None, col_wrap: int = 2, sites=None, cut: float | None = None,
                    ref: float | None = None):
    """Normalised singular values :math:`s_j/s_1` (log scale) against :math:`j`, one panel per weight matrix.

    One line per value of ``hue`` (mean over the members sharing it, e.g. seeds, with a min-max
    band). Values below ``floor`` are drawn at the floor so exact zeros stay visible. ``cut`` draws
    a dotted vertical line on every panel (e.g. at :math:`j = K`), ``ref`` a dotted horizontal one
    (e.g. a tolerance); the index axis has integer ticks.
    """
    data = spec.copy()
    data["s_rel"] = np.maximum(data["s_rel"].to_numpy(dtype=float), floor)
    sites = list(sites) if sites is not None else list(dict.fromkeys(data["site"]))
    ncol = min(col_wrap, len(sites))
    nrow = int(np.ceil(len(sites) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(WIDTH, 2.9 * nrow + 0.4), sharey=True, squeeze=False, layout="constrained")
    palette = _hue_palette(sorted(data[hue].unique()) if pd.api.types.is_numeric_dtype(data[hue])
                           else data[hue].unique())
    data["_hue"] = data[hue].map(_fmt)
    pal = {_fmt(k): v for k, v in palette.items()}
    # the mean line and min-max band of seaborn's lineplot(errorbar=("pi", 100)), aggregated in one
    # groupby: seaborn aggregates each (hue, j) group separately, 3 s of CPU for E1's 21 members
    stats = data.groupby(["site", "_hue", "j"], sort=True)["s_rel"].agg(["mean", "min", "max"])
    for ax, site in zip(axes.flat, sites):
        for key, colour in pal.items():
            if (site, key) not in stats.index.droplevel("j"):
                continue
            g = stats.loc[(site, key)]
            ax.plot(g.index, g["mean"], color=colour, lw=1.6)
            ax.fill_between(g.index, g["min"], g["max"], color=colour, alpha=0.2, lw=0)
        _log_y(ax)
        if cut is not None:
            ax.axvline(cut, color="0.3", ls=":", lw=1.2)
        if ref is not None:
            ax.axhline(ref, color="0.3", ls=":", lw=1.2)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_title(site)
        ax.set_xlabel("index $j$")
        ax.set_ylabel("$s_j / s_1$")
    for ax in list(axes.flat)[len(sites):]:
        ax.set_visible(False)
    label = r"$\lambda$" if hue == "weight_decay" else hue
    if pd.api.types.is_numeric_dtype(data[hue]) and len(pal) > 3:
        # many ordered values: a colour bar, not a column of similar swatches
        lambda_colorbar(fig, axes.ravel().tolist(), sorted(data[hue].unique()),
                        label=r"weight decay $\lambda$" if hue == "weight_decay" else hue)
    else:
        handles = [plt.Line2D([], [], color=c, lw=2, label=k) for k, c in pal.items()]
        fig.legend(handles=handles, title=label, loc="outside right center", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


@timed("figures")  # nrc.timing
def metric_vs(df: pd.DataFrame, x: str, y: str, *, by: str = "site", logx: bool = True, logy: bool = True,
              floor: float | None = None, ylabel: str | None = None, xlabel: str | None = None,
              title: str | None = None, ref: float | None = None, ref_label: str | None = None,
              style: str | None = None):
    """``y`` against ``x``, one line per value of ``by``: mean over the other members, min-max band.

    Zero ``x`` values are kept on a log :math:`\\lambda` axis (symlog) when ``x`` is the weight decay,
    dropped otherwise (another log ``x`` is labelled at 1, 2 and 5 times powers of ten,
    :func:`tidy_log_x`). ``ref`` draws a dashed horizontal reference line (e.g. rank :math:`K`).
    ``style``: a second column, drawn by line style and marker (colour stays with ``by``), e.g. the
    spread of the data.
    """
    data = df.copy()
    if logx and x != "weight_decay":
        data = data[data[x] > 0]
    if floor is not None:
        data[y] = np.maximum(data[y], floor)
    fig, ax = plt.subplots(figsize=(WIDTH * 0.87, 4.2), layout="constrained")
    groups = _sites(data) if by == "site" else list(dict.fromkeys(sorted(data[by].unique(), key=str)))
    styles = groups if style is None else sorted(data[style].unique(), key=str)
    sns.lineplot(data=data, x=x, y=y, hue=by, hue_order=groups, style=style or by, style_order=styles,
                 palette=sns.color_palette("colorblind", len(groups)), markers=True, dashes=style is not None,
                 errorbar=_BAND, ax=ax, lw=1.8, markersize=7)
    if logx:
        if x == "weight_decay":
            lambda_axis(ax, data[x])
        else:
            ax.set_xscale("log")
            tidy_log_x(ax)
    if logy:
        _log_y(ax)
    if ref is not None:
        ax.axhline(ref, color="0.3", ls="--", lw=1.2, label=ref_label)
    if xlabel or x != "weight_decay":
        ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    _legend_outside(fig, ax, title=None if by == "site" else by)
    if title:
        ax.set_title(title)
    return fig


@timed("figures")  # nrc.timing
def vs_lambda(df: pd.DataFrame, metrics, labels, sites, *, logy=True, floor: float = 1e-16,
              site_labels: dict | None = None, refs: dict | None = None, height: float = 3.8,
              title: str | None = None):
    """One panel per metric against :math:`\\lambda`: one line per weight matrix (mean over seeds, min-max band).

    Parameters
    ----------
    df : DataFrame
        ``Analysis.sites`` (columns ``weight_decay``, ``site`` and the metrics).
    metrics, labels : list of str
        Columns to plot and their axis labels (math allowed).
    sites : list of str
        Weight matrices (lines), in order.
    logy : bool or list of bool
        Log y axis, one for all panels or one per panel; a linear axis gets integer ticks.
    site_labels : dict, optional
        Legend label per site.
    refs : dict, optional
        Metric -> ``(value, label)`` of a dashed horizontal reference line (e.g. rank :math:`K`).
    title : str, optional
        Figure title above the panels (E1: the data set).
    """
    logys = list(logy) if isinstance(logy, (list, tuple)) else [logy] * len(metrics)
    data = df[df["site"].isin(sites)].copy()
    names = [site_labels[s] if site_labels else s for s in sites]
    data["layer "] = data["site"].map(dict(zip(sites, names)))
    fig, axes = plt.subplots(1, len(metrics), figsize=(WIDTH, height), squeeze=False, layout="constrained")
    pal = sns.color_palette("colorblind", len(sites))
    for ax, metric, label, ly in zip(axes[0], metrics, labels, logys):
        d = data.copy()
        d[metric] = np.maximum(d[metric].to_numpy(dtype=float), floor) if ly else d[metric]
        sns.lineplot(data=d, x="weight_decay", y=metric, hue="layer ", hue_order=names, style="layer ",
                     style_order=names, palette=pal, markers=True, dashes=False, errorbar=_BAND, ax=ax,
                     lw=1.8, markersize=7, legend=ax is axes[0][-1])
        lambda_axis(ax, data["weight_decay"])
        if ly:
            _log_y(ax)
        else:
            ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
        if refs and metric in refs:
            value, rlabel = refs[metric]
            ax.axhline(value, color="0.3", ls="--", lw=1.2, label=rlabel)
            ax.annotate(rlabel, (0.02, value), xycoords=("axes fraction", "data"), va="bottom",
                        fontsize=plt.rcParams["legend.fontsize"], color="0.3")
        ax.set_ylabel(label)
    leg = axes[0][-1].get_legend()
    if leg is not None:  # one legend for the figure, below the panels: never over a line
        handles, labs = axes[0][-1].get_legend_handles_labels()
        keep = [(h, lb) for h, lb in zip(handles, labs) if lb in names]
        leg.remove()
        fig.legend([h for h, _ in keep], [lb for _, lb in keep], frameon=False, loc="outside lower center",
                   ncols=min(len(keep), 4))
    if title:
        fig.suptitle(title)
    return fig


@timed("figures")  # nrc.timing
def bound_scatter(sites: pd.DataFrame, *, measured: str = "dK", bounds=("bound", "bound_cs", "bound_a2"),
                  floor: float = 1e-14, title: str | None = None, labels: dict | None = None):
    """Measured :math:`d_K^F(W)` against each bound (log-log), with the line :math:`y = x`.

    Every point must lie below the line (Theorem A); the distance below it is the slack.
    """
    data = sites.replace([np.inf, -np.inf], np.nan)
    rows = []
    for b in bounds:
        if b not in data:
            continue
        d = data[[b, measured]].dropna()
        rows.append(pd.DataFrame({"bound_value": np.maximum(d[b].to_numpy(dtype=float), floor),
                                  "measured": np.maximum(d[measured].to_numpy(dtype=float), floor),
                                  "bound": (labels or {}).get(b, b)}))
    fig, ax = plt.subplots(figsize=(WIDTH * 0.87, 4.8), layout="constrained")
    if rows:
        long = pd.concat(rows, ignore_index=True)
        sns.scatterplot(data=long, x="bound_value", y="measured", hue="bound", style="bound",
                        palette=sns.color_palette("colorblind", len(rows)), s=45, alpha=0.8, ax=ax)
        lo = min(long["bound_value"].min(), long["measured"].min())
        hi = max(long["bound_value"].max(), long["measured"].max())
        ax.plot([lo, hi], [lo, hi], color="0.3", ls="--", lw=1.2, label="$y = x$")
        _legend_outside(fig, ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bound")
    ax.set_ylabel(f"measured {measured}" if measured != "dK" else r"measured $d_K^F(W)$")
    if title:
        ax.set_title(title)
    return fig


@timed("figures")  # nrc.timing
def loglog_fit(df: pd.DataFrame, x: str, y: str, *, hue: str = "site", col: str | None = None,
               xlabel: str | None = None, ylabel: str | None = None, floor: float = 1e-16,
               hue_label=None, hollow: str | None = None, slope_label: bool = False):
    """``y`` against ``x`` on log-log axes, one point per row, with a least-squares line per ``hue``.

    One panel per value of ``col`` (shared y axis). The line is the fit of ``log y`` on ``log x``
    over the points of that colour in that panel with ``y > 0`` (drawn where there are two distinct
    ``x``); points at ``y <= 0`` are drawn at ``floor``. ``hollow``: a boolean column whose true
    rows are drawn as open markers (still fitted). ``slope_label`` appends each line's slope to its
    legend entry (one panel). An ``x`` axis of less than two decades is labelled at 1, 2 and 5
    times powers of ten.
    """
    data = df.copy()
    data["_fit"] = data[y].to_numpy(dtype=float) > 0
    data[y] = np.maximum(data[y].to_numpy(dtype=float), floor)
    panels = sorted(data[col].unique()) if col else [None]
    hues = list(dict.fromkeys(data.sort_values("layer")[hue])) if "layer" in data and hue == "site" \
        else sorted(data[hue].unique(), key=str)
    pal = dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, 3.9), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, p in zip(axes[0], panels):
        sub = data if p is None else data[data[col] == p]
        for h in hues:
            g = sub[sub[hue] == h]
            if g.empty:
                continue
            label = hue_label(h) if hue_label else str(h)
            fit = g[g["_fit"]]
            lx, ly = np.log(fit[x].to_numpy(dtype=float)), np.log(fit[y].to_numpy(dtype=float))
            c = np.polyfit(lx, ly, 1) if len(lx) > 1 and np.ptp(lx) > 0 else None
            if slope_label and c is not None:
                label = f"{label}: slope {c[0]:.2f}"
            open_ = g[hollow].to_numpy(dtype=bool) if hollow else np.zeros(len(g), dtype=bool)
            if (~open_).any():
                ax.scatter(g[x][~open_], g[y][~open_], color=pal[h], s=30, label=label, alpha=0.85)
            if open_.any():
                ax.scatter(g[x][open_], g[y][open_], facecolors="none", edgecolors=pal[h], s=30, alpha=0.85,
                           label=None if (~open_).any() else label)
            if c is not None:
                xx = np.linspace(lx.min(), lx.max(), 20)
                ax.plot(np.exp(xx), np.exp(np.polyval(c, xx)), color=pal[h], lw=1.4, alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if data[x].max() / data[x].min() < 100:
            tidy_log_x(ax)
        if p is not None:
            ax.set_title(f"{col} = {p}")
        ax.set_xlabel(xlabel or x)
    axes[0][0].set_ylabel(ylabel or y)
    handles, labs = axes[0][-1].get_legend_handles_labels()
    seen = dict(zip(labs, handles))  # every panel shares the colours: one legend, below the panels
    fig.legend(list(seen.values()), list(seen), frameon=False, loc="outside lower center", ncols=min(len(seen), 4))
    return fig


@timed("figures")  # nrc.timing
def against_nc1(df: pd.DataFrame, panels, *, hue: str = "checkpoint", hue_order=None, style: str = "site",
                style_order=None, ref: float | None = 1.0, floor: float = 1e-16, ncols: int = 2):
    """Metrics of each weight matrix against NC1 of the features that feed it (log-log), one panel per metric.

    One point per row of ``df`` (column ``nc1``: NC1 of the input features), coloured by ``hue``
    (viridis in ``hue_order``, e.g. training checkpoints), marker by ``style`` (the weight matrix).
    Values below ``floor`` are drawn at the floor.

    Parameters
    ----------
    panels : list of (str, str)
        ``(column, axis label)`` per panel.
    ref : float, optional
        A dashed horizontal line on every panel (e.g. 1: the bound over ``||W||_F`` is vacuous above).
    """
    data = df.copy()
    data[hue] = data[hue].astype(str)
    hue_order = [str(h) for h in hue_order] if hue_order is not None else list(dict.fromkeys(data[hue]))
    style_order = list(style_order) if style_order is not None else list(dict.fromkeys(data[style]))
    pal = dict(zip(hue_order, sns.color_palette("viridis", len(hue_order))))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(8.2, 3.3 * nrows), sharex=True, squeeze=False,
                             layout="constrained")
    for ax, (col, label) in zip(axes.flat, panels):
        d = data.assign(**{col: np.maximum(data[col].to_numpy(dtype=float), floor)})
        sns.scatterplot(data=d, x="nc1", y=col, hue=hue, hue_order=hue_order, palette=pal, style=style,
                        style_order=style_order, s=36, alpha=0.85, ax=ax, legend=ax is axes.flat[0])
        ax.set(xscale="log", yscale="log", ylabel=label, xlabel=r"NC1 of $Z_{\ell-1}$")
        if ref is not None:
            ax.axhline(ref, color="0.3", ls="--", lw=1.1)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    axes.flat[0].get_legend().remove()
    fig.legend(handles, labels, loc="outside right center", frameon=False)
    return fig


@timed("figures")  # nrc.timing
def singular_values(spec: pd.DataFrame, *, hue: str = "matrix", floor: float = 1e-18, cut: float | None = None,
                    title: str | None = None):
    """Singular values :math:`s_j` (log scale, not normalised) against :math:`j`, one marked line per ``hue``.

    ``spec`` has columns ``j``, ``s`` and ``hue`` (e.g. a matrix and its rank-:math:`K` part).
    Values below ``floor`` are drawn at the floor, so exact zeros stay visible; ``cut`` draws a
    dotted vertical line (e.g. at :math:`K + 1/2`).
    """
    data = spec.assign(s=np.maximum(spec["s"].to_numpy(dtype=float), floor))
    order = list(dict.fromkeys(data[hue]))
    fig, ax = plt.subplots(figsize=(WIDTH, 3.8), layout="constrained")
    sns.lineplot(data=data, x="j", y="s", hue=hue, hue_order=order, style=hue, style_order=order,
                 markers=["o", "s", "^", "D", "v"][: len(order)], dashes=False, lw=1, markersize=4,
                 ax=ax, errorbar=None)
    ax.set_yscale("log")
    if cut is not None:
        ax.axvline(cut, color="grey", ls=":", lw=1)
    n = int(data["j"].max())
    ax.set_xticks(range(1, n + 1, max(1, n // 8)))
    ax.set(xlabel="index $j$", ylabel="singular value $s_j$")
    if title:
        ax.set_title(title)
    _legend_outside(fig, ax)
    return fig


@timed("figures")  # nrc.timing
def bound_terms_bars(long: pd.DataFrame, *, panel: str = "model", x: str = "site", hue: str = "quantity",
                     floor: float | None = None):
    """Bars of the bound's terms per weight matrix on a log axis, one panel per value of ``panel``.

    ``long`` is a tidy table (columns ``panel``, ``x``, ``hue`` and ``value``), e.g. the measured
    :math:`d_K^F`, the gradient term, the TCV term and the bound of every layer of two models.
    Values at or below 0 are drawn at ``floor`` (default: a tenth of the smallest positive value).
    """
    floor = floor if floor is not None else long.loc[long["value"] > 0, "value"].min() / 10
    data = long.assign(shown=long["value"].where(long["value"] > 0, floor))
    groups = list(dict.fromkeys(data[panel]))
    fig, axes = plt.subplots(1, len(groups), figsize=(WIDTH, 4.0), sharey=True, squeeze=False, layout="constrained")
    hues = list(dict.fromkeys(data[hue]))
    palette = ["0.15", *sns.color_palette("colorblind", len(hues) - 1)] if len(hues) > 1 else ["0.15"]
    for ax, name in zip(axes[0], groups):
        sns.barplot(data=data[data[panel] == name], x=x, y="shown", hue=hue, hue_order=hues, palette=palette,
                    ax=ax, legend=ax is axes[0][0])
        ax.set(yscale="log", ylim=(floor, None), title=name, xlabel="", ylabel="value")
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][0].get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(hues), frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------
# theorem group (derivation, T1-T4): lines per panel, ratios per weight matrix
# ---------------------------------------------------------------------------------------------

__all__ += ["lines_by_panel", "ratio_strips"]


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
    hues = _sites(data) if hue == "site" else (sorted(data[hue].unique()) if numeric else list(dict.fromkeys(data[hue])))
    pal = lambda_palette(hues) if numeric else dict(zip(hues, sns.color_palette("colorblind", len(hues))))
    hue_name = {"weight_decay": r"$\lambda$", "site": "weight"}.get(hue, hue)
    data[hue_name] = data[hue].map(_fmt)
    palette = {_fmt(k): v for k, v in pal.items()}
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH, height), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes[0], panels):
        last = ax is axes[0][-1]
        sns.lineplot(data=data[data[col] == panel], x=x, y=y, hue=hue_name, hue_order=list(palette),
                     palette=palette, style=style, markers=True if style else None, marker=None if style else "o",
                     dashes=style is not None, errorbar=_BAND, ax=ax, lw=1.6, markersize=6, legend=last)
        lambda_axis(ax, data[x], label=xlabel or x)
        ticks = sorted(data[x].unique())
        if len(ticks) <= 8:  # few values (a grid): label each of them, nothing else
            ax.set_xticks(ticks, [_fmt(t) for t in ticks])
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_yscale("log")
        if ref is not None:
            ax.axhline(ref, color="0.3", ls="--", lw=1.2, label=ref_label if last else None)
        ax.set_title(f"{col} = {panel}")
    _log_y(axes[0][0])  # once all panels are drawn: the y axis is shared
    axes[0][0].set_ylabel(ylabel or y)
    _legend_outside(fig, axes[0][-1], title=None if style else hue_name)  # with a style, seaborn titles each part
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
    order = _sites(long) if x == "site" else list(dict.fromkeys(long[x]))
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
    _log_y(axes[0][0])  # once all panels are drawn: the y axis is shared
    _legend_outside(fig, axes[0][0])
    return fig


# ---------------------------------------------------------------------------------------------
# landscape group (E4, E4b, E5): loss paths, the cost of collapse, the singular-value forecast
# ---------------------------------------------------------------------------------------------


def _log_if_wide(ax, values, decades: float = 2.0):
    """A log y axis where the positive ``values`` span more than ``decades`` decades, else linear."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and v.max() / v.min() > 10 ** decades:
        ax.set_yscale("log")


@timed("figures")  # nrc.timing
def loss_path(curves: pd.DataFrame, *, split: float = 1.0):
    """E4: the regularised loss along the constructed path, one line per start, coloured by :math:`\\lambda`.

    ``curves`` has columns ``seed``, ``weight_decay``, ``t`` (the path parameter: 0 to ``split`` the
    descent, then the collapse) and ``value`` (:math:`\\mathcal L_\\lambda`). The path parameter is
    a normalised arc length, different for every start, so each start is its own line (no mean).
    """
    fig, ax = plt.subplots(figsize=(WIDTH, 4.0), layout="constrained")
    sns.lineplot(data=curves, x="t", y="value", hue="weight_decay", units="seed", estimator=None,
                 palette=lambda_palette(curves["weight_decay"]), ax=ax)
    ax.axvline(split, color="0.3", ls=":", lw=1.2)
    ax.set(yscale="log", xlabel=f"path parameter (0 to {split:g}: descent, {split:g} to {2 * split:g}: collapse)",
           ylabel=r"$\mathcal{L}_\lambda$")
    _legend_outside(fig, ax, title=r"$\lambda$")
    return fig


@timed("figures")  # nrc.timing
def collapse_waypoints(collapse_curves: pd.DataFrame, *, tol: float, floor: float = 1e-18):
    """E4: the collapse part waypoint by waypoint, mean over seeds with a min-max band, per :math:`\\lambda`.

    Left: :math:`\\mathcal L_\\lambda` relative to the first waypoint (the local minimum), minus 1,
    with a line at 0. Right: the largest hidden within/total variance ratio (``tcv_ratio``, drawn
    at least at ``floor``; log scale) with a dashed line at the DNC1 tolerance ``tol``.
    ``collapse_curves`` has columns ``seed``, ``weight_decay``, ``waypoint``, ``L_lambda`` and
    ``tcv_ratio``.
    """
    first = collapse_curves.groupby(["seed", "weight_decay"])["L_lambda"].transform("first")
    data = collapse_curves.assign(rel=collapse_curves["L_lambda"] / first - 1,
                                  ratio=np.maximum(collapse_curves["tcv_ratio"], floor))
    pal = lambda_palette(data["weight_decay"])
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH, 3.8), layout="constrained")
    for ax, col in zip(axes, ["rel", "ratio"]):
        sns.lineplot(data=data, x="waypoint", y=col, hue="weight_decay", palette=pal, errorbar=_BAND, ax=ax,
                     legend=col == "ratio")
        ax.set_xlabel("waypoint (penalty increases)")
    axes[0].axhline(0.0, color="0.3", lw=1)
    axes[0].set_ylabel(r"$\mathcal{L}_\lambda / \mathcal{L}_\lambda^{\rm local} - 1$")
    axes[1].axhline(tol, color="0.3", ls="--", lw=1.2)
    axes[1].set(yscale="log", ylabel=r"max hidden $\mathrm{tr}\,\Sigma_W / \mathrm{tr}\,\Sigma_T$")
    _legend_outside(fig, axes[1], title=r"$\lambda$")
    return fig


@timed("figures")  # nrc.timing
def straight_lines(lines: pd.DataFrame):
    """E4: the loss along straight lines relative to the line's start, one panel per line, per :math:`\\lambda`.

    ``lines`` has columns ``seed``, ``weight_decay``, ``line`` (the panel), ``t`` and ``value``;
    lines are the mean over seeds with a min-max band, a grey line at 1 (above it: a barrier). A
    panel whose values span more than two decades gets a log axis.
    """
    first = lines.groupby(["seed", "weight_decay", "line"])["value"].transform("first")
    data = lines.assign(rel=lines["value"] / first)
    pal = lambda_palette(data["weight_decay"])
    kinds = list(dict.fromkeys(data["line"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(WIDTH, 3.8), squeeze=False, layout="constrained")
    for ax, kind in zip(axes[0], kinds):
        sub = data[data["line"] == kind]
        sns.lineplot(data=sub, x="t", y="rel", hue="weight_decay", palette=pal, errorbar=_BAND, ax=ax,
                     legend=ax is axes[0][0])
        ax.axhline(1.0, color="0.3", lw=1)
        _log_if_wide(ax, sub["rel"])
        ax.set(title=kind, xlabel="$t$", ylabel=r"$\mathcal{L}_\lambda(t)\,/\,\mathcal{L}_\lambda(0)$")
    _legend_outside(fig, axes[0][0], title=r"$\lambda$")
    return fig


@timed("figures")  # nrc.timing
def fact_ratios(fact: pd.DataFrame):
    """E4b part 1: per random instance, the minimum-norm cost with spread over that with collapsed inputs.

    ``fact`` has columns ``within_std`` (log x axis) and ``ratio``; a dashed line at 1 marks equal
    costs (every point must lie on or above it).
    """
    fig, ax = plt.subplots(figsize=(WIDTH, 4.0), layout="constrained")
    sns.scatterplot(data=fact, x="within_std", y="ratio", s=50, ax=ax, label="random instance")
    ax.axhline(1.0, color="0.3", ls="--", lw=1.2, label="collapsed = spread")
    ax.set(xscale="log", xlabel="within-class standard deviation of the inputs",
           ylabel=r"$\min\|W\|_F^2$: spread / collapsed")
    _legend_outside(fig, ax)
    return fig


@timed("figures")  # nrc.timing
def collapse_cost_ratios(summary: pd.DataFrame):
    """E4b part 2: the downstream cost after over before collapse against :math:`\\lambda`.

    ``summary`` has one row per network and collapse point ``l0`` with columns ``weight_decay``,
    ``seed``, ``l0``, ``chain_ratio`` and ``layerwise_ratio``. Colour: the collapse point; line
    style and marker: the collapsed network (``chain`` or ``layerwise``); mean over seeds with a
    min-max band; a grey line at 1.
    """
    long = summary.melt(id_vars=["weight_decay", "seed", "l0"], value_vars=["chain_ratio", "layerwise_ratio"],
                        var_name="network", value_name="ratio")
    long["network"] = long["network"].str.replace("_ratio", "")
    long["collapse after"] = "$\\ell_0$ = " + long["l0"].astype(str)
    fig, ax = plt.subplots(figsize=(WIDTH, 4.2), layout="constrained")
    sns.lineplot(data=long, x="weight_decay", y="ratio", hue="collapse after", style="network", markers=True,
                 errorbar=_BAND, palette="colorblind", ax=ax)
    ax.axhline(1.0, color="0.3", lw=1.2)
    lambda_axis(ax, long["weight_decay"])
    ax.set_ylabel("downstream cost after / before collapse")
    _legend_outside(fig, ax)
    return fig


@timed("figures")  # nrc.timing
def ridge_values(ridge: pd.DataFrame):
    """E4b part 3: the ridge read-out value :math:`V(s)/V(1)` against the residual factor :math:`s`.

    ``ridge`` has columns ``weight_decay``, ``s`` and ``value_rel``; one line per :math:`\\lambda`
    (mean over seeds, min-max band), a dotted line at :math:`s = 1` (the trained features).
    """
    fig, ax = plt.subplots(figsize=(WIDTH, 4.0), layout="constrained")
    if not ridge.empty:
        sns.lineplot(data=ridge, x="s", y="value_rel", hue="weight_decay",
                     palette=lambda_palette(ridge["weight_decay"]), errorbar=_BAND, marker="o", ax=ax)
    ax.axvline(1.0, color="0.3", ls=":", lw=1.2)
    ax.set(xlabel="factor $s$ of the within-class residuals", ylabel=r"$V(s)\,/\,V(1)$")
    _legend_outside(fig, ax, title=r"$\lambda$")
    return fig


@timed("figures")  # nrc.timing
def forecast_spectra(spectra: pd.DataFrame, *, num_classes: int, floor: float = 1e-10):
    """E5: trained against forecast singular values, one row of panels per :math:`\\lambda`, one column per weight.

    ``spectra`` has columns ``weight_decay``, ``site``, ``source`` (``"trained"`` or
    ``"forecast"``), ``minimum`` (0: the global forecast; -1 for trained rows), ``seed``, ``j`` and
    ``s``. Drawn: the trained spectra (line: mean over seeds, min-max band), the global forecast
    (crosses) and the reduced problem's other minima (grey dots), on a log axis with zeros at
    ``floor``, for the first ``2 K + 2`` indices.
    """
    data = spectra[spectra["j"] <= 2 * num_classes + 2]
    data = data.assign(s=np.maximum(data["s"], floor))
    lams = sorted(data["weight_decay"].unique())
    sites = list(dict.fromkeys(data["site"]))
    fig, axes = plt.subplots(len(lams), len(sites), layout="constrained", figsize=(WIDTH, 2.1 * len(lams) + 0.8),
                             sharex="col", squeeze=False)
    kinds = {"other forecast minima": dict(marker="o", s=12, color="0.7", linewidth=0, zorder=1),
             "global forecast": dict(marker="X", s=45, color="C3", zorder=3)}
    for i, lam in enumerate(lams):
        for k, site in enumerate(sites):
            ax = axes[i][k]
            g = data[(data["weight_decay"] == lam) & (data["site"] == site)]
            fc = g[g["source"] == "forecast"]
            sns.scatterplot(data=fc[fc["minimum"] > 0], x="j", y="s", ax=ax, **kinds["other forecast minima"])
            sns.lineplot(data=g[g["source"] == "trained"], x="j", y="s", color="C0", lw=1.3, errorbar=_BAND,
                         ax=ax, zorder=2)
            sns.scatterplot(data=fc[fc["minimum"] == 0], x="j", y="s", ax=ax, **kinds["global forecast"])
            ax.set_yscale("log")
            ax.set_xlim(0.5, g["j"].max() + 0.5)
            ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=4, integer=True))  # few ticks: panels are narrow
            ax.set(title=(site + (" (input)" if k == 0 else "")) if i == 0 else "",
                   ylabel=f"$\\lambda$={lam:g}\n$s_j$" if k == 0 else "",
                   xlabel="index $j$" if i == len(lams) - 1 else "")
    handles = [plt.Line2D([], [], color="C0", lw=1.3, label="trained (mean, min-max over seeds)")]
    handles += [plt.Line2D([], [], ls="", marker=v["marker"], color=v["color"], label=name)
                for name, v in kinds.items()]
    fig.legend(handles=handles, loc="outside upper center", ncol=3, frameon=False)
    return fig


@timed("figures")  # nrc.timing
def forecast_errors(compare: pd.DataFrame, *, value_tol: float, floor: float = 1e-6):
    """E5: the largest relative error of the forecast's non-zero singular values, per :math:`\\lambda`.

    ``compare`` has columns ``scored``, ``weight_decay``, ``forecast`` (``global``/``nearest``) and
    ``rel_error``; only the scored rows are drawn: a dot per weight and seed, a line through the
    largest per :math:`\\lambda`, and a dotted line at ``value_tol`` (below it: forecast). Errors
    below ``floor`` are drawn at the floor.
    """
    data = compare[compare["scored"]]
    data = data.assign(rel_error=np.maximum(data["rel_error"], floor))
    fig, ax = plt.subplots(figsize=(WIDTH, 4.0), layout="constrained")
    sns.stripplot(data=data, x="weight_decay", y="rel_error", hue="forecast", dodge=False, alpha=0.5, ax=ax,
                  legend=False)
    sns.pointplot(data=data, x="weight_decay", y="rel_error", hue="forecast", estimator="max", errorbar=None,
                  markers=["o", "s"], linestyles=["-", "--"], ax=ax)
    ax.axhline(value_tol, color="0.3", ls=":", lw=1.2)
    ax.set(yscale="log", xlabel=r"weight decay $\lambda$", ylabel="relative error of non-zero $s_j$")
    _legend_outside(fig, ax, title="forecast (largest)")
    return fig


# ---------------------------------------------------------------------------------------------
# synthetic group (T5-T9, E2): a measured value against its bound, profiles over the layers,
# descent paths
# ---------------------------------------------------------------------------------------------

__all__ += ["measured_vs_bound", "layer_profile", "descent_paths"]


def _lambda_hue(data: pd.DataFrame, hue: str) -> tuple[pd.DataFrame, str, dict]:
    """``data`` with a text column for ``hue`` (the values as :func:`_fmt` writes them), its name and palette.

    A numeric ``hue`` (e.g. the weight decay) takes :func:`lambda_palette`, any other the colour-blind palette.
    """
    numeric = pd.api.types.is_numeric_dtype(data[hue])
    values = sorted(data[hue].unique()) if numeric else list(dict.fromkeys(data[hue]))
    pal = lambda_palette(values) if numeric else dict(zip(values, sns.color_palette("colorblind", len(values))))
    name = {"weight_decay": r"$\lambda$"}.get(hue, hue)
    return data.assign(**{name: data[hue].map(_fmt)}), name, {_fmt(k): v for k, v in pal.items()}


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
    _legend_outside(fig, ax)
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
                     errorbar=_BAND, ax=ax, lw=1.6, markersize=6, legend=ax is axes[0][-1])
        if logy:
            _log_y(ax)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set(xlabel=xlabel, ylabel=ylabel, title=panel if panel is not None else "")
    _legend_outside(fig, axes[0][-1])
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
                     style_order=styles, errorbar=_BAND, ax=ax, lw=1.5, legend=ax is axes[0][-1])
        if refs and column in refs:
            ax.axhline(refs[column], color="0.3", ls="--", lw=1.2)
        lambda_axis(ax, data[x], label=xlabel or x)
        _log_y(ax)
        ax.set_ylabel(label)
    _legend_outside(fig, axes[0][-1])
    return fig
