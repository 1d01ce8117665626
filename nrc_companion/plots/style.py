"""The book's figure style: one width, the lambda palette and colour bar, legends outside, log axes; timing of figure rendering."""
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

#: Figure width in inches (at 100 dpi: the book's content width).
WIDTH = 7.5
#: Seaborn errorbar of every band: the min-max range over the members drawn together (seeds).
BAND = ("pi", 100)


def fmt_value(v) -> str:
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
    cb.ax.set_yticklabels([fmt_value(k) for k in keys])
    cb.ax.tick_params(length=0)
    cb.outline.set_visible(False)
    return cb


def hue_palette(values) -> dict:
    vals = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.number)) for v in vals):
        return lambda_palette(vals)
    return dict(zip(vals, sns.color_palette("colorblind", len(vals))))


def sites_of(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df.sort_values("layer")["site"])) if "layer" in df else list(dict.fromkeys(df["site"]))


def legend_outside(fig, ax, title=None):
    """The axes' legend moved out of the plot area (right of it), so it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, title=title, frameon=False, loc="outside right center")


def log_y(ax):
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
