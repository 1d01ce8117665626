"""The notebook kernel that ``nrc reproduce`` starts: ipykernel, with the notebooks' libraries imported.

``python -m nrc_companion.kernel -f CONNECTION_FILE`` is ``python -m ipykernel_launcher -f
CONNECTION_FILE`` that imports :data:`PRELOADED` into ``sys.modules`` between binding its sockets
and answering its first request. Nothing enters the
notebook's namespace: a notebook still imports what it uses (the import then costs nothing) and
runs the same under plain papermill or Jupyter.

Why: these imports (torch, seaborn with scipy.stats, matplotlib, pandas) are most of a notebook's
fixed cost, about 4 s of the 5-7 s that every notebook of the committed full run spent outside its
measured phases. The runner starts the next notebook's kernel while the current one runs whenever
a core is left idle (see :func:`nrc_companion.runner.reproduce`), so these imports overlap
the previous notebook instead of adding to the run's wall time.

Only what the notebook imports is preloaded (:func:`preload_for`, passed in
:data:`PRELOAD_ENV`): a notebook that imports none of these libraries (the runner's tests run
dozens of such one-cell notebooks) starts in about 1 s instead of 4.
"""
from __future__ import annotations

import ast
import importlib
import json
import os
import sys
from pathlib import Path

__all__ = ["PRELOADED", "PRELOAD_ENV", "preload_for", "main"]

#: What every notebook imports in its first code cell (and what :mod:`nrc_companion`'s notebook
#: modules import themselves).
PRELOADED = ("numpy", "pandas", "torch", "matplotlib.pyplot", "seaborn", "IPython.display", "nrc",
             "nrc_companion.records", "nrc_companion.report", "nrc_companion.setups",
             "nrc_companion.verdicts", "nrc_companion.plots")


#: Environment variable with the comma-separated modules the kernel imports before it answers
#: (set by the runner from :func:`preload_for`); unset: all of :data:`PRELOADED`.
PRELOAD_ENV = "NRC_KERNEL_PRELOAD"


def _imported(code: str) -> set[str]:
    """Every module named by the ``import`` statements of ``code`` with its parents (``from a.b
    import c`` names ``a``, ``a.b`` and, as ``c`` may be a submodule, ``a.b.c``). IPython's magics
    and shell escapes are left out before parsing; a cell that still does not parse names nothing."""
    lines = [ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            full = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            full = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in full:
            parts = name.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


def preload_for(notebook) -> tuple[str, ...]:
    """The modules of :data:`PRELOADED` that the code cells of ``notebook`` (a path) import, in
    :data:`PRELOADED`'s order; all of them when the notebook cannot be read (the kernel then
    starts as it always did, and the notebook reports its own problem)."""
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
        code = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                for c in cells if c.get("cell_type") == "code"]
    except (OSError, ValueError, KeyError, TypeError):
        return PRELOADED
    names = set().union(*map(_imported, code)) if code else set()
    return tuple(m for m in PRELOADED if m in names)


def main() -> None:
    """Start ipykernel with this process's command line, import the modules in :data:`PRELOAD_ENV`
    (default :data:`PRELOADED`), then let the kernel answer.

    The kernel binds the ports of its connection file first, as soon as it is launched: the kernel
    manager chose them free, and another process (a second kernel, a Ray worker) may take one of
    them in the seconds the imports last ("Address already in use", a kernel dead before it
    answers). Until the kernel starts, a client waits for its reply, as for any kernel starting up.
    """
    # ipykernel makes the inline backend matplotlib's default only after start-up; matplotlib reads
    # MPLBACKEND once, when first imported, so the same default is set before the import.
    if not os.environ.get("MPLBACKEND"):
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    wanted = os.environ.pop(PRELOAD_ENV, None)  # the notebook's own environment as it would be
    # As ipykernel_launcher does: the working directory (the notebooks' folder) is not on sys.path
    # when the kernel starts; ipykernel puts it back for the notebook (initialize), and it is left
    # out again while the libraries load, so that no file of the notebooks' folder shadows them.
    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize()  # binds the sockets
    notebook_path = list(sys.path)
    sys.path[:] = [p for p in sys.path if p != "" and Path(p) != Path.cwd()]
    try:
        for name in PRELOADED if wanted is None else [m for m in wanted.split(",") if m]:
            importlib.import_module(name)
    finally:
        sys.path[:] = notebook_path
    app.start()


if __name__ == "__main__":
    main()
