"""Figures drawn with seaborn from the tidy tables of :class:`nrc.Analysis` (one figure per call).

Modules: ``style`` (the conventions below: width, palettes, legends, log axes), ``sweeps`` (a
sweep's spectra and metrics against lambda or each other, bounds, log-log fits), ``theory`` (the
theory checks' figures) and ``landscape`` (E4, E4b, E5). Notebooks call them as ``plots.<name>``.

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
from .landscape import (collapse_cost_ratios, collapse_waypoints, fact_ratios, forecast_errors, forecast_spectra,
                        loss_path, ridge_values, straight_lines)
from .style import (BAND, WIDTH, hue_palette, instrument_matplotlib, lambda_axis, lambda_colorbar, lambda_palette,
                    legend_outside, log_y, tidy_log_x)
from .sweeps import (against_nc1, bound_scatter, bound_terms_bars, loglog_fit, metric_vs, singular_values,
                     spectra_by_site, vs_lambda)
from .theory import descent_paths, layer_profile, lines_by_panel, measured_vs_bound, ratio_strips

__all__ = [
    # style
    "WIDTH", "BAND", "lambda_palette", "lambda_colorbar", "lambda_axis", "hue_palette", "legend_outside", "log_y",
    "tidy_log_x", "instrument_matplotlib",
    # sweeps
    "spectra_by_site", "metric_vs", "vs_lambda", "bound_scatter", "loglog_fit", "against_nc1", "singular_values",
    "bound_terms_bars",
    # theory
    "lines_by_panel", "ratio_strips", "measured_vs_bound", "layer_profile", "descent_paths",
    # landscape
    "loss_path", "collapse_waypoints", "straight_lines", "fact_ratios", "collapse_cost_ratios", "ridge_values",
    "forecast_spectra", "forecast_errors",
]
