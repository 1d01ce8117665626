"""What a rerun reproduces: the spread between CPU kernel paths against the spread between seeds.

Trains the full profile's shared MNIST sweep (MLP 784-256-256-256-10, ReLU, no bias,
cross-entropy, 1 000 images per class, SGD momentum 0.9, lr 0.05, cosine, batch 128, 50 epochs,
weight decays {0, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2} x seeds {0, 1, 2}) once per *kernel
path*, each in a fresh process without the cache:

* ``native``: this CPU's own kernels (AVX-512 here), at the given thread count;
* ``native-again``: the same again (on one machine at a fixed thread count reruns are bitwise
  identical: this checks it);
* ``avx2``: ATen, MKL and oneDNN limited to AVX2 (``ATEN_CPU_CAPABILITY=avx2``,
  ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``ONEDNN_MAX_CPU_ISA=AVX2``), as on an older CPU;
* ``1-thread``: native kernels on one thread (another reduction order).

It then compares, per member, the recorded numbers of each path with ``native`` (largest
relative change), sets that beside the spread between seeds at equal lambda, and evaluates the
registry's claim-2 and claim-14 checks (``nrc.verdicts``) on every path: a verdict that flips
between kernel paths is inconclusive.

    python benchmarks/kernel_paths.py --out runs/kernel_paths            # ~4 x 2 min on 2 cores
    python benchmarks/kernel_paths.py --out runs/kernel_paths --epochs 5  # a quick look

Writes ``<out>/<path>/sites.csv``, ``members.csv``, ``<out>/kernel_paths.json`` and
``<out>/kernel_paths.md``. ``--update-committed`` also copies the JSON and the table to
``benchmarks/`` (the book's *What a rerun reproduces* reads them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = [0.0, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
SEEDS = [0, 1, 2]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
#: Recorded per-member numbers compared across paths.
SITE_COLS = ["dK_rel", "frob", "rank_1e-2", "rank_1e-3", "bound", "nc1"]
MEMBER_COLS = ["train_loss", "test_acc"]


def _paths(threads: int) -> dict[str, tuple[dict, int]]:
    return {"native": ({}, threads), "native-again": ({}, threads), "avx2": (AVX2, threads),
            "1-thread": ({}, 1)}


def _train_one(out: Path, epochs: int, threads: int) -> None:
    """Child process: train the sweep with this process's kernels, write sites/members CSVs."""
    import torch

    import nrc
    from nrc import setups

    torch.set_num_threads(threads)
    data = setups.load_data("mnist", per_class=1000, test_per_class=None)
    arch = setups.architecture(data, [256, 256, 256])
    config = setups.train_config("ce", epochs=epochs, batch_size=128, lr=0.05)
    sweep = nrc.train(arch, data, setups.members(LAMBDAS, SEEDS), config, progress=False)
    an = nrc.analyze(sweep, data)
    out.mkdir(parents=True, exist_ok=True)
    an.sites.to_csv(out / "sites.csv", index=False)
    an.members.to_csv(out / "members.csv", index=False)
    (out / "env.json").write_text(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                                              "threads": torch.get_num_threads(), "seconds": sweep.seconds,
                                              **nrc.environment()}, default=str, indent=1))


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-300)


def _verdicts(sites: pd.DataFrame) -> dict[str, str]:
    """The registry's claim-2 and claim-14 verdicts on one path's sites table."""
    from nrc import verdicts

    hidden = ["W2", "W3"]
    rows2 = [{"site": r.site, "seed": int(r.seed), "x": float(r.weight_decay), "y": float(r.dK_rel)}
             for r in sites.itertuples()]
    pos = sites[sites["weight_decay"] > 0]
    rows14 = [{"site": r.site, "seed": int(r.seed), "x": float(r.bound / r.frob), "y": float(r.dK_rel)}
              for r in pos.itertuples()]
    out = {}
    for cid, rows in (("e1.claim2", rows2), ("e1.scale_free", rows14)):
        ev = verdicts.evaluate_one(cid, {"rows": rows, "scored": hidden})
        out[cid] = f"{ev['verdict']}: {ev['measured']}"
    return out


