"""nrc: the reproducible companion to "Neural Rank Collapse" (Zangrando et al., arXiv 2402.03991).

Data flows data -> models -> train (stacked sweep) -> metrics (spectra, collapse, theorem) ->
results (store/cache) -> notebooks (papermill runner) -> book. The flat API below is re-exported
from those small modules.
"""
from .analysis import Analysis, analyze, analyze_model
from .config import typed_parameters
from .collapse import class_means, kmeans, nc1, nc2, one_hot, tcv, within_class, within_total_ratio
from .data import (DATASETS, Dataset, load_cifar10, load_dataset, load_fashion_mnist, load_mnist,
                   make_gaussian_mixture)
from . import landscape, plots, report
from .landscape import (
    barrier, collapse_costs, collapse_path, compare_spectra, descent_path, hidden_tcv, max_rise,
    member_params, min_norm_weights, path_values, regularized_objective, residual_projector,
    ridge_readout, solve_reduced_problem, straight_path
)
from .models import ACTIVATIONS, Architecture, forward, from_module, init_params, to_module
from .results import ResultStore, check, environment, record, results_dir, save_run, save_table
from .spectra import dist_to_rank, energy_rank, numerical_rank, relative_dist_to_rank, svdvals
from .theorem import SITE_COLUMNS, site_quantities
from .train import Sweep, TrainConfig, grid, member_losses, regularized_loss, train

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "Analysis", "landscape", "plots", "report", "barrier", "collapse_costs", "collapse_path",
    "compare_spectra", "descent_path", "hidden_tcv", "max_rise", "member_params", "min_norm_weights",
    "path_values", "regularized_objective", "residual_projector", "ridge_readout",
    "solve_reduced_problem", "straight_path", "Architecture", "DATASETS", "Dataset", "ResultStore",
    "SITE_COLUMNS",
    "Sweep", "TrainConfig", "analyze", "analyze_model", "check", "class_means", "dist_to_rank",
    "energy_rank", "environment", "forward", "from_module", "grid", "init_params", "kmeans",
    "load_cifar10", "load_dataset", "load_fashion_mnist", "load_mnist", "make_gaussian_mixture",
    "member_losses", "nc1", "nc2", "numerical_rank", "one_hot", "record", "regularized_loss",
    "relative_dist_to_rank", "results_dir", "save_run", "save_table", "site_quantities", "svdvals", "tcv",
    "to_module", "train", "typed_parameters", "within_class", "within_total_ratio",
]
