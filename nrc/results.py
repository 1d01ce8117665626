"""The results store: a per-member cache of trained sweeps, provenance, and notebook records.

* :class:`ResultStore` trains through a cache keyed by everything that determines a member's
  result (architecture, training config, data fingerprint, the member's scalars, the trainer's
  version). A repeated run loads instead of retraining; any change recomputes; extending a grid
  trains only the new members; a killed run resumes from its checkpoint.
* :func:`environment` is the provenance recorded with every result (device, versions, commit).
* :func:`record` and :func:`save_table` are how notebooks publish their key numbers: a JSON file
  and ``myst_nb.glue`` for the book, CSV files for readers.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .data import Dataset
from .models import Architecture
from .train import Sweep, TrainConfig, _atomic_save, _validate_members, train

__all__ = ["ResultStore", "environment", "record", "check", "save_table", "save_run", "results_dir",
           "fingerprint"]

#: Bump when a change to the trainer changes results, so old cache entries are not reused.
TRAINER_VERSION = 1


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def fingerprint(obj) -> str:
    """Short sha256 of a JSON-able object (sorted keys), used as a cache key."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:20]


def _data_fingerprint(d: Dataset) -> str:
    h = hashlib.sha256()
    for t in (d.x_train, d.y_train):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(_canonical({"name": d.name, "classes": d.num_classes}).encode())
    return h.hexdigest()[:20]


