"""Provenance recorded with every result: device, Python and library versions, git commit, time."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

__all__ = ["device_name", "environment", "git_state"]


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


def device_name() -> str:
    """Where results are computed: the first CUDA GPU's name when torch sees one, else the CPU's
    model and core count (also when torch is missing or its CUDA is broken)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - torch missing or broken CUDA: fall back to the CPU
        pass
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {name or 'unknown'} ({os.cpu_count()} cores)"


def environment() -> dict:
    """Provenance of a result: device, Python and library versions, git commit, time (UTC)."""
    versions = {}
    for pkg in ("nrc", "torch", "numpy", "scipy", "pandas", "matplotlib", "papermill", "jupyter-book"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    commit, dirty = git_state()
    return {"device": device_name(), "python": sys.version.split()[0], "platform": platform.platform(),
            "versions": versions, "commit": commit, "dirty": dirty,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
