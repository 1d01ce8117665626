"""Side-by-side timings of the small-network training paths at T1's shapes (issue 20).

T1 (profiles/full.yaml) trains 9 members (3 weight decays x 3 seeds) of an MLP 10-32-32-32-4 on
120 Gaussian-mixture samples: 100 SGD epochs of batch 32, then float64 L-BFGS with budgets up to
1000 iterations, for 2 activations x 2 losses x 5 budgets. This script times, interleaved so that
machine load hits both alike:

* ``sgd``: :func:`nrc.train` without refinement, with the per-member fused SGD update
  (``FUSED_SGD_MIN_NUMEL = 0``, the old path) and with the broadcast update used now for small
  members;
* ``lbfgs``: the float64 L-BFGS refinement, torch.optim.LBFGS member after member (the old code,
  reproduced here) against the batched :func:`nrc.train._refine_lbfgs`, and the largest relative
  change of the final losses and weights between the two.

* ``--t1-budgets``: T1's whole training, one run per L-BFGS budget (as before) against one run
  kept at every budget (``TrainConfig.refine_snapshots``), with a check that both give the same bits.

Usage::

    python benchmarks/profile_training.py --out runs/bench/profile_training.json
    python benchmarks/profile_training.py --t1-budgets --out runs/bench/t1_budgets.json
    python benchmarks/profile_training.py --lbfgs-steps 300 --repeats 2 --threads 1
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import nrc
from nrc_companion import setups

T = importlib.import_module("nrc.train")


def loop_lbfgs(arch, params, x, y, wd, loss, steps):
    """The refinement as it was: torch.optim.LBFGS on one member at a time."""
    M = wd.shape[0]
    out = {k: v.clone() for k, v in params.items()}
    final = np.full(M, np.nan)
    for m in range(M):
        pm = {k: v[m:m + 1].clone().requires_grad_(True) for k, v in params.items()}
        opt = torch.optim.LBFGS(list(pm.values()), lr=1.0, max_iter=steps, tolerance_grad=1e-15,
                                tolerance_change=1e-18, history_size=50, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            value = T.regularized_loss(arch, pm, x, y, wd[m:m + 1], loss).sum()
            value.backward()
            return value

        opt.step(closure)
        with torch.no_grad():
            for k in out:
                out[k][m] = pm[k][0]
            final[m] = float(T.regularized_loss(arch, pm, x, y, wd[m:m + 1], loss))
    return out, final


def t1_budgets(a):
    """T1's training as the notebook did it (one run per L-BFGS budget) against one run kept at every
    budget (``refine_snapshots``), interleaved, at the full profile's T1 settings; asserts equal results."""
    budgets = [int(b) for b in a.budgets.split(",")]
    data = setups.load_data("synthetic", num_classes=4, dim=10, per_class=30, spread=0.7)
    members = setups.members([0.01, 0.03, 0.1], [0, 1, 2])
    torch.set_num_threads(int(a.threads.split(",")[0]))
    result = {"load_before": os.getloadavg(), "threads": torch.get_num_threads(), "budgets": budgets,
              "shapes": "T1 full profile: MLP 10-32-32-32-4, N=120, 9 members per activation and loss", "runs": []}
    for act in a.activations.split(","):
        arch = setups.architecture(data, [32, 32, 32], activation=act)
        for loss in ("mse", "ce"):
            kw = dict(epochs=100, batch_size=32, lr=0.05)
            t0, c0 = time.perf_counter(), time.process_time()
            separate = {b: nrc.train(arch, data, members, setups.train_config(loss, refine_steps=b, **kw), progress=False)
                        for b in budgets}
            t_separate, c_separate = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            config = setups.train_config(loss, refine_steps=budgets[-1], **kw)
            one = nrc.train(arch, data, members, replace(config, refine_snapshots=tuple(budgets[:-1])), progress=False)
            t_one, c_one = time.perf_counter() - t0, time.process_time() - c0
            equal = all(torch.equal(one.refined_at(b).params[k].nan_to_num(), separate[b].params[k].nan_to_num())
                        for b in budgets for k in separate[b].params)
            # CPU seconds beside wall seconds: on a shared machine the load can change between the two parts
            run = {"activation": act, "loss": loss, "separate_s": t_separate, "snapshots_s": t_one,
                   "separate_cpu_s": c_separate, "snapshots_cpu_s": c_one,
                   "speedup": t_separate / t_one, "cpu_speedup": c_separate / c_one, "bitwise_equal": equal}
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
    result["total_separate_s"] = sum(r["separate_s"] for r in result["runs"])
    result["total_snapshots_s"] = sum(r["snapshots_s"] for r in result["runs"])
    result["load_after"] = os.getloadavg()
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--t1-budgets", action="store_true",
                    help="time T1's training per budget against one run kept at every budget (see t1_budgets)")
    ap.add_argument("--budgets", default="0,30,100,300,1000,3000", help="T1's L-BFGS budgets (with --t1-budgets)")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lbfgs-steps", type=int, default=300)
    ap.add_argument("--activations", default="tanh,relu")
    ap.add_argument("--out", default="runs/bench/profile_training.json")
    a = ap.parse_args(argv)
    if a.t1_budgets:
        result = t1_budgets(a)
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print("wrote", out)
        return
    data = setups.load_data("synthetic", num_classes=4, dim=10, per_class=30, spread=0.7)
    members = setups.members([0.01, 0.03, 0.1], [0, 1, 2])
    x, y = data.x_train.double(), data.y_train
    wd = torch.tensor([m["weight_decay"] for m in members], dtype=torch.float64)
    result = {"load_before": os.getloadavg(), "shapes": "T1: MLP 10-32-32-32-4, N=120, 9 members", "runs": []}
    for threads in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(threads)
        for act in a.activations.split(","):
            arch = setups.architecture(data, [32, 32, 32], activation=act)
            for loss in ("mse", "ce"):
                sgd_cfg = setups.train_config(loss, epochs=100, batch_size=32, lr=0.05)
                ref_cfg = setups.train_config(loss, epochs=100, batch_size=32, lr=0.05, refine_steps=a.lbfgs_steps)
                times = {"sgd_fused_loop": [], "sgd_broadcast": [], "lbfgs_loop": [], "lbfgs_batched": []}
                for _ in range(a.repeats):
                    for name, threshold in (("sgd_fused_loop", 0), ("sgd_broadcast", 1 << 62)):
                        saved, T.FUSED_SGD_MIN_NUMEL = T.FUSED_SGD_MIN_NUMEL, threshold
                        try:
                            t0 = time.perf_counter()
                            sweep = nrc.train(arch, data, members, sgd_cfg, device="cpu", progress=False)
                            times[name].append(time.perf_counter() - t0)
                        finally:
                            T.FUSED_SGD_MIN_NUMEL = saved
                    p64 = {k: v.double() for k, v in sweep.params.items()}
                    t0 = time.perf_counter()
                    p_old, f_old = loop_lbfgs(arch, p64, x, y, wd, loss, a.lbfgs_steps)
                    times["lbfgs_loop"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    p_new, f_new, _ = T._refine_lbfgs(arch, p64, x, y, wd, torch.zeros(len(members), dtype=torch.bool), ref_cfg)
                    times["lbfgs_batched"].append(time.perf_counter() - t0)
                best = {k: min(v) for k, v in times.items()}
                run = {"threads": threads, "activation": act, "loss": loss, "lbfgs_steps": a.lbfgs_steps,
                       "seconds_min": best,
                       "sgd_speedup": best["sgd_fused_loop"] / best["sgd_broadcast"],
                       "lbfgs_speedup": best["lbfgs_loop"] / best["lbfgs_batched"],
                       "lbfgs_max_rel_loss_change": float(np.max(np.abs(f_new - f_old) / np.abs(f_old))),
                       "lbfgs_max_rel_weight_change": max(
                           float(((p_new[k] - p_old[k]).flatten(1).norm(dim=1) / p_old[k].flatten(1).norm(dim=1)).max())
                           for k in p_old)}
                result["runs"].append(run)
                print(json.dumps(run))
    result["load_after"] = os.getloadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
