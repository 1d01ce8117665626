"""Time and plateau probe of the full profile's shared MNIST / Fashion-MNIST sweep.

Reads E1's entry of ``profiles/full.yaml``, builds the data, architecture, members and training
config through :mod:`nrc_companion.setups` exactly as the notebooks do, trains a subset of the members
(``--every``: every k-th member of the weight-decay x seed grid) with :func:`nrc.train` (no cache
is read or written), and reports

* seconds per epoch of the subset (wall, and the process's CPU time, which is what an idle
  core would take with one thread), and the extrapolation to the whole grid (time is linear in
  the number of stacked members at these shapes);
* the plateau of the training loss: per member, the relative decrease of the epoch-mean
  training loss over the last 10 % of the epochs, ``(L[E - 1 - k] - L[E - 1]) / L[E - 1]`` with
  ``k = ceil(E / 10)``.

Usage::

    python benchmarks/full_profile_probe.py --every 7 --datasets mnist,fashion-mnist
    python benchmarks/full_profile_probe.py --from-cache .nrc-cache   # after the full run: all members
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import yaml

import nrc
import nrc_companion.setups as setups


def plateau(losses) -> float:
    E = len(losses)
    k = max(1, math.ceil(E / 10))
    return float((losses[E - 1 - k] - losses[E - 1]) / abs(losses[E - 1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="profiles/full.yaml")
    p.add_argument("--every", type=int, default=7, help="train every k-th member of the grid (default 7)")
    p.add_argument("--datasets", default=None, help="comma-separated (default: E1's datasets)")
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--from-cache", type=Path, default=None, metavar="DIR",
                   help="after a full run: read every member of the grid from this ResultStore cache "
                        "(no training; fails if a member is missing) and report the plateau of all")
    p.add_argument("--out", type=Path, default=Path("benchmarks/full_profile_probe.json"))
    a = p.parse_args(argv)
    if a.every < 1:
        print(f"full_profile_probe: --every must be >= 1, got {a.every}", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    e1 = yaml.safe_load(Path(a.profile).read_text())["notebooks"]["e1_rank_vs_weight_decay"]
    epochs = a.epochs or int(e1["epochs"])
    datasets = a.datasets.split(",") if a.datasets else list(e1["datasets"])
    members = setups.members(e1["weight_decays"], e1["seeds"])
    subset = members if a.from_cache is not None else members[::a.every]
    config = setups.train_config(e1["loss"], epochs=epochs, batch_size=e1["batch_size"], lr=e1["lr"],
                                 refine_steps=e1["refine_steps"], momentum=e1["momentum"])
    report = {"profile": a.profile, "epochs": epochs, "members_total": len(members), "members_probed": subset,
              "threads": torch.get_num_threads(), "load_before": os.getloadavg()[0], "datasets": {}}
    for ds in datasets:
        data = setups.load_data(ds, per_class=e1["per_class"], test_per_class=0)
        arch = nrc.Architecture(tuple(e1["widths"]), activation="relu", bias=e1["bias"])
        t0, c0 = time.perf_counter(), time.process_time()
        if a.from_cache is not None:
            store = nrc.ResultStore(a.from_cache)
            if not all(store.cached(arch, config, data, members)):
                print(f"full_profile_probe: {ds}: not every member is in {a.from_cache}; run the profile first",
                      file=sys.stderr)
                return 2
            sweep = store.train(arch, data, members, config, device="cpu", progress=False)
        else:
            sweep = nrc.train(arch, data, subset, config, device="cpu", progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        loss = sweep.history["loss"]  # (epochs, M)
        per_epoch = sweep.seconds / epochs
        r = {"n_train": data.n_train, "seconds": wall, "cpu_seconds": cpu, "seconds_per_epoch": per_epoch,
             "extrapolated_full_grid_s": per_epoch * epochs * len(members) / len(subset),
             "extrapolated_full_grid_cpu_s": cpu * len(members) / len(subset),
             "plateau_rel_decrease_last_10pct": {f"wd={m['weight_decay']:g},seed={m['seed']}": plateau(loss[:, i])
                                                 for i, m in enumerate(subset)},
             "final_loss": {f"wd={m['weight_decay']:g},seed={m['seed']}": float(loss[-1, i])
                            for i, m in enumerate(subset)},
             "loss_curve": loss.tolist(), "diverged": [bool(d) for d in sweep.diverged]}
        report["datasets"][ds] = r
        print(f"{ds}: {len(subset)} members x {epochs} epochs in {wall:.1f} s ({per_epoch:.2f} s/epoch) -> "
              f"full grid of {len(members)} members ~{r['extrapolated_full_grid_s']:.0f} s wall; process CPU time "
              f"{cpu:.1f} s -> ~{r['extrapolated_full_grid_cpu_s']:.0f} s on one free core", flush=True)
        for key, v in r["plateau_rel_decrease_last_10pct"].items():
            print(f"    {key}: final loss {r['final_loss'][key]:.4g}, relative decrease over the last 10% "
                  f"of epochs {v:.2%}")
    report["load_after"] = os.getloadavg()[0]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
