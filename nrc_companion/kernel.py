"""The notebook kernel that ``nrc reproduce`` starts: ipykernel, with the notebooks' libraries imported.

``python -m nrc_companion.kernel -f CONNECTION_FILE`` is ``python -m ipykernel_launcher -f
CONNECTION_FILE`` after importing :data:`PRELOADED` into ``sys.modules``. Nothing enters the
notebook's namespace: a notebook still imports what it uses (the import then costs nothing) and
runs the same under plain papermill or Jupyter.

Why: these imports (torch, seaborn with scipy.stats, matplotlib, pandas) are most of a notebook's
fixed cost, about 4 s of the 5-7 s that every notebook of the committed full run spent outside its
measured phases. The runner starts the next notebook's kernel while the current one runs whenever
a core is left idle (see :func:`nrc_companion.runner.reproduce`), so these imports overlap
the previous notebook instead of adding to the run's wall time.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

__all__ = ["PRELOADED", "main"]

#: What every notebook imports in its first code cell (and what :mod:`nrc_companion`'s notebook
#: modules import themselves).
PRELOADED = ("numpy", "pandas", "torch", "matplotlib.pyplot", "seaborn", "IPython.display", "nrc",
             "nrc_companion.records", "nrc_companion.report", "nrc_companion.setups",
             "nrc_companion.verdicts", "nrc_companion.plots")


def main() -> None:
    """Import :data:`PRELOADED`, then run ipykernel with this process's command line."""
    # As ipykernel_launcher does: the working directory (the notebooks' folder) leaves sys.path
    # while the libraries load; ipykernel puts it back for the notebook.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    # ipykernel makes the inline backend matplotlib's default only after start-up; matplotlib reads
    # MPLBACKEND once, when first imported, so the same default is set before the import.
    if not os.environ.get("MPLBACKEND"):
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    for name in PRELOADED:
        importlib.import_module(name)
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
