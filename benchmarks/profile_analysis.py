"""Analysis time at the full profile's shapes, and its change against an earlier commit (issue 20).

Times, with process CPU time (steadier than wall time on a shared machine) and interleaved:

* ``site_quantities``: :func:`nrc.site_quantities` for ``--members`` members of E1's MLP
  784-256-256-256-10 (2 SGD epochs on MNIST, ``--n`` training images), with the label partition
  and, with ``--kmeans``, with T4's k-means partition;
* ``kmeans``: :func:`nrc.kmeans` on every site input of one such member (T4 runs it per member
  and site);
* ``svdvals``: :func:`nrc.svdvals` of every stacked weight of the sweep;
* ``paths``: E4's loss paths (:mod:`nrc.landscape`) at its full-profile network, shortened.

With ``--baseline REV`` the same calls are also made with ``nrc/theorem.py`` and
``nrc/collapse.py``, ``nrc/spectra.py`` and ``nrc/landscape.py`` as they were at git revision
``REV`` (loaded with ``git show``), and the script reports the time ratio and the largest
relative change of every output column (k-means and paths: whether they are identical). ``--profile`` prints a cProfile of the current
``site_quantities``.

``notebook NAME`` instead runs one notebook's code cells with a profile's parameters under
cProfile, per cell and per ``nrc.timing`` phase (:func:`notebook_profile`); ``notebook
--initial-nc1`` times E1's NC1 at initialisation, one forward pass per member against one per seed.

Usage::

    NRC_DATA=/path/to/data python benchmarks/profile_analysis.py --baseline HEAD --out runs/bench/analysis.json
    python benchmarks/profile_analysis.py --members 21 --n 10000 --kmeans --profile
    NRC_CACHE_DIR=/path/to/full-run-cache python benchmarks/profile_analysis.py notebook e1_rank_vs_weight_decay
    python benchmarks/profile_analysis.py notebook --initial-nc1
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


def load_baseline(rev: str) -> dict:
    """The modules collapse, spectra, theorem and landscape as they were at git revision ``rev``
    (theorem reads the baseline collapse and spectra)."""
    mods = {}
    for name in ("collapse", "spectra", "theorem", "landscape"):
        src = subprocess.run(["git", "show", f"{rev}:nrc/{name}.py"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        mod = types.ModuleType(f"nrc._baseline_{name}")
        mod.__package__ = "nrc"
        if name == "theorem":  # its "from . import collapse, spectra" must see the baseline modules
            src = src.replace("from . import collapse, spectra", "")
            mod.collapse, mod.spectra = mods["collapse"], mods["spectra"]
        exec(compile(src, f"{rev}:nrc/{name}.py", "exec"), mod.__dict__)
        mods[name] = mod
    return mods


def paths(mod, arch, p, X, Y, loss="mse", lam=0.01):
    """E4's path analysis at its full-profile shapes, shortened: a descent, a two-penalty collapse
    continuation and the measures at every waypoint (one call each, as E4 did before issue 20)."""
    d = mod.descent_path(arch, p, X, Y, lam, loss=loss, steps=60, check_points=8)
    c, _ = mod.collapse_path(arch, d[-1], X, Y, lam, penalties=[0.1, 100.0], steps_per_penalty=40, loss=loss,
                             check_points=8)
    values = [mod.path_values(arch, w, X, Y, lam, loss=loss, substeps=7)["value"] for w in (d, c)]
    if hasattr(mod, "waypoint_measures"):
        at = mod.waypoint_measures(arch, c, X, Y, lam, loss=loss)
        measures = np.concatenate([at["L_lambda"], at["tcv_ratio"]])
    else:
        measures = np.array([float(mod.regularized_objective(arch, q, X, Y, lam, loss=loss)) for q in c]
                            + [float(mod.hidden_tcv(arch, q, X, Y, relative=True, reduce="max")) for q in c])
    return d + c, np.concatenate(values + [measures])


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
    theorem_old = base["theorem"] if base else None
    report = {"load_before": os.getloadavg(), "members": a.members, "n": a.n, "threads": a.threads,
              "baseline": a.baseline, "site_quantities": {}}
    for part in ["labels"] + (["kmeans"] if a.kmeans else []):
        new, t_new = cpu(lambda: nrc.site_quantities(*args, loss="ce", partition=part))
        entry = {"new_cpu_s": t_new}
        if base:
            old, t_old = cpu(lambda: theorem_old.site_quantities(*args, loss="ce", partition=part))
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
            ref, t = cpu(lambda: base["collapse"].kmeans(s.input[0], 10, seed=0))
            km["old_cpu_s"] += t
            km["identical"] &= bool(torch.equal(got, ref))
    if base:
        km["speedup"] = km["old_cpu_s"] / km["new_cpu_s"]
    report["kmeans_one_member_all_sites"] = km
    print("kmeans", json.dumps(km))
    # singular values of every weight of the sweep (site_quantities and analyze take them)
    stacks = [v.double() for k, v in sweep.params.items() if k.startswith("W")]
    sv = {"new_cpu_s": 0.0}
    for W in stacks:
        got, t = cpu(lambda: nrc.svdvals(W))
        sv["new_cpu_s"] += t
        if base:
            ref, t = cpu(lambda: base["spectra"].svdvals(W))
            sv["old_cpu_s"] = sv.get("old_cpu_s", 0.0) + t
            sv["max_abs_change_over_s1"] = max(sv.get("max_abs_change_over_s1", 0.0),
                                               float(np.max(np.abs(got - ref) / ref[..., :1])))
    if base:
        sv["speedup"] = sv["old_cpu_s"] / sv["new_cpu_s"]
    report["svdvals_all_weights"] = sv
    print("svdvals", json.dumps(sv))
    # E4's loss paths (tiny networks: per-call overhead, not arithmetic)
    from nrc import landscape

    mix = nrc.make_gaussian_mixture(num_classes=4, dim=48, per_class=10, spread=1.0, seed=0)
    small = nrc.Architecture((48, 64, 64, 4), activation="relu", bias=False)
    start = landscape.member_params(nrc.train(small, mix, nrc.grid(weight_decay=0.0, seed=[0]),
                                              nrc.TrainConfig(loss="mse", epochs=100, batch_size=10),
                                              progress=False), 0)
    X, Y = mix.x_train.double(), mix.y_train
    for mod in [landscape] + ([base["landscape"]] if base else []):  # warm-up: first calls cost ~1 s more
        paths(mod, small, start, X, Y)
    (wp, vals), t = cpu(lambda: paths(landscape, small, start, X, Y))
    pe = {"new_cpu_s": t}
    if base:
        (wp_old, vals_old), t = cpu(lambda: paths(base["landscape"], small, start, X, Y))
        pe.update(old_cpu_s=t, speedup=t / pe["new_cpu_s"],
                  identical=len(wp) == len(wp_old) and bool(np.array_equal(vals, vals_old))
                  and all(torch.equal(p[k], q[k]) for p, q in zip(wp, wp_old) for k in p))
    report["e4_paths"] = pe
    print("paths", json.dumps(pe))
    if a.profile:
        cProfile.runctx("nrc.site_quantities(*args, loss='ce')", globals(), {"nrc": nrc, "args": args},
                        "/tmp/nrc_profile_analysis.out")
        pstats.Stats("/tmp/nrc_profile_analysis.out").sort_stats("tottime").print_stats(15)
    report["load_after"] = os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print("wrote", out)


# ---------------------------------------------------------------------------------------------
# A whole notebook's time outside training: per cell, per nrc.timing phase, and its cProfile
# ---------------------------------------------------------------------------------------------

def notebook_profile(name: str, profile: str = "full", top: int = 30, repo: Path = REPO) -> dict:
    """Run the code cells of ``notebooks/<name>.ipynb`` with ``profile``'s parameters in an in-process
    IPython shell (inline SVG figures, as in a kernel), under cProfile.

    Returns ``{"cells": [{"cell", "wall_s", "cpu_s", "phases"}], "phases": {...}, "wall_s", "cpu_s"}``
    and prints the cProfile top ``top`` by cumulative and by own time. Trained members come from
    ``$NRC_CACHE_DIR`` (point it at a full run's cache to profile the analysis alone); tables go to
    ``$NRC_RESULTS_DIR`` (default: a temporary folder).
    """
    import io
    import tempfile

    import yaml
    from IPython.core.interactiveshell import InteractiveShell

    import nrc.timing as timing

    os.environ.setdefault("NRC_RESULTS_DIR", tempfile.mkdtemp(prefix="nrc-profile-"))
    params = yaml.safe_load((repo / "profiles" / f"{profile}.yaml").read_text())["notebooks"][name]
    nb = json.loads((repo / "notebooks" / f"{name}.ipynb").read_text())

    class Shell(InteractiveShell):
        def enable_gui(self, gui=None):  # the inline backend needs no event loop
            pass

    shell = Shell.instance()
    shell.run_line_magic("matplotlib", "inline")
    prof, cells = cProfile.Profile(), []
    here = os.getcwd()
    os.chdir(repo / "notebooks")
    try:
        for i, cell in enumerate(nb["cells"]):
            tags = cell.get("metadata", {}).get("tags", [])
            if cell["cell_type"] != "code" or "nrc-colab-setup" in tags:
                continue
            src = "".join(cell["source"])
            if "parameters" in tags:
                src += "\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
            before, t0, c0 = timing.totals(), time.perf_counter(), time.process_time()
            prof.enable()
            result = shell.run_cell(src, store_history=False)
            prof.disable()
            after = timing.totals()
            cells.append({"cell": i, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                          "phases": {k: v - before.get(k, 0.0) for k, v in after.items() if v > before.get(k, 0.0)}})
            if not result.success:
                raise RuntimeError(f"{name}: cell {i} failed")
    finally:
        os.chdir(here)
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats(order).print_stats(top)
        print(out.getvalue())
    for c in cells:
        print(f"cell {c['cell']:3d}: {c['wall_s']:7.2f} s wall {c['cpu_s']:7.2f} s CPU  "
              + ", ".join(f"{k} {v:.2f}" for k, v in c["phases"].items()))
    return {"notebook": name, "profile": profile, "cells": cells, "phases": timing.totals(),
            "wall_s": sum(c["wall_s"] for c in cells), "cpu_s": sum(c["cpu_s"] for c in cells),
            "load": os.getloadavg()}


def initial_nc1_per_member(arch, data, members, config):
    """``setups.initial_nc1`` as it was before it made one forward pass per distinct seed (reference)."""
    from nrc.collapse import nc1

    params = nrc.init_params(arch, [int(m["seed"]) for m in members], init_scale=config.init_scale)
    params = {k: v.to(torch.float64) for k, v in params.items()}
    with torch.no_grad():
        _, sites = nrc.forward(arch, params, data.x_train.to(torch.float64), record=True)
    return nc1(sites[-1].input, data.y_train, data.num_classes).cpu().numpy()


def initial_nc1_speed(threads: int = 1) -> dict:
    """E1's NC1 at initialisation (MNIST, 784-256-256-256-10, 7 lambdas x 3 seeds): one float64
    forward per member against one per seed; CPU seconds and whether the values are bitwise equal."""
    from nrc_companion import setups

    torch.set_num_threads(threads)
    data = setups.load_data("mnist", per_class=1000, test_per_class=None)
    arch = nrc.Architecture((784, 256, 256, 256, 10), activation="relu", bias=False)
    members = setups.members([0.0, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], [0, 1, 2])
    config = setups.train_config("ce", epochs=50, batch_size=128, lr=0.05)
    old, t_old = cpu(lambda: initial_nc1_per_member(arch, data, members, config))
    new, t_new = cpu(lambda: setups.initial_nc1(arch, data, members, config))
    return {"per_member_cpu_s": t_old, "per_seed_cpu_s": t_new, "bitwise_equal": bool(np.array_equal(old, new)),
            "threads": threads, "load": os.getloadavg()}


def notebook_main(argv) -> int:
    """``profile_analysis.py notebook NAME [--profile full] [--top 30] [--out FILE]`` or
    ``profile_analysis.py notebook --initial-nc1``."""
    ap = argparse.ArgumentParser(prog="profile_analysis.py notebook", description=notebook_profile.__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", help="notebook name, e.g. e1_rank_vs_weight_decay")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--initial-nc1", action="store_true", help="time setups.initial_nc1 against one pass per member")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.initial_nc1:
        result = initial_nc1_speed(a.threads)
    elif a.name:
        result = notebook_profile(a.name, a.profile, a.top)
    else:
        ap.error("name a notebook or pass --initial-nc1")
    print(json.dumps({k: v for k, v in result.items() if k != "cells"}, indent=1, default=str))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "notebook":
        sys.exit(notebook_main(sys.argv[2:]))
    sys.exit(main())
