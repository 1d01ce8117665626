"""Where a notebook's wall time goes: a tiny accumulator of named phases.

The library marks its own work -- ``nrc.load_dataset`` as ``"data"``, ``ResultStore.train`` as
``"training"``, ``analyze`` / ``site_quantities`` and the landscape computations as
``"analysis"``, the figure helpers of ``nrc_companion.plots`` as ``"figures"`` -- so a notebook needs no
timing code of its own::

    with nrc.timing.phase("analysis"):
        ...

Phases nest without double counting: time spent inside an inner phase is credited to the inner
phase only (a figure drawn during analysis counts as "figures"; ``analyze`` called by
``train_and_analyze`` counts once). The outermost level is "other".

When the environment variable ``NRC_TIMING_FILE`` is set (the runner sets it per notebook
kernel), the totals are written there as JSON at the end of every outermost phase, atomically
(temporary file + rename), so the file is complete even if the kernel dies later. Without it,
entering a phase costs two ``perf_counter`` calls and nothing is written.
"""
from __future__ import annotations

import functools
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PHASES", "phase", "timed", "totals", "reset", "write", "read"]

#: The phases the runner reports (any other name is accepted and reported as well).
PHASES = ("data", "training", "analysis", "figures")

_totals: dict[str, float] = {}
_stack: list[list] = []  # [name, start of the current uncredited stretch]


def totals() -> dict[str, float]:
    """Seconds credited to each phase so far in this process (a copy)."""
    return dict(_totals)


def reset() -> None:
    """Forget all totals (the phases in progress keep running)."""
    _totals.clear()


def _credit(name: str, seconds: float) -> None:
    _totals[name] = _totals.get(name, 0.0) + seconds


@contextmanager
def phase(name: str):
    """Credit the wall time of the ``with`` block to ``name``, minus any nested phase's time.

    Parameters
    ----------
    name : str
        One of :data:`PHASES` (others are allowed).
    """
    now = time.perf_counter()
    if _stack:  # pause the enclosing phase: what follows is ours
        outer = _stack[-1]
        _credit(outer[0], now - outer[1])
    frame = [name, now]
    _stack.append(frame)
    try:
        yield
    finally:
        end = time.perf_counter()
        _stack.pop()
        _credit(name, end - frame[1])
        if _stack:
            _stack[-1][1] = end  # the enclosing phase resumes
        else:
            path = os.environ.get("NRC_TIMING_FILE")
            if path:
                write(path)


def timed(name: str):
    """Decorator form of :func:`phase`: every call of the function is credited to ``name``."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with phase(name):
                return fn(*args, **kwargs)
        return inner
    return wrap


def write(path) -> None:
    """Write the totals as JSON to ``path`` atomically (``{"phases": {name: seconds}, "pid": ...}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"phases": totals(), "pid": os.getpid()}))
    os.replace(tmp, path)


def read(path) -> dict[str, float]:
    """The phase totals of a timing file (empty when it is missing or unreadable)."""
    try:
        return {k: float(v) for k, v in json.loads(Path(path).read_text())["phases"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