def compare(out: Path) -> dict:
    """Per path: largest relative change against ``native``, the seed spread, the verdicts."""
    keys = ["weight_decay", "seed"]
    base_s = pd.read_csv(out / "native" / "sites.csv")
    base_m = pd.read_csv(out / "native" / "members.csv")
    # spread between seeds at equal lambda: (max - min) / |mean| over the seeds, largest over lambda and site
    seed_spread = {}
    for col in SITE_COLS:
        g = base_s.groupby(["weight_decay", "site"])[col]
        seed_spread[col] = float(((g.max() - g.min()) / g.mean().abs().clip(lower=1e-300)).median())
    for col in MEMBER_COLS:
        g = base_m.groupby("weight_decay")[col]
        seed_spread[col] = float(((g.max() - g.min()) / g.mean().abs().clip(lower=1e-300)).median())
    result = {"seed_spread_median": seed_spread, "paths": {}}
    for path in sorted(p.name for p in out.iterdir() if (p / "sites.csv").exists()):
        s = pd.read_csv(out / path / "sites.csv").merge(base_s, on=keys + ["site"], suffixes=("", "_base"))
        m = pd.read_csv(out / path / "members.csv").merge(base_m, on=keys, suffixes=("", "_base"))
        change = {c: float(_rel(s[c].to_numpy(float), s[c + "_base"].to_numpy(float)).max()) for c in SITE_COLS}
        change.update({c: float(_rel(m[c].to_numpy(float), m[c + "_base"].to_numpy(float)).max())
                       for c in MEMBER_COLS})
        median = {c: float(np.median(_rel(s[c].to_numpy(float), s[c + "_base"].to_numpy(float))))
                  for c in SITE_COLS}
        bitwise = bool(all((s[c] == s[c + "_base"]).all() for c in SITE_COLS)
                       and all((m[c] == m[c + "_base"]).all() for c in MEMBER_COLS))
        env = json.loads((out / path / "env.json").read_text())
        result["paths"][path] = {"bitwise_equal_to_native": bitwise, "max_rel_change": change,
                                 "median_rel_change": median, "verdicts": _verdicts(pd.read_csv(out / path / "sites.csv")),
                                 "capability": env["capability"], "threads": env["threads"],
                                 "seconds": env["seconds"], "device": env.get("device"),
                                 "commit": env.get("git_commit") or env.get("commit")}
    flips = {cid for cid in result["paths"]["native"]["verdicts"]
             if len({p["verdicts"][cid].split(":")[0] for p in result["paths"].values()}) > 1}
    result["verdicts_that_flip"] = sorted(flips)
    return result


def table(result: dict) -> str:
    cols = SITE_COLS + MEMBER_COLS
    lines = ["| kernel path | bitwise = native | " + " | ".join(f"max rel. change {c}" for c in cols) + " |",
             "|" + "---|" * (len(cols) + 2)]
    for name, p in result["paths"].items():
        lines.append(f"| {name} ({p['capability']}, {p['threads']} thr.) | {'yes' if p['bitwise_equal_to_native'] else 'no'} | "
                     + " | ".join(f"{p['max_rel_change'][c]:.2g}" for c in cols) + " |")
    lines.append("| *seed spread (median over λ)* | | " + " | ".join(f"{result['seed_spread_median'][c]:.2g}"
                                                               for c in cols) + " |")
    lines += ["", "| kernel path | " + " | ".join(result["paths"]["native"]["verdicts"]) + " |",
              "|---|" + "---|" * len(result["paths"]["native"]["verdicts"])]
    for name, p in result["paths"].items():
        lines.append(f"| {name} | " + " | ".join(v.replace("|", "/") for v in p["verdicts"].values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/kernel_paths", help="output folder (default runs/kernel_paths)")
    ap.add_argument("--epochs", type=int, default=50, help="SGD epochs (the full profile: 50)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the native paths (default 2)")
    ap.add_argument("--only", default="", help="comma-separated paths to (re)train; default: the missing ones")
    ap.add_argument("--update-committed", action="store_true", help="also copy the table into benchmarks/")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.child:
        _train_one(out / a.child, a.epochs, int(os.environ["NRC_KP_THREADS"]))
        return 0
    wanted = [p for p in a.only.split(",") if p] or list(_paths(a.threads))
    for name, (env, threads) in _paths(a.threads).items():
        if name not in wanted or ((out / name / "sites.csv").exists() and not a.only):
            continue
        print(f"training the sweep on kernel path {name} ...", flush=True)
        child_env = {**os.environ, **env, "NRC_KP_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                     "MKL_NUM_THREADS": str(threads), "NRC_PROGRESS": "0"}
        subprocess.run([sys.executable, __file__, "--out", str(out), "--epochs", str(a.epochs), "--child", name],
                       check=True, env=child_env)
    result = compare(out)
    result["epochs"] = a.epochs
    (out / "kernel_paths.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "kernel_paths.md").write_text(table(result))
    print(table(result))
    if a.update_committed:
        shutil.copy(out / "kernel_paths.json", REPO / "benchmarks" / "kernel_paths.json")
        shutil.copy(out / "kernel_paths.md", REPO / "benchmarks" / "kernel_paths.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
