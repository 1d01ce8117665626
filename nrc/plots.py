"""Figures drawn from the tidy tables of :class:`nrc.Analysis` (one figure per call, returned).

Each function takes a DataFrame and returns the matplotlib ``Figure``; it never calls
``plt.show`` or changes the backend, so notebooks display it and ``myst_nb.glue`` can store it.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["spectra_by_site", "metric_vs", "bound_scatter"]


def _sites(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df.sort_values("layer")["site"])) if "layer" in df else list(dict.fromkeys(df["site"]))


def _colors(values):
    cmap = plt.get_cmap("viridis")
    vals = sorted(set(values))
    return {v: cmap(i / max(1, len(vals) - 1)) for i, v in enumerate(vals)}


def spectra_by_site(spec: pd.DataFrame, *, hue: str = "weight_decay", floor: float = 1e-12,
                    title: str | None = None):
    """Normalised singular values ``s_j / s_1`` (log scale) against ``j``, one panel per weight.

    Lines are coloured by ``hue``; members sharing a ``hue`` value (e.g. seeds) are drawn alike.
    Values below ``floor`` are drawn at the floor so exact zeros stay visible.
    """
    sites = list(dict.fromkeys(spec["site"]))
    fig, axes = plt.subplots(1, len(sites), figsize=(3.2 * len(sites), 3.0), sharey=True, squeeze=False)
    colors = _colors(spec[hue])
    for ax, site in zip(axes[0], sites):
        sub = spec[spec["site"] == site]
        for (h, member), g in sub.groupby([hue, "member"]):
            ax.semilogy(g["j"], np.maximum(g["s_rel"], floor), color=colors[h], lw=1.2, alpha=0.8)
        ax.set_title(site)
        ax.set_xlabel("index j")
    axes[0][0].set_ylabel("$s_j / s_1$")
    handles = [plt.Line2D([], [], color=c, label=f"{hue}={v:g}" if isinstance(v, float) else f"{hue}={v}")
               for v, c in colors.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def metric_vs(df: pd.DataFrame, x: str, y: str, *, by: str = "site", logx: bool = True, logy: bool = True,
              floor: float | None = None, ylabel: str | None = None, title: str | None = None):
    """``y`` against ``x``, one line per value of ``by``; mean over the other members with min-max band.

    Zero ``x`` values are dropped on a log axis (e.g. weight decay 0).
    """
    data = df.copy()
    if logx:
        data = data[data[x] > 0]
    if floor is not None:
        data[y] = np.maximum(data[y], floor)
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    groups = _sites(data) if by == "site" else sorted(set(data[by]))
    colors = plt.get_cmap("tab10")
    for i, key in enumerate(groups):
        g = data[data[by] == key].groupby(x)[y]
        mean, lo, hi = g.mean(), g.min(), g.max()
        ax.plot(mean.index, mean.values, "o-", color=colors(i % 10), label=str(key), ms=4)
        ax.fill_between(mean.index, lo.values, hi.values, color=colors(i % 10), alpha=0.15)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    ax.legend(title=by, frameon=False, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def bound_scatter(sites: pd.DataFrame, *, measured: str = "dK", bounds=("bound", "bound_cs", "bound_a2"),
                  floor: float = 1e-14, title: str | None = None):
    """Measured ``d_K^F(W)`` against each bound (log-log), with the line ``y = x``.

    Every point must lie below the line (Theorem A); the distance below it is the slack.
    """
    data = sites.replace([np.inf], np.nan)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    markers = "osd^v"
    lo, hi = np.inf, 0.0
    for i, b in enumerate(bounds):
        d = data[[b, measured]].dropna()
        if d.empty:
            continue
        xv, yv = np.maximum(d[b].to_numpy(), floor), np.maximum(d[measured].to_numpy(), floor)
        ax.scatter(xv, yv, s=18, marker=markers[i % 5], alpha=0.7, label=b)
        lo, hi = min(lo, xv.min(), yv.min()), max(hi, xv.max(), yv.max())
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bound")
    ax.set_ylabel(f"measured {measured}")
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
