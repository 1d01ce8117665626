"""The stacked trainer's achieved GFLOP/s against the same matrix products alone, in one run.

For an MLP of the given widths stacked over M members, one SGD step multiplies, per layer, the
batch by the weights (forward), the output gradient by the weights (input gradient; not for the
first layer, whose input needs none) and the output gradient by the layer input (weight gradient).
This script times

* ``trainer``: :func:`nrc.train` (forward, autograd, loss, SGD with momentum and per-member weight
  decay, cosine schedule, minibatch gathering, divergence bookkeeping) for whole epochs;
* ``matmuls``: exactly those ``torch.bmm`` products at the same shapes, as many times, with
  preallocated outputs (``out=``), no autograd, no optimizer, no data movement;

interleaved (trainer, matmuls, trainer, matmuls, ...) so that load from other processes hits
both alike, for each thread count asked for. Besides wall time, each part's process CPU time is
recorded: on a machine shared with other jobs the CPU-time ratio is the steadier of the two. Both are credited with the same FLOP count, so the
ratio of GFLOP/s is the ratio of times. The machine's load average is recorded before and after.

Usage (the numbers in book/performance.md come from the first form)::

    python benchmarks/bench_matmul_ceiling.py                        # full-profile E1 shapes, into runs/bench/
    python benchmarks/bench_matmul_ceiling.py --update-committed     # and refresh benchmarks/matmul_ceiling.*
    python benchmarks/bench_matmul_ceiling.py --threads 1,2 --repeats 5 --out /tmp/b.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import nrc


def step_flops(M: int, widths: list[int], batch: int) -> int:
    """FLOPs of the matrix products of one SGD step of M stacked members (2 per multiply-add)."""
    total = 0
    for layer, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        mac = M * batch * d_in * d_out
        total += 2 * mac            # forward
        total += 2 * mac            # weight gradient
        if layer > 1:
            total += 2 * mac        # input gradient
    return total


def matmul_step(M, widths, batch, dtype=torch.float32):
    """A closure doing one step's bmm products (forward + backward) at the trainer's shapes."""
    g = torch.Generator().manual_seed(0)
    Ws = [torch.randn(M, o, i, generator=g, dtype=dtype) / i ** 0.5 for i, o in zip(widths[:-1], widths[1:])]
    acts = [torch.randn(M, batch, d, generator=g, dtype=dtype) for d in widths]   # layer inputs/outputs
    grads = [torch.randn(M, batch, d, generator=g, dtype=dtype) for d in widths]  # output gradients
    wgrads = [torch.empty_like(W) for W in Ws]

    def step():
        for l, W in enumerate(Ws):
            torch.bmm(acts[l], W.transpose(1, 2), out=acts[l + 1])           # (M,B,in) x (M,in,out)
        for l in range(len(Ws) - 1, -1, -1):
            torch.bmm(grads[l + 1].transpose(1, 2), acts[l], out=wgrads[l])  # (M,out,B) x (M,B,in)
            if l > 0:
                torch.bmm(grads[l + 1], Ws[l], out=grads[l])                 # (M,B,out) x (M,out,in)
    return step


def step_parts(M, widths, batch):
    """Closures doing one step's work outside the matrix products, at the trainer's shapes and with its
    code: the optimiser update (``nrc.train._sgd_update``: momentum SGD with per-member weight decay)
    and the activations' forward and backward (ReLU and its mask, every hidden layer)."""
    import importlib

    T = importlib.import_module("nrc.train")
    arch = nrc.Architecture(tuple(widths))
    init = nrc.init_params(arch, range(M))
    # the trainer's layout: weights and their gradients row-major per member (see nrc.models._linear)
    params = [v.contiguous() for v in init.values()]
    grads = [torch.randn_like(v) for v in params]
    bufs = [torch.zeros_like(v) for v in params]
    wds, lrs, cache = [1e-4 * (1 + i) for i in range(M)], [0.05] * M, {}
    hidden = [torch.randn(M, w, batch) for w in widths[1:-1]]  # feature-major, as the trainer's

    def sgd():
        T._sgd_update(params, grads, bufs, [True] * len(params), wds, lrs, 0.9, first=False, cache=cache)

    def activations():
        for a in hidden:
            torch.ops.aten.threshold_backward(a, torch.relu(a), 0)
    return {"sgd_update": sgd, "activations": activations}


