"""Figures of a sweep's tidy tables: spectra, a metric against lambda or another metric, the bound against the measured distance, log-log fits."""
from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nrc.timing import timed

from .style import BAND, WIDTH, fmt_value, hue_palette, legend_outside, log_y, sites_of, lambda_axis, lambda_colorbar, tidy_log_x


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
    palette = hue_palette(sorted(data[hue].unique()) if pd.api.types.is_numeric_dtype(data[hue])
                           else data[hue].unique())
    data["_hue"] = data[hue].map(fmt_value)
    pal = {fmt_value(k): v for k, v in palette.items()}
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
        log_y(ax)
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
    groups = sites_of(data) if by == "site" else list(dict.fromkeys(sorted(data[by].unique(), key=str)))
    styles = groups if style is None else sorted(data[style].unique(), key=str)
    sns.lineplot(data=data, x=x, y=y, hue=by, hue_order=groups, style=style or by, style_order=styles,
                 palette=sns.color_palette("colorblind", len(groups)), markers=True, dashes=style is not None,
                 errorbar=BAND, ax=ax, lw=1.8, markersize=7)
    if logx:
        if x == "weight_decay":
            lambda_axis(ax, data[x])
        else:
            ax.set_xscale("log")
            tidy_log_x(ax)
    if logy:
        log_y(ax)
    if ref is not None:
        ax.axhline(ref, color="0.3", ls="--", lw=1.2, label=ref_label)
    if xlabel or x != "weight_decay":
        ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    legend_outside(fig, ax, title=None if by == "site" else by)
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
                     style_order=names, palette=pal, markers=True, dashes=False, errorbar=BAND, ax=ax,
                     lw=1.8, markersize=7, legend=ax is axes[0][-1])
        lambda_axis(ax, data["weight_decay"])
        if ly:
            log_y(ax)
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
        legend_outside(fig, ax)
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
    legend_outside(fig, ax)
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
