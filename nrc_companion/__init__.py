"""nrc_companion: the paper companion built on the ``nrc`` research library.

``nrc`` is what a researcher imports (data, models, train, metrics, the result cache). This
package is the layer above it that turns the library into the book: the notebooks' set-ups,
figures, tables and verdicts, the registry of the paper's claims, the profiles and the papermill
runner, the book builder and its Sphinx extension, and the ``nrc`` command line. The flow is
data -> models -> train -> metrics -> results (``nrc``) -> notebooks -> book (this package).

Names are resolved on first use, so ``import nrc_companion`` itself loads nothing heavy.
"""
from __future__ import annotations

import importlib

from nrc import __version__

_EXPORTS = {
    "records": ("record", "results_dir", "save_table"),
    "params": ("validate_parameters",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
_SUBMODULES = ("book", "cli", "config", "launch", "params", "plots", "profiles", "records", "report", "runner",
               "setups", "verdicts")

__all__ = sorted({*_WHERE, *_SUBMODULES, "__version__"})


def __getattr__(name: str):
    """Import the module holding ``name`` on first access and cache it in the package."""
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
