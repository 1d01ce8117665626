"""What a rerun reproduces: the spread between CPU kernel paths against the spread between seeds.

Reruns one notebook of the ``full`` profile (default T2, which trains the shared MNIST sweep:
MLP 784-256-256-256-10, 7 weight decays x 3 seeds) from an empty cache under other *kernel
paths* of this machine, and compares every recorded number with a reference run (default the
published one, ``book/published``):

* ``avx2``: ATen, MKL and oneDNN limited to AVX2 (``ATEN_CPU_CAPABILITY=avx2``,
  ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``ONEDNN_MAX_CPU_ISA=AVX2``), as on an older CPU;
* ``1-thread``: this CPU's own kernels on one thread instead of two (another reduction order);
* ``again``: the reference's settings once more (bitwise equal when the reference was made on
  this machine at the same thread count).

Per kernel path it reports the largest and the median relative change of each per-member number
(``results/<notebook>/sites.csv`` and ``members.csv``), beside the spread between seeds at equal
weight decay in the reference, and the verdict of every registry check (re-evaluated from the
records' inputs with ``nrc_companion.verdicts``). A verdict that flips between kernel paths is inconclusive.

    python benchmarks/kernel_paths.py --out runs/kernel_paths                  # avx2 and 1-thread, ~3 min each
    python benchmarks/kernel_paths.py --out runs/kernel_paths --paths again    # the bitwise check
    python benchmarks/kernel_paths.py --notebook e2_proportional_to_tcv --out runs/kernel_paths_e2 --paths avx2,1-thread,again

Writes ``<out>/<path>/`` (the rerun), ``<out>/kernel_paths.json`` and ``<out>/kernel_paths.md``;
``--update-committed`` also copies those two files to ``benchmarks/kernel_paths/<notebook>.json``
and ``.md`` (the book's *What a rerun reproduces* page includes each notebook's table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
PATHS = {"avx2": (AVX2, 2), "1-thread": ({}, 1), "again": ({}, 2)}
#: Per-member numbers compared across paths: columns of sites.csv / members.csv when present.
SITE_COLS = ["dK", "dK_rel", "frob", "rank_1e-2", "rank_1e-3", "bound", "nc1", "stationarity"]
MEMBER_COLS = ["train_loss", "train_acc", "test_acc"]
#: Columns that identify a member's row (those a table has): the member's index in its sweep, and
#: what defines the member and the sweep (E2 trains one sweep per number of classes K, and one member
#: per spread at each weight decay and seed).
KEYS = ["member", "weight_decay", "seed", "loss", "K", "spread"]


def _rel(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(new - old) / np.abs(old)
    r[new == old] = 0.0
    return r


def _table(run: Path, notebook: str, name: str) -> pd.DataFrame | None:
    p = run / "results" / notebook / f"{name}.csv"
    return pd.read_csv(p) if p.exists() else None


def _seed_spread(df: pd.DataFrame, cols: list[str], by: list[str]) -> dict[str, float]:
    """Median over (lambda, site, and K and spread where a table has them) of (max - min) / |mean| over the seeds."""
    out = {}
    for c in cols:
        if c in df:
            g = df[df["weight_decay"] > 0].groupby([k for k in by if k in df])[c]
            out[c] = float(((g.max() - g.min()) / g.mean().abs()).replace([np.inf], np.nan).median())
    return out


def _changes(new: pd.DataFrame, ref: pd.DataFrame, cols: list[str], on: list[str]) -> tuple[dict, dict, bool]:
    m = new.merge(ref, on=[k for k in on if k in new and k in ref], suffixes=("", "_ref"))
    worst, median, bitwise = {}, {}, True
    for c in cols:
        if c in new and c in ref:
            a, b = m[c].to_numpy(float), m[c + "_ref"].to_numpy(float)
            fin = np.isfinite(a) & np.isfinite(b)
            if not fin.any():  # not measured in this notebook (e.g. no test split)
                continue
            r = _rel(a[fin], b[fin])
            worst[c], median[c] = float(r.max()), float(np.median(r))
            bitwise &= bool(np.array_equal(a, b, equal_nan=True))
    return worst, median, bitwise


def _evaluated(run: Path, notebook: str) -> list[dict]:
    from nrc_companion import verdicts

    rec = json.loads((run / "results" / f"{notebook}.json").read_text())
    return verdicts.evaluate(notebook, rec["inputs"])


def _verdicts_and_values(run: Path, notebook: str) -> tuple[dict[str, str], dict[str, float]]:
    """Each check's verdict and deciding number, from one evaluation of the run's record."""
    checks = _evaluated(run, notebook)
    return ({c["id"]: c["verdict"] for c in checks},
            {c["id"]: c["value"] for c in checks if c.get("value") is not None})


def rerun(path: str, out: Path, notebook: str, profile: str) -> None:
    env, threads = PATHS[path]
    dest = out / path
    with tempfile.TemporaryDirectory(prefix="nrc-kp-cache-") as cache:
        child = {**os.environ, **env, "NRC_CACHE_DIR": cache, "NRC_PROGRESS": "0"}
        subprocess.run([sys.executable, "-m", "nrc_companion.cli", "reproduce", "--profile", profile, "--only", notebook,
                        "--out", str(dest), "--threads", str(threads), "--no-resume"], check=True, env=child,
                       cwd=REPO)


def compare(out: Path, reference: Path, notebook: str) -> dict:
    ref_s, ref_m = _table(reference, notebook, "sites"), _table(reference, notebook, "members")
    result = {"notebook": notebook, "reference": str(reference),
              "reference_status": {k: json.loads((reference / "status.json").read_text()).get(k)
                                   for k in ("device", "commit", "threads")},
              "seed_spread_median": {**_seed_spread(ref_s, SITE_COLS, ["weight_decay", "K", "spread", "site"]),
                                     **_seed_spread(ref_m, MEMBER_COLS, ["weight_decay", "K", "spread"])},
              "paths": {}}
    ref_verdicts, ref_vals = _verdicts_and_values(reference, notebook)
    result["reference_verdicts"] = ref_verdicts
    for path in PATHS:
        run = out / path
        if not (run / "results" / f"{notebook}.json").exists():
            continue
        ws, ms, bs = _changes(_table(run, notebook, "sites"), ref_s, SITE_COLS, KEYS + ["site"])
        wm, mm, bm = _changes(_table(run, notebook, "members"), ref_m, MEMBER_COLS, KEYS)
        status = json.loads((run / "status.json").read_text())
        path_verdicts, vals = _verdicts_and_values(run, notebook)
        value_change = {i: abs(vals[i] - v) / abs(v) if v else abs(vals[i] - v)
                        for i, v in ref_vals.items() if i in vals}
        result["paths"][path] = {"env": PATHS[path][0], "threads": PATHS[path][1], "bitwise_equal": bs and bm,
                                 "check_value_change": value_change,
                                 "max_rel_change": {**ws, **wm}, "median_rel_change": {**ms, **mm},
                                 "verdicts": path_verdicts, "commit": status.get("commit"),
                                 "device": status.get("device"), "seconds": status.get("run_seconds")}
    ids = result["reference_verdicts"]
    result["verdicts_that_flip"] = sorted(i for i in ids if any(p["verdicts"].get(i) != ids[i]
                                                                 for p in result["paths"].values()))
    return result


def table(result: dict) -> str:
    cols = [c for c in SITE_COLS + MEMBER_COLS if c in result["seed_spread_median"]
            and np.isfinite(result["seed_spread_median"][c])]
    head = "| | bitwise equal | " + " | ".join(f"`{c}`" for c in cols) + " |"
    lines = [f"Largest relative change of each per-member number of `{result['notebook']}` against the "
             f"reference run ({result['reference_status']['device']}, {result['reference_status']['threads']} "
             "threads), per kernel path; last row: the spread between seeds at equal $\\lambda$ (median over "
             "$\\lambda$ and weight matrix of (max - min) / mean).", "", head, "|---|---|" + "---|" * len(cols)]
    for name, p in result["paths"].items():
        lines.append(f"| {name} | {'yes' if p['bitwise_equal'] else 'no'} | "
                     + " | ".join(f"{p['max_rel_change'].get(c, float('nan')):.2g}" for c in cols) + " |")
    lines.append("| *between seeds* | | " + " | ".join(f"{result['seed_spread_median'][c]:.2g}" for c in cols) + " |")
    ids = list(result["reference_verdicts"])
    lines += ["", "Verdict of each check per kernel path (and the relative change of its deciding number):", "",
              "| check | reference | " + " | ".join(result["paths"]) + " |",
              "|---|---|" + "---|" * len(result["paths"])]
    for i in ids:
        cells = []
        for p in result["paths"].values():
            ch = p.get("check_value_change", {}).get(i)
            cells.append(p["verdicts"].get(i, "") + (f" ({ch:.2g})" if ch is not None else ""))
        lines.append(f"| `{i}` | {result['reference_verdicts'][i]} | " + " | ".join(cells) + " |")
    flips = result["verdicts_that_flip"]
    lines += ["", ("No verdict flips between kernel paths." if not flips else
                   "Verdicts that flip between kernel paths, and are therefore inconclusive: "
                   + ", ".join(f"`{i}`" for i in flips) + ".")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/kernel_paths", help="output folder (default runs/kernel_paths)")
    ap.add_argument("--reference", default="book/published", help="the reference run (default book/published)")
    ap.add_argument("--notebook", default="t2_rank_tcv_bound")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--paths", default="avx2,1-thread", help=f"comma-separated, of {', '.join(PATHS)}")
    ap.add_argument("--compare-only", action="store_true", help="only compare the runs already in --out")
    ap.add_argument("--update-committed", action="store_true", help="also copy the table into benchmarks/")
    a = ap.parse_args(argv)
    out, paths = Path(a.out), [p for p in a.paths.split(",") if p]
    bad = [p for p in paths if p not in PATHS]
    if bad:
        print(f"kernel_paths: --paths {bad} unknown; allowed: {', '.join(PATHS)}", file=sys.stderr)
        return 2
    if not a.compare_only:
        for p in paths:
            print(f"rerunning {a.notebook} on kernel path {p} ...", flush=True)
            rerun(p, out, a.notebook, a.profile)
    result = compare(out, Path(a.reference), a.notebook)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel_paths.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "kernel_paths.md").write_text(table(result))
    print(table(result))
    if a.update_committed:
        committed = REPO / "benchmarks" / "kernel_paths"
        committed.mkdir(exist_ok=True)
        for suffix in (".json", ".md"):
            shutil.copy(out / f"kernel_paths{suffix}", committed / f"{a.notebook}{suffix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
