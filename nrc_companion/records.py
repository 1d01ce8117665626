"""How notebooks publish their key numbers: a JSON record per notebook and CSV tables.

:func:`record` writes the values, the evaluated checks and the inputs they were evaluated from
(so anyone can re-evaluate a record with :func:`nrc_companion.verdicts.evaluate`), with the
provenance of :func:`nrc.provenance.environment`, and glues every value for the book's prose;
:func:`save_table` writes a results table as CSV beside it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nrc.provenance import environment

__all__ = ["record", "save_table", "results_dir"]


def results_dir(notebook: str | None = None) -> Path:
    """Where notebooks write their records: ``$NRC_RESULTS_DIR``, else ``~/.cache/nrc/results``.

    ``nrc reproduce`` sets ``NRC_RESULTS_DIR`` to ``<out>/results``, next to the executed
    notebooks; set it yourself to put the results of a papermill run next to its output notebook.
    The default lies outside the working directory on purpose, so a notebook run from anywhere
    never leaves files in the caller's tree. A relative value resolves against the working
    directory (for papermill, the caller's).
    """
    root = Path(os.environ.get("NRC_RESULTS_DIR") or "~/.cache/nrc/results").expanduser().absolute()
    return root / notebook if notebook else root


def _jsonable(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    return v


def _jsonable_tree(obj):
    """``obj`` with numpy / torch scalars turned into Python numbers, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable_tree(v) for v in obj]
    return _jsonable(obj)


def record(notebook: str, values: dict, checks: list[dict] = (), *, inputs: dict | None = None,
           glue: bool = True) -> Path:
    """Publish a notebook's key numbers: a JSON file for tests and the book, and ``myst_nb.glue``.

    Parameters
    ----------
    notebook : str
        The notebook's name (file stem).
    values : dict
        Key numbers (floats, ints, strings).
    checks : list of dict
        Evaluated checks, from :func:`nrc_companion.verdicts.evaluate` (the registry's one evaluator).
    inputs : dict, optional
        The structured inputs those checks were evaluated from (check id -> rows), stored so that
        anyone can re-evaluate the record with :func:`nrc_companion.verdicts.evaluate`.
    glue : bool
        Also glue every value under its key (when ``myst_nb`` is installed), so the book's prose
        quotes the computed number.

    Returns
    -------
    Path of the JSON file.
    """
    values = {k: _jsonable(v) for k, v in values.items()}
    out = results_dir() / f"{notebook}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"notebook": notebook, "profile": os.environ.get("NRC_PROFILE", "custom"),
               "values": values, "checks": list(checks), "inputs": _jsonable_tree(inputs or {}),
               "meta": environment()}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, out)
    if glue:
        try:
            from myst_nb import glue as _glue
        except ImportError:
            _glue = None
        if _glue is not None:
            for k, v in values.items():
                _glue(k, v, display=False)
    return out


def save_table(df: pd.DataFrame, notebook: str, name: str) -> Path:
    """Write a results table as CSV under ``results_dir(notebook)/name.csv`` (linked from the page)."""
    path = results_dir(notebook) / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path
