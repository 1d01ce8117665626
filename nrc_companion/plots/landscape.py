"""Figures of the landscape experiments (E4, E4b, E5): loss paths, the cost of collapse, the singular-value forecast."""
from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nrc.timing import timed

from .style import BAND, WIDTH, legend_outside, lambda_axis, lambda_palette


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
    legend_outside(fig, ax, title=r"$\lambda$")
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
        sns.lineplot(data=data, x="waypoint", y=col, hue="weight_decay", palette=pal, errorbar=BAND, ax=ax,
                     legend=col == "ratio")
        ax.set_xlabel("waypoint (penalty increases)")
    axes[0].axhline(0.0, color="0.3", lw=1)
    axes[0].set_ylabel(r"$\mathcal{L}_\lambda / \mathcal{L}_\lambda^{\rm local} - 1$")
    axes[1].axhline(tol, color="0.3", ls="--", lw=1.2)
    axes[1].set(yscale="log", ylabel=r"max hidden $\mathrm{tr}\,\Sigma_W / \mathrm{tr}\,\Sigma_T$")
    legend_outside(fig, axes[1], title=r"$\lambda$")
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
        sns.lineplot(data=sub, x="t", y="rel", hue="weight_decay", palette=pal, errorbar=BAND, ax=ax,
                     legend=ax is axes[0][0])
        ax.axhline(1.0, color="0.3", lw=1)
        _log_if_wide(ax, sub["rel"])
        ax.set(title=kind, xlabel="$t$", ylabel=r"$\mathcal{L}_\lambda(t)\,/\,\mathcal{L}_\lambda(0)$")
    legend_outside(fig, axes[0][0], title=r"$\lambda$")
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
    legend_outside(fig, ax)
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
                 errorbar=BAND, palette="colorblind", ax=ax)
    ax.axhline(1.0, color="0.3", lw=1.2)
    lambda_axis(ax, long["weight_decay"])
    ax.set_ylabel("downstream cost after / before collapse")
    legend_outside(fig, ax)
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
                     palette=lambda_palette(ridge["weight_decay"]), errorbar=BAND, marker="o", ax=ax)
    ax.axvline(1.0, color="0.3", ls=":", lw=1.2)
    ax.set(xlabel="factor $s$ of the within-class residuals", ylabel=r"$V(s)\,/\,V(1)$")
    legend_outside(fig, ax, title=r"$\lambda$")
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
            sns.lineplot(data=g[g["source"] == "trained"], x="j", y="s", color="C0", lw=1.3, errorbar=BAND,
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
    legend_outside(fig, ax, title="forecast (largest)")
    return fig
