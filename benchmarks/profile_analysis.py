"""Analysis time at the full profile's shapes, and its change against an earlier commit (issue 20).

Times, with process CPU time (steadier than wall time on a shared machine) and interleaved:

* ``site_quantities``: :func:`nrc.site_quantities` for ``--members`` members of E1's MLP
  784-256-256-256-10 (2 SGD epochs on MNIST, ``--n`` training images), with the label partition
  and, with ``--kmeans``, with T4's k-means partition;
* ``kmeans``: :func:`nrc.kmeans` on every site input of one such member (T4 runs it per member
  and site).

With ``--baseline REV`` the same calls are also made with ``nrc/theorem.py`` and
``nrc/collapse.py`` as they were at git revision ``REV`` (loaded with ``git show``), and the
script reports the time ratio and the largest relative change of every output column (for
k-means: whether the partitions are identical). ``--profile`` prints a cProfile of the current
``site_quantities``.

Usage::

    NRC_DATA=/path/to/data python benchmarks/profile_analysis.py --baseline HEAD --out runs/bench/analysis.json
    python benchmarks/profile_analysis.py --members 21 --n 10000 --kmeans --profile
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import pstats
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

import nrc

REPO = Path(__file__).resolve().parent.parent


def load_baseline(rev: str):
    """(theorem, collapse) modules as they were at git revision ``rev``."""
    mods = {}
    for name in ("collapse", "theorem"):
        src = subprocess.run(["git", "show", f"{rev}:nrc/{name}.py"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        mod = types.ModuleType(f"nrc._baseline_{name}")
        mod.__package__ = "nrc"
        if name == "theorem":  # its "from . import collapse" must see the baseline collapse
            src = src.replace("from . import collapse, spectra", "from . import spectra")
            mod.collapse = mods["collapse"]
        exec(compile(src, f"{rev}:nrc/{name}.py", "exec"), mod.__dict__)
        mods[name] = mod
    return mods["theorem"], mods["collapse"]


def cpu(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def compare_tables(a, b):
    """Largest relative change per numeric column (identity_gap, a rounding-level quantity, by its
    largest absolute value instead)."""
    out = {}
    for c in a.columns:
        if c in ("member", "site", "layer"):
            continue
        va, vb = a[c].to_numpy(float), b[c].to_numpy(float)
        if c == "identity_gap":
            out["identity_gap_max_old"] = float(np.nanmax(np.where(a["dK"] > 0, va, np.nan)))
            out["identity_gap_max_new"] = float(np.nanmax(np.where(b["dK"] > 0, vb, np.nan)))
            continue
        both = np.isfinite(va) & np.isfinite(vb)
        if not (np.isnan(va) == np.isnan(vb)).all():
            out[c] = float("inf")
            continue
        rel = np.abs(va[both] - vb[both]) / np.maximum(np.abs(va[both]), 1e-300)
        out[c] = float(rel.max()) if rel.size else 0.0
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=7)
    ap.add_argument("--n", type=int, default=10000, help="MNIST training images (balanced)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kmeans", action="store_true", help="also time the k-means partition")
    ap.add_argument("--baseline", default=None, help="git revision to compare with (e.g. HEAD)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default="runs/bench/profile_analysis.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = nrc.load_dataset("mnist", per_class=a.n // 10)
    arch = nrc.Architecture((784, 256, 256, 256, 10))
    wds = [1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    members = [{"weight_decay": wds[i % len(wds)], "seed": i // len(wds)} for i in range(a.members)]
    sweep = nrc.train(arch, data, members, nrc.TrainConfig(epochs=2), progress=False)
    wd = [m["weight_decay"] for m in members]
    args = (arch, sweep.params, data.x_train, data.y_train, wd)
    base = load_baseline(a.baseline) if a.baseline else None
    report = {"load_before": os.getloadavg(), "members": a.members, "n": a.n, "threads": a.threads,
              "baseline": a.baseline, "site_quantities": {}}
    for part in ["labels"] + (["kmeans"] if a.kmeans else []):
        new, t_new = cpu(lambda: nrc.site_quantities(*args, loss="ce", partition=part))
        entry = {"new_cpu_s": t_new}
        if base:
            old, t_old = cpu(lambda: base[0].site_quantities(*args, loss="ce", partition=part))
            entry.update(old_cpu_s=t_old, speedup=t_old / t_new, max_rel_change=compare_tables(old, new))
        report["site_quantities"][part] = entry
        print(part, json.dumps(entry))
    with torch.no_grad():
        _, sites = nrc.forward(arch, {k: v[:1].double() for k, v in sweep.params.items()},
                               data.x_train.double(), record=True)
    km = {"new_cpu_s": 0.0, "old_cpu_s": 0.0, "identical": True}
    for s in sites:
        got, t = cpu(lambda: nrc.kmeans(s.input[0], 10, seed=0))
        km["new_cpu_s"] += t
        if base:
            ref, t = cpu(lambda: base[1].kmeans(s.input[0], 10, seed=0))
            km["old_cpu_s"] += t
            km["identical"] &= bool(torch.equal(got, ref))
    if base:
        km["speedup"] = km["old_cpu_s"] / km["new_cpu_s"]
    report["kmeans_one_member_all_sites"] = km
    print("kmeans", json.dumps(km))
    if a.profile:
        cProfile.runctx("nrc.site_quantities(*args, loss='ce')", globals(), {"nrc": nrc, "args": args},
                        "/tmp/nrc_profile_analysis.out")
        pstats.Stats("/tmp/nrc_profile_analysis.out").sort_stats("tottime").print_stats(15)
    report["load_after"] = os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    sys.exit(main())
