"""nrc: the research library of the "Neural Rank Collapse" companion (Zangrando et al., arXiv 2402.03991).

Data flows data -> models -> train (stacked sweep) -> metrics (spectra, collapse, theorem,
analysis, landscape) -> results (cache, provenance, export). The flat API below is re-exported
from those small modules. The notebooks, the runner and the book sit in a separate package,
``nrc_companion``, above this one; nothing here imports it, matplotlib, seaborn or papermill.

The re-exports are resolved on first use (PEP 562 ``__getattr__``): ``import nrc`` alone loads
no torch, pandas or matplotlib, so ``nrc --help`` and ``nrc --version`` return at once, while
``nrc.train`` / ``from nrc import analyze`` work as if imported eagerly.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# Where each re-exported name lives (module of this package).
_EXPORTS = {
    "analysis": ("Analysis", "analyze", "analyze_model"),
    "collapse": ("class_means", "kmeans", "nc1", "nc2", "one_hot", "tcv", "within_class",
                 "within_total_ratio"),
    "data": ("DATASETS", "Dataset", "load_cifar10", "load_dataset", "load_fashion_mnist", "load_mnist",
             "make_gaussian_mixture"),
    "landscape": ("barrier", "collapse_costs", "collapse_path", "compare_spectra", "descent_path",
                  "hidden_tcv", "max_rise", "member_params", "min_norm_weights", "path_values",
                  "regularized_objective", "residual_projector", "ridge_readout",
                  "solve_reduced_problem", "straight_path"),
    "models": ("ACTIVATIONS", "Architecture", "forward", "from_module", "init_params", "is_decayed", "to_module"),
    "cache": ("ResultStore",),
    "export": ("save_run",),
    "provenance": ("environment",),
    "spectra": ("dist_to_rank", "energy_rank", "numerical_rank", "relative_dist_to_rank", "svdvals"),
    "theorem": ("SITE_COLUMNS", "site_quantities"),
    "train": ("Sweep", "TrainConfig", "grid", "member_losses", "regularized_loss", "train"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
# Submodules offered as attributes of the package.
_SUBMODULES = ("landscape", "timing")

__all__ = sorted({*_WHERE, *_SUBMODULES})


def __getattr__(name: str):
    """Import the module holding ``name`` on first access and cache the value in the package."""
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The package's module type: ``nrc.train`` stays the function once ``nrc/train.py`` is loaded.

    Importing a submodule binds it as an attribute of the package; for ``train`` that would hide
    the flat API's function of the same name (the eager imports used to rebind it afterwards).
    """

    def __setattr__(self, name: str, value) -> None:
        if (isinstance(value, types.ModuleType) and name in _WHERE
                and value.__name__ == f"{__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