def git_state(root=None) -> tuple[str, bool | None]:
    """(commit, dirty) of the repository holding ``root`` (default: nrc's checkout).

    ``dirty`` says whether tracked files other than ``book/`` (pages and committed runs, which a
    run itself rewrites) differ from the commit; ``("unknown", None)`` outside a repository.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        commit = r.stdout.strip()
        if r.returncode != 0 or not commit:
            return "unknown", None
        s = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no",
                            "--", ".", ":(exclude)book"], cwd=root, capture_output=True, text=True, timeout=30)
        return commit, (bool(s.stdout.strip()) if s.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def environment() -> dict:
    """Provenance of a result: device, Python and library versions, git commit, time (UTC)."""
    versions = {}
    for pkg in ("nrc", "torch", "numpy", "scipy", "pandas", "matplotlib", "papermill", "jupyter-book"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    commit, dirty = git_state()
    return {"device": _device_name(), "python": sys.version.split()[0], "platform": platform.platform(),
            "versions": versions, "commit": commit, "dirty": dirty,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _log_training(*, trained: int, loaded: int, seconds: float) -> None:
    """Append one line ``{"trained", "loaded", "seconds"}`` to ``$NRC_TRAIN_LOG`` when set.

    The runner sets it per notebook and puts the sums in ``status.json`` (training seconds and
    members loaded from the cache, shown on the book's status page).
    """
    path = os.environ.get("NRC_TRAIN_LOG")
    if not path:
        return
    line = json.dumps({"trained": int(trained), "loaded": int(loaded), "seconds": round(float(seconds), 3)})
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass  # counting is best effort: never fail a training because the log is unwritable


class ResultStore:
    """A cache of trained members on disk.

    Parameters
    ----------
    root : path, optional
        Cache directory; default ``$NRC_CACHE_DIR`` or ``.nrc-cache`` in the working directory.
    """

    def __init__(self, root=None):
        self.root = Path(root or os.environ.get("NRC_CACHE_DIR") or ".nrc-cache")

    def member_key(self, arch: Architecture, config: TrainConfig, data: Dataset, member: dict) -> str:
        """Cache key of one member: everything that determines its trained parameters.

        Architecture, training config, data fingerprint, the member's scalars, the trainer's
        version and the installed torch and numpy versions (a library upgrade can change the
        numbers, so it retrains instead of reusing old results).
        """
        return fingerprint({"arch": arch.to_dict(), "config": config.to_dict(), "data": _data_fingerprint(data),
                            "member": member, "trainer": TRAINER_VERSION,
                            "torch": torch.__version__, "numpy": np.__version__})

    def train(self, arch: Architecture, data, members: list[dict], config: TrainConfig = TrainConfig(), *,
              device=None, progress=None, callback=None) -> Sweep:
        """Like :func:`nrc.train`, but loads members trained before with the same settings.

        Only the missing members are trained (together, as one stacked model, checkpointed under
        ``root/checkpoints`` so a killed run resumes). Each finished member is written atomically
        with its provenance; a diverged member is cached too (it would diverge again).
        """
        members = _validate_members(members, config)
        per_member = not isinstance(data, Dataset)
        datasets = list(data) if per_member else [data] * len(members)
        if len(datasets) != len(members):
            raise ValueError(f"got {len(datasets)} data sets for {len(members)} members")
        keys = [self.member_key(arch, config, d, m) for d, m in zip(datasets, members)]
        loaded = {k: self._load(k) for k in dict.fromkeys(keys)}  # damaged entries: set aside, recomputed
        missing = [i for i, k in enumerate(keys) if loaded[k] is None]
        if missing:
            sub_data = [datasets[i] for i in missing] if per_member else data
            ckpt = self.root / "checkpoints" / f"{fingerprint([keys[i] for i in missing])}.pt"
            sweep = train(arch, sub_data, [members[i] for i in missing], config, device=device,
                          checkpoint=ckpt, progress=progress, callback=callback)
            env = environment()
            for j, i in enumerate(missing):
                # clone: torch.save of a view writes the whole stacked storage (M times the member)
                _atomic_save({"params": {k: v[j].clone() for k, v in sweep.params.items()},
                              "history": {k: v[:, j] for k, v in sweep.history.items()},
                              "diverged": bool(sweep.diverged[j]), "member": members[i],
                              "seconds": sweep.seconds / len(missing), "device": sweep.device,
                              "meta": env}, self._path(keys[i]))
        _log_training(trained=len(missing), loaded=len(members) - len(missing),
                      seconds=sweep.seconds if missing else 0.0)
        entries = [loaded[k] if loaded[k] is not None else torch.load(self._path(k), weights_only=False)
                   for k in keys]
        params = {k: torch.stack([e["params"][k] for e in entries]) for k in entries[0]["params"]}
        history = {k: np.stack([e["history"][k] for e in entries], axis=1) for k in entries[0]["history"]}
        return Sweep(arch, config, members, params, history,
                     np.array([e["diverged"] for e in entries]),
                     sum(e["seconds"] for e in entries), entries[0]["device"])

    def cached(self, arch, config, data, members) -> list[bool]:
        """Which members are already in the cache."""
        members = _validate_members(members, config)
        datasets = list(data) if not isinstance(data, Dataset) else [data] * len(members)
        return [self._path(self.member_key(arch, config, d, m)).exists() for d, m in zip(datasets, members)]

    def _load(self, key: str):
        """The cache entry ``key``, or None when absent or damaged (then warned about and set aside)."""
        from .safeload import load_or_set_aside

        return load_or_set_aside(self._path(key), "cache entry",
                                 required=("params", "history", "diverged", "seconds", "device"))

    def _path(self, key: str) -> Path:
        return self.root / "members" / f"{key}.pt"


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


def check(claim: int, what: str, measured: str, passed: bool) -> dict:
    """One line of a notebook's verdict: which SPEC section-6 claim, what was tested, the outcome."""
    if not 1 <= int(claim) <= 16:
        raise ValueError(f"claim must be a SPEC section-6 claim number in [1, 16], got {claim}")
    return {"claim": int(claim), "what": what, "measured": measured, "passed": bool(passed)}


def _jsonable(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    return v


def record(notebook: str, values: dict, checks: list[dict] = (), *, glue: bool = True) -> Path:
    """Publish a notebook's key numbers: a JSON file for tests and the book, and ``myst_nb.glue``.

    Parameters
    ----------
    notebook : str
        The notebook's name (file stem).
    values : dict
        Key numbers (floats, ints, strings).
    checks : list of dict
        Verdicts from :func:`check`.
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
               "values": values, "checks": list(checks), "meta": environment()}
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
