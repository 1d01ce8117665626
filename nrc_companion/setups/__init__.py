"""The notebooks' set-ups and shared steps, one module per family of notebooks.

Every notebook starts with :func:`prepare` (``base``): its parameters validated against its model,
the page styled, and the device, store, data, network, members and training configuration its
parameters determine. The other modules hold the steps that several notebooks of one family share:

* ``theory``: the theory checks (T1-T9 and the derivation): Theorem A's sweep of T2-T4, stationarity,
  the last layer, the balanced norms, one mixture per spread;
* ``images``: the rank-against-lambda sweeps on image data (E1, E3) and E6's truncations;
* ``landscape``: the float64 trained starts of E4, E4b and E5;
* ``inputs``: the structured inputs of the registry's checks that several notebooks share.

Notebooks call them as ``setups.<name>``; the names below are the whole public set.
"""
from .base import (Setup, architecture, budgets_config, data_for, device_for, load_data, members, prepare,
                   relative_difference, scale_text, train_budgets, train_config)
from .images import TRUNCATIONS, ImageSweep, image_sweep, sweep_values, truncation_ranks
from .inputs import (bound_inputs, bound_summary, bound_terms, collapse_inputs, initial_nc1, rank_trend_inputs,
                     scale_free_inputs, vacuous_terms)
from .landscape import TrainedStarts, float64_training, trained_starts
from .theory import (SpreadSweep, TheoremSweep, kink_fraction, last_layer_table, loss_trajectory, output_term,
                     spread_sweep, surviving, theorem_sweep, train_and_analyze, unregularised_tables)

__all__ = [
    # base: every notebook's first cell
    "prepare", "Setup", "device_for", "data_for", "load_data", "architecture", "members", "train_config",
    "budgets_config", "train_budgets", "scale_text", "relative_difference",
    # theory
    "theorem_sweep", "TheoremSweep", "train_and_analyze", "kink_fraction", "surviving", "last_layer_table",
    "output_term", "loss_trajectory", "spread_sweep", "SpreadSweep", "unregularised_tables",
    # images
    "image_sweep", "ImageSweep", "sweep_values", "TRUNCATIONS", "truncation_ranks",
    # landscape
    "trained_starts", "TrainedStarts", "float64_training",
    # inputs
    "rank_trend_inputs", "bound_terms", "bound_inputs", "bound_summary", "vacuous_terms", "initial_nc1",
    "collapse_inputs", "scale_free_inputs",
]