def breakdown(M, widths, batch, threads, repeats, steps=10):
    """Seconds per step of the matrix products, the optimiser update and the activations, interleaved
    per thread count: what the trainer spends outside the products, and how each part scales."""
    parts = {"matmuls": matmul_step(M, widths, batch), **step_parts(M, widths, batch)}
    rows = []
    for r in range(repeats):
        for t in threads:
            torch.set_num_threads(t)
            for name, f in parts.items():
                f()
                t0 = time.perf_counter()
                for _ in range(steps):
                    f()
                rows.append({"threads": t, "repeat": r, "part": name, "ms_per_step": (time.perf_counter() - t0) / steps * 1e3,
                             "load": load_average()})
    summary = {}
    for t in threads:
        med = {name: sorted(x["ms_per_step"] for x in rows if x["threads"] == t and x["part"] == name)[repeats // 2]
               for name in parts}
        summary[str(t)] = {name: {"ms_per_step": v, "of_matmuls": v / med["matmuls"]} for name, v in med.items()}
    return {"rows": rows, "summary": summary}


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run(M, widths, batch, samples, epochs, threads, repeats):
    K = widths[-1]
    data = nrc.make_gaussian_mixture(num_classes=K, dim=widths[0], per_class=samples // K, spread=1.0, seed=0)
    arch = nrc.Architecture(tuple(widths))
    members = [{"weight_decay": 1e-4 * (1 + i), "seed": i} for i in range(M)]
    config = nrc.TrainConfig(epochs=epochs, batch_size=batch, lr=0.05)
    steps = epochs * (data.n_train // batch)
    flops = step_flops(M, widths, batch) * steps
    mm = matmul_step(M, widths, batch)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        nrc.train(arch, data, members, nrc.TrainConfig(epochs=1, batch_size=batch), progress=False)  # warm-up
        mm()
        for r in range(repeats):
            load0 = load_average()
            t0, c0 = time.perf_counter(), time.process_time()
            nrc.train(arch, data, members, config, progress=False)
            t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                mm()
            t_mm, c_mm = time.perf_counter() - t0, time.process_time() - c0
            row = {"threads": t, "repeat": r, "steps": steps, "trainer_s": t_train, "matmul_s": t_mm,
                   "trainer_cpu_s": c_train, "matmul_cpu_s": c_mm, "cpu_ratio": c_mm / c_train,
                   "trainer_gflops": flops / t_train / 1e9, "matmul_gflops": flops / t_mm / 1e9,
                   "ratio": t_mm / t_train, "load_before": load0, "load_after": load_average()}
            rows.append(row)
            print(f"threads={t} repeat={r}: trainer {row['trainer_gflops']:6.1f} GFLOP/s ({t_train:.2f} s), "
                  f"matmuls alone {row['matmul_gflops']:6.1f} GFLOP/s ({t_mm:.2f} s) -> ratio {row['ratio']:.2f}"
                  f" (CPU-time ratio {row['cpu_ratio']:.2f})  [load {load0:.2f}]", flush=True)
    return rows


def summarize(rows):
    out = {}
    for t in sorted({r["threads"] for r in rows}):
        rs = [r for r in rows if r["threads"] == t]
        ratios = sorted(r["ratio"] for r in rs)
        best = max(rs, key=lambda r: r["trainer_gflops"])
        cpu = sorted(r["cpu_ratio"] for r in rs)
        out[str(t)] = {"median_ratio": ratios[len(ratios) // 2], "median_cpu_ratio": cpu[len(cpu) // 2], "min_ratio": ratios[0], "max_ratio": ratios[-1],
                       "best_trainer_gflops": best["trainer_gflops"],
                       "best_matmul_gflops": max(r["matmul_gflops"] for r in rs),
                       "median_trainer_s": sorted(r["trainer_s"] for r in rs)[len(rs) // 2]}
    return out


def markdown(report) -> str:
    """The measurement as a Markdown fragment (included by book/performance.md)."""
    env = report["environment"]
    loads = [r["load_before"] for r in report["rows"]] + [r["load_after"] for r in report["rows"]]
    lines = [f"Measured {env['time']} on {env['device']}, torch {env['versions'].get('torch')}, commit "
             f"`{str(env['commit'])[:10]}`: {report['members']} stacked members, widths "
             f"{'-'.join(str(w) for w in report['widths'])}, batch {report['batch']}, "
             f"{report['rows'][0]['steps']} SGD steps per timing ({report['step_gflop']:.2f} GFLOP of matrix "
             f"products per step); 1-minute load average between {min(loads):.1f} and {max(loads):.1f} "
             + ("(the machine was otherwise nearly idle)" if max(loads) < 0.75 * report["cpu_count"] + 0.5
               else "(the machine was shared with other jobs: timings are noisy)")
             + f". Command: `{report['command']}`.", "",
             "| threads | trainer GFLOP/s (best) | matmuls alone GFLOP/s (best) | ratio, wall (median, range) "
             "| ratio, CPU time (median) |", "| ---: | ---: | ---: | ---: | ---: |"]
    for t, s in report["summary"].items():
        lines.append(f"| {t} | {s['best_trainer_gflops']:.1f} | {s['best_matmul_gflops']:.1f} | "
                     f"{s['median_ratio']:.2f} ({s['min_ratio']:.2f}-{s['max_ratio']:.2f}) | "
                     f"{s['median_cpu_ratio']:.2f} |")
    if report.get("breakdown"):
        b = report["breakdown"]["summary"]
        names = list(next(iter(b.values())))
        lines += ["", "Per step, median over the repeats (ms, and as a fraction of the matrix products at that thread "
                  "count; `--breakdown`):", "",
                  "| threads | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names)]
        for t, parts in b.items():
            lines.append(f"| {t} | " + " | ".join(f"{parts[n]['ms_per_step']:.1f} ({parts[n]['of_matmuls']:.2f})"
                                                  for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=21, help="stacked members M (default 21: full E1, 7 lambdas x 3 seeds)")
    p.add_argument("--widths", default="784,256,256,256,10", help="comma-separated widths")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--samples", type=int, default=5120, help="training samples (steps/epoch = samples // batch)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("runs/bench/matmul_ceiling.json"),
                   help="JSON written here, with its Markdown table beside it (default under runs/, ignored by git)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the optimiser update and the activations alone per step (where the rest of a step goes)")
    p.add_argument("--update-committed", action="store_true",
                   help="also refresh the committed table benchmarks/matmul_ceiling.json/.md (book/performance.md)")
    a = p.parse_args(argv)
    try:
        widths = [int(v) for v in a.widths.split(",")]
        threads = [int(v) for v in a.threads.split(",")]
        if len(widths) < 2 or min(widths) < 1 or min(threads) < 1:
            raise ValueError
    except ValueError:
        print("bench_matmul_ceiling: --widths and --threads take comma-separated integers >= 1", file=sys.stderr)
        return 2
    for name, v in (("members", a.members), ("batch", a.batch), ("epochs", a.epochs), ("repeats", a.repeats)):
        if v < 1:
            print(f"bench_matmul_ceiling: --{name} must be >= 1, got {v}", file=sys.stderr)
            return 2
    if a.samples < a.batch * widths[-1] // widths[-1]:
        print(f"bench_matmul_ceiling: --samples must be >= --batch ({a.batch}), got {a.samples}", file=sys.stderr)
        return 2
    env = nrc.environment()
    rows = run(a.members, widths, a.batch, a.samples, a.epochs, threads, a.repeats)
    report = {"environment": env, "command": "python " + " ".join(["benchmarks/bench_matmul_ceiling.py"] + sys.argv[1:]),
              "members": a.members, "widths": widths, "batch": a.batch, "samples": a.samples,
              "epochs": a.epochs, "step_gflop": step_flops(a.members, widths, a.batch) / 1e9,
              "cpu_count": os.cpu_count(), "rows": rows, "summary": summarize(rows),
              "breakdown": breakdown(a.members, widths, a.batch, threads, a.repeats) if a.breakdown else None}
    for t, s in report["summary"].items():
        print(f"threads={t}: median trainer/matmul ratio {s['median_ratio']:.2f} "
              f"(range {s['min_ratio']:.2f}-{s['max_ratio']:.2f}; CPU-time ratio {s['median_cpu_ratio']:.2f}); best trainer {s['best_trainer_gflops']:.1f} GFLOP/s, "
              f"best matmuls {s['best_matmul_gflops']:.1f} GFLOP/s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2, default=str))
    a.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")
    if a.update_committed:
        committed = Path(__file__).resolve().parent / "matmul_ceiling.json"
        committed.write_text(json.dumps(report, indent=2, default=str))
        committed.with_suffix(".md").write_text(markdown(report))
        print(f"refreshed the committed {committed} and {committed.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
