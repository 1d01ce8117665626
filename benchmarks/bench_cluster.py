"""Issue 18: the E1 MNIST sweep trained three ways on this machine -- one local process, Ray with two
single-thread workers, submitit's local executor with two jobs -- timed, and checked to give the
same numbers.

The sweep: 21 members (weight decays {0, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2} x seeds {0, 1, 2}),
MLP 784-256-256-256-10 without biases, ReLU, 1000 MNIST images per class, and the training
configuration of ``profiles/full.yaml``'s E1 (cross-entropy, SGD momentum 0.9, lr 0.05, cosine,
batch 128) -- with ``--epochs`` epochs (the profile has 50).

Every way starts from an empty cache (a temporary folder), so each trains all 21 members. Times
are wall seconds around ``ResultStore.train``; the engines' start-up (``ray.init``) is timed
separately. Writes ``benchmarks/cluster.json`` and the table ``benchmarks/cluster.md``.

Run (``NRC_DATA`` must hold MNIST)::

    nice -n 10 python benchmarks/bench_cluster.py --epochs 10
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _setup(epochs: int):
    import nrc_companion.setups as setups

    data = setups.load_data("mnist", per_class=1000, test_per_class=None)
    arch = setups.architecture(data, [256, 256, 256], activation="relu", bias=False)
    config = setups.train_config("ce", epochs=epochs, batch_size=128, lr=0.05, momentum=0.9)
    members = setups.members([0.0, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], [0, 1, 2])
    return data, arch, config, members


def _flops(arch, n_train: int, members: int, epochs: int) -> float:
    """Training FLOPs: 6 per weight per sample (forward 2, backward 4), the standard estimate."""
    weights = sum(a * b for a, b in zip(arch.widths[:-1], arch.widths[1:]))
    return 6.0 * weights * n_train * members * epochs


def run(epochs: int, threads: int) -> dict:
    import torch

    import nrc
    from nrc.executors import Executor

    data, arch, config, members = _setup(epochs)
    out = {"epochs": epochs, "profile_epochs": 50, "members": len(members), "widths": list(arch.widths),
           "n_train": int(data.n_train), "cpu_count": os.cpu_count(), "local_threads": threads,
           "load_before": round(os.getloadavg()[0], 2), "ways": {}}
    out["flops"] = _flops(arch, data.n_train, len(members), epochs)
    results = {}

    def timed(name, executor, startup=0.0):
        root = tempfile.mkdtemp(prefix=f"nrc-bench-{name}-")
        t0 = time.perf_counter()
        sweep = nrc.ResultStore(root).train(arch, data, members, config, progress=False, executor=executor)
        wall = time.perf_counter() - t0
        results[name] = sweep
        out["ways"][name] = {"train_wall_s": round(wall, 2), "startup_s": round(startup, 2),
                             "total_s": round(wall + startup, 2),
                             "gflops_per_s": round(out["flops"] / wall / 1e9, 1),
                             "load_after": round(os.getloadavg()[0], 2)}
        print(f"{name}: {wall:.1f} s (+{startup:.1f} s start-up)", flush=True)

    torch.set_num_threads(threads)
    timed("local", "local")

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    startup = time.perf_counter() - t0
    timed("ray", Executor(kind="ray", workers=2, cpus_per_shard=1), startup)
    ray.shutdown()

    timed("submitit_local", Executor(kind="slurm", slurm_cluster="local", workers=2, cpus_per_shard=1,
                                     log_folder=tempfile.mkdtemp(prefix="nrc-bench-submitit-")))

    ref = results["local"]
    for name, sweep in results.items():
        diffs = [float((sweep.params[k] - ref.params[k]).abs().max()) for k in ref.params]
        out["ways"][name]["max_abs_diff_vs_local"] = max(diffs)
        out["ways"][name]["bitwise_equal_to_local"] = all(bool(torch.equal(sweep.params[k], ref.params[k]))
                                                          for k in ref.params)
        out["ways"][name]["ratio_to_local"] = round(out["ways"][name]["train_wall_s"]
                                                    / out["ways"]["local"]["train_wall_s"], 2)
    return out


def table(res: dict) -> str:
    head = (f"E1 MNIST sweep: {res['members']} members, widths {res['widths']}, {res['n_train']} images, "
            f"{res['epochs']} epochs (the full profile has {res['profile_epochs']}), on {res['cpu_count']} cores "
            f"(load average {res['load_before']} before). {res['flops'] / 1e12:.2f} TFLOP of training.\n\n")
    rows = ["| way | training wall s | engine start-up s | ratio to local | GFLOP/s | same numbers as local |",
            "| --- | ---: | ---: | ---: | ---: | --- |"]
    labels = {"local": f"local, one process ({res['local_threads']} threads)",
              "ray": "Ray, 2 single-thread workers", "submitit_local": "submitit local executor, 2 jobs"}
    for name, w in res["ways"].items():
        same = "bitwise" if w["bitwise_equal_to_local"] else f"max abs diff {w['max_abs_diff_vs_local']:.1e}"
        rows.append(f"| {labels[name]} | {w['train_wall_s']:.1f} | {w['startup_s']:.1f} | {w['ratio_to_local']:.2f} "
                    f"| {w['gflops_per_s']:.0f} | {same} |")
    return head + "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------------------------
# the paper profile on paper: FLOPs, shards, wall time on 8 and 64 GPUs

#: NVIDIA H200 SXM published peaks (dense, no sparsity), FLOP/s: FP32 on CUDA cores (PyTorch's
#: default for float32 matmuls: TF32 is off) and FP64 on tensor cores (cuBLAS DGEMM on Hopper).
H200_PEAK = {"fp32": 67e12, "fp64": 67e12}
#: Planning assumption: share of peak a stacked bmm of 512-wide layers at batch 128 reaches.
EFFICIENCY = 0.3
#: torch's L-BFGS with a strong-Wolfe line search: function evaluations per iteration (planning value).
EVALS_PER_LBFGS_STEP = 1.2
#: Planning assumption: launch and Python overhead of one SGD step or one L-BFGS function evaluation
#: on a GPU (~30-60 kernel launches), a floor that small shards cannot go below.
STEP_OVERHEAD_S = 5e-4
GRID = ("datasets", "losses", "activations", "weight_decays", "seeds", "spreads", "num_classes", "refine_steps")


def _paper_members(root: Path) -> dict:
    """Every distinct member the paper profile trains (deduplicated as the cache does), with its FLOPs.

    Counted from the profile over the notebooks' defaults: the product of the grid lists (data sets,
    losses, activations, weight decays, seeds, spreads, class counts, refinement budgets) of each
    notebook's main sweep, SGD epochs and the refinement. Not counted: analysis, E4's descent paths,
    E5's forecast, T7's extra GD/SGD runs, T5's variants (bias, spread 0) -- all smaller.
    """
    import itertools

    from nrc_companion.profiles import load_profile, notebook_parameters

    profile = load_profile(root / "profiles" / "paper.yaml", root / "notebooks")
    members = {}
    for name, over in profile.notebooks.items():
        v = {k: p.default for k, p in notebook_parameters(root / "notebooks" / f"{name}.ipynb").items()}
        v.update(over)
        if "epochs" not in v:
            continue
        axes = {k: (v[k] if isinstance(v[k], list) else [v[k]]) for k in GRID if k in v}
        for k, single in (("datasets", "dataset"), ("losses", "loss"), ("activations", "activation"),
                          ("weight_decays", "weight_decay"), ("seeds", "seed"), ("spreads", "spread")):
            if k not in axes and single in v:
                axes[k] = [v[single]]
        for combo in itertools.product(*axes.values()):
            m = dict(zip(axes, combo))
            ds = m.get("datasets", "synthetic")
            K = 10 if ds in ("mnist", "fashion-mnist") else int(m.get("num_classes", v.get("num_classes", 10)))
            d_in = 784 if ds in ("mnist", "fashion-mnist") else int(v.get("dim", 10))
            widths = list(v["widths"]) if "widths" in v else [d_in, *v["hidden"], K]
            weights = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
            if name.startswith("e3"):  # residual blocks: a V per W between equal hidden widths
                weights += sum(a * b for a, b in zip(widths[1:-2], widths[2:-1]))
            n = int(v["per_class"]) * K
            refine = int(m.get("refine_steps", 0) or 0)
            key = json.dumps([ds, widths, n, int(v["epochs"]), refine, sorted(m.items()), name.startswith("e3")],
                             default=str)
            steps = int(v["epochs"]) * (n // min(int(v.get("batch_size", 128)), n))
            members.setdefault(key, {"notebooks": [], "sgd": 6.0 * weights * n * int(v["epochs"]), "steps": steps,
                                     "evals": EVALS_PER_LBFGS_STEP * refine,
                                     "refine": EVALS_PER_LBFGS_STEP * 6.0 * weights * n * refine,
                                     "sweep": json.dumps([ds, widths, n, int(v["epochs"]), refine,
                                                          m.get("losses"), m.get("activations")], default=str)})
            members[key]["notebooks"].append(name)
    return members


def paper_plan(root: Path, gpus=(1, 8, 64), max_members=32) -> dict:
    """FLOPs of the paper profile and its wall time on ``gpus`` H200s (longest-processing-time
    scheduling of the shards; each sweep cut into ``max(min(G, n), ceil(n / max_members))`` shards,
    as :func:`nrc.executors.plan_shards` cuts it with ``G`` slots)."""
    import math

    members = _paper_members(root)
    sweeps = {}
    for m in members.values():
        sweeps.setdefault(m["sweep"], []).append(m)
    sgd = sum(m["sgd"] for m in members.values())
    refine = sum(m["refine"] for m in members.values())
    seconds = lambda m: (m["sgd"] / H200_PEAK["fp32"] + m["refine"] / H200_PEAK["fp64"]) / EFFICIENCY  # noqa: E731
    # a shard's SGD steps and L-BFGS evaluations run once for all its members (both are batched over the stack)
    floor = lambda ms: STEP_OVERHEAD_S * (ms[0]["steps"] + max(m["evals"] for m in ms))  # noqa: E731
    out = {"members": len(members), "sweeps": len(sweeps), "sgd_flop": sgd, "refine_flop": refine,
           "efficiency": EFFICIENCY, "peak": H200_PEAK, "step_overhead_s": STEP_OVERHEAD_S, "max_members_per_shard": max_members, "by_gpus": {}}
    for G in gpus:
        shards = []
        for ms in sweeps.values():
            n = len(ms)
            k = max(min(G, n), math.ceil(n / max_members))
            base, extra = divmod(n, k)
            i = 0
            for j in range(k):
                size = base + (1 if j < extra else 0)
                part = ms[i:i + size]
                shards.append(sum(seconds(m) for m in part) + floor(part))
                i += size
        load = [0.0] * G
        for t in sorted(shards, reverse=True):
            load[load.index(min(load))] += t
        out["by_gpus"][G] = {"shards": len(shards), "shards_per_gpu": round(len(shards) / G, 1),
                             "wall_s": round(max(load), 1), "longest_shard_s": round(max(shards), 1),
                             "ideal_s": round(sum(shards) / G, 1)}
    return out


def plan_table(plan: dict, cpu_gflops: float | None = None) -> str:
    tf = (plan["sgd_flop"] + plan["refine_flop"]) / 1e12
    text = (f"\nThe `paper` profile on paper: {plan['members']} distinct members in {plan['sweeps']} sweeps, "
            f"{plan['sgd_flop'] / 1e15:.2f} PFLOP of SGD (float32) + {plan['refine_flop'] / 1e15:.2f} PFLOP of "
            f"L-BFGS refinement (float64) = {tf / 1e3:.2f} PFLOP. Wall times assume {plan['efficiency']:.0%} of the "
            f"H200's published peak ({plan['peak']['fp32'] / 1e12:.0f} TFLOP/s FP32, {plan['peak']['fp64'] / 1e12:.0f} "
            f"TFLOP/s FP64 tensor core) plus {plan['step_overhead_s'] * 1e3:g} ms of launch overhead per SGD step and "
            f"per L-BFGS evaluation, shards of at most {plan['max_members_per_shard']} members, one shard per GPU "
            "at a time.")
    if cpu_gflops:
        text += (f" For scale: at the {cpu_gflops:.0f} GFLOP/s the local way measured above (on the shared, loaded "
                 f"machine) it would take {tf * 1e3 / cpu_gflops / 86400:.0f} days.")
    rows = ["| GPUs | shards | shards per GPU | longest shard s | expected wall s | (h) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for G, r in plan["by_gpus"].items():
        rows.append(f"| {G} | {r['shards']} | {r['shards_per_gpu']} | {r['longest_shard_s']:.0f} | {r['wall_s']:.0f} "
                    f"| {r['wall_s'] / 3600:.2f} |")
    return text + "\n\n" + "\n".join(rows) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="SGD epochs (the full profile has 50; default 10)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the local way (default 2)")
    p.add_argument("--out", type=Path, default=HERE / "cluster.json")
    p.add_argument("--plan-only", action="store_true",
                   help="only recompute the paper profile's plan (FLOPs, GPUs) into an existing --out")
    a = p.parse_args(argv)
    if a.epochs < 1 or a.threads < 1:
        print("bench_cluster: --epochs and --threads must be integers >= 1", file=sys.stderr)
        return 2
    res = json.loads(a.out.read_text()) if a.plan_only else run(a.epochs, a.threads)
    res["paper_plan"] = paper_plan(HERE.parent)
    gflops = res.get("ways", {}).get("local", {}).get("gflops_per_s")
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    text = (table(res) if "ways" in res else "") + plan_table(res["paper_plan"], gflops)
    a.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
