"""Export of one analysed sweep as tidy CSV tables plus its metadata (what ``nrc sweep`` writes)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .provenance import environment
from .train import Sweep

__all__ = ["save_run"]


def save_run(path, sweep: Sweep, analysis, **extra) -> Path:
    """Save one analysed sweep: the tidy table ``member x layer x metric`` plus its metadata.

    Writes ``tidy.csv``, ``members.csv``, ``spectra.csv`` and ``meta.json`` (architecture, full
    training config, members with their seeds, device, library versions, git commit, and any
    ``extra`` JSON-able items) under ``path``; files are written whole (temp file + rename).
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"architecture": sweep.arch.to_dict(), "config": sweep.config.to_dict(), "members": sweep.members,
            "diverged": [bool(d) for d in sweep.diverged], "train_seconds": sweep.seconds,
            "train_device": sweep.device, **extra, **environment()}
    for name, df in (("tidy", analysis.tidy()), ("members", analysis.members), ("spectra", analysis.spectra)):
        tmp = out / f".{name}.csv.tmp"
        df.to_csv(tmp, index=False)
        os.replace(tmp, out / f"{name}.csv")
    tmp = out / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, out / "meta.json")
    return out
