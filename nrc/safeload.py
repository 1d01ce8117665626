"""Reading back the files ``nrc`` writes itself (cache entries, checkpoints), surviving damage.

A file cut short by a full disk or a killed copy, or overwritten by something else, must not stop
every later run: :func:`load_or_set_aside` warns with the file's name, moves the file aside to
``NAME.corrupt`` (kept for inspection, never read again) and returns ``None`` so the caller
recomputes what it held.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

__all__ = ["NrcWarning", "load_or_set_aside", "set_aside"]


class NrcWarning(UserWarning):
    """Something ``nrc`` recovered from (the command line prints it as one line)."""


def set_aside(path: Path) -> Path:
    """Rename ``path`` to ``path.corrupt`` (``.corrupt1``, ``.corrupt2``... if taken); return the new name."""
    path = Path(path)
    dest = path.with_name(path.name + ".corrupt")
    n = 0
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt{n}")
    path.replace(dest)
    return dest


def load_or_set_aside(path, what: str, *, required=(), map_location=None):
    """``torch.load`` a file ``nrc`` wrote; a damaged one is reported, moved aside and ``None`` returned.

    Parameters
    ----------
    path : path
        The file. A missing file returns ``None`` silently.
    what : str
        What the file is, for the warning (e.g. ``"cache entry"``, ``"checkpoint"``).
    required : iterable of str
        Keys the loaded dict must have; a file without them counts as damaged.
    map_location : optional
        Passed to ``torch.load``.

    Returns
    -------
    object or None
        The loaded object, or ``None`` when the file is missing or damaged (the caller recomputes).

    Raises
    ------
    PermissionError
        The file exists but cannot be read (not damage: nothing is moved).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
        missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return obj
    except PermissionError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to read back our own file is damage
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        dest = set_aside(path)
        warnings.warn(f"{what} {path} is unreadable ({type(err).__name__}: {reason}); moved it to "
                      f"{dest.name} and recomputing", NrcWarning, stacklevel=2)
        return None
