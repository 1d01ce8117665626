"""Does ``torch.compile`` pay for the trainer's step at E1's shapes on this CPU? (issue 20)

Times one SGD step of ``nrc``'s own training code (the minibatch gather, ``nrc.models.forward``,
the cross-entropy, autograd and ``nrc.train``'s fused optimiser update), at the full profile's E1
shapes, three ways, interleaved within every repeat so that the host's load hits all alike:

* ``eager``: as ``nrc.train`` runs it;
* ``compiled``: the forward and the loss through ``torch.compile`` (inductor generates C++ kernels
  that fuse the activations and the loss around the extern ``bmm`` calls; AOTAutograd compiles the
  backward the same way); the optimiser update stays eager, one fused pass already;
* ``matmuls``: the step's matrix products alone (``bench_matmul_ceiling.matmul_step``), the ceiling.

The first compiled call (tracing and C++ compilation) is timed apart: a notebook would pay it once
per kernel and per shape. Compilation is redone for each thread count.

Usage::

    python benchmarks/bench_compile.py                       # into runs/bench/compile.{json,md}
    python benchmarks/bench_compile.py --update-committed    # and refresh benchmarks/compile.{json,md}
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMS = ("eager", "compiled", "matmuls")


def sweep_steps(profile: Path = HERE.parent / "profiles" / "full.yaml") -> int:
    """SGD steps of one of the full profile's E1 sweeps: epochs x (training images // batch)."""
    import yaml

    e1 = yaml.safe_load(profile.read_text())["notebooks"]["e1_rank_vs_weight_decay"]
    return int(e1["epochs"]) * (int(e1["per_class"]) * int(e1["widths"][-1]) // int(e1["batch_size"]))


def step_closures(M: int, widths: list[int], batch: int, samples: int):
    """``{form: closure}`` doing one step each, and a closure that makes the compiled step's first call."""
    import torch

    import nrc
    from bench_matmul_ceiling import matmul_step

    T = importlib.import_module("nrc.train")
    arch = nrc.Architecture(tuple(widths))
    data = nrc.make_gaussian_mixture(num_classes=widths[-1], dim=widths[0], per_class=samples // widths[-1],
                                     spread=1.0, seed=0)
    x, y = data.x_train, data.y_train
    N = x.shape[0]
    perms = torch.stack([torch.randperm(N, generator=T.data_order(m)) for m in range(M)])
    wds, lrs = [1e-4 * (1 + m) for m in range(M)], [0.05] * M

    def loss_of(params, xb, yb):
        return T.member_losses(nrc.forward(arch, params, xb), yb, "ce").mean(1).sum()

    compiled_loss = torch.compile(loss_of)

    def trainer_step(loss_fn):
        params = {k: p.contiguous().requires_grad_(True) for k, p in nrc.init_params(arch, range(M)).items()}
        plist = list(params.values())
        bufs = [torch.zeros_like(p) for p in plist]
        xbuf, ybuf = torch.empty(M, batch, x.shape[1]), torch.empty(M, batch, dtype=y.dtype)
        state = {"step": 0, "cache": {}}

        def step():
            b = state["step"] % (N // batch)
            idx = perms[:, b * batch:(b + 1) * batch]
            xb, yb = T._take(x, idx, False, xbuf), T._take(y, idx, False, ybuf)
            grads = torch.autograd.grad(loss_fn(params, xb, yb), plist)
            with torch.no_grad():
                T._sgd_update(plist, list(grads), bufs, [True] * len(plist), wds, lrs, 0.9,
                              first=state["step"] == 0, cache=state["cache"])
            state["step"] += 1
        return step

    return {"eager": trainer_step(loss_of), "compiled": trainer_step(compiled_loss),
            "matmuls": matmul_step(M, widths, batch)}


def measure(M, widths, batch, samples, threads, repeats, steps) -> list[dict]:
    import torch

    rows = []
    for t in threads:
        torch.set_num_threads(t)
        torch._dynamo.reset()  # compile afresh for this thread count
        forms = step_closures(M, widths, batch, samples)
        t0 = time.perf_counter()
        forms["compiled"]()
        first_call = time.perf_counter() - t0
        for f in forms.values():
            f(), f()
        times = {name: [] for name in forms}
        for _ in range(repeats):
            for name, f in forms.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    f()
                times[name].append((time.perf_counter() - t0) / steps * 1e3)
        rows.append({"threads": t, "first_compiled_call_s": first_call,
                     **{f"{name}_ms": v for name, v in times.items()}})
        print(f"threads={t}: first compiled call {first_call:.1f} s; median ms per step "
              + ", ".join(f"{name} {statistics.median(v):.1f}" for name, v in times.items()), flush=True)
    return rows


def table(report: dict) -> str:
    """The record as a Markdown fragment (included by book/performance.md)."""
    env = report["environment"]
    lines = [f"Measured {env['time']} on {env['device']}, torch {env['versions'].get('torch')}, commit "
             f"`{str(env['commit'])[:10]}`: {report['members']} stacked members, widths "
             f"{'-'.join(str(w) for w in report['widths'])}, batch {report['batch']}; {report['repeats']} "
             f"interleaved repeats of {report['steps']} steps per form. Command: `{report['command']}`.", "",
             "| threads | eager ms per step | compiled ms per step | compiled / eager | matmuls alone ms "
             "| first compiled call |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        med = {f: statistics.median(r[f"{f}_ms"]) for f in FORMS}
        lines.append(f"| {r['threads']} | {med['eager']:.1f} | {med['compiled']:.1f} | "
                     f"{med['compiled'] / med['eager']:.2f} | {med['matmuls']:.1f} | "
                     f"{r['first_compiled_call_s']:.0f} s |")
    steps = report["sweep_steps"]
    net = "; ".join(
        f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}: "
        f"{r['first_compiled_call_s'] + steps * (statistics.median(r['compiled_ms']) - statistics.median(r['eager_ms'])) / 1e3:+.0f} s"
        for r in report["rows"])
    return "\n".join(lines) + (f"\n\nMedians over the repeats. Compiling one of the full profile's E1 sweeps "
                               f"({steps} steps) would change its training time by, first call included: {net}.\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=21)
    p.add_argument("--widths", default="784,256,256,256,10")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--samples", type=int, default=5120)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--steps", type=int, default=10, help="steps per timing")
    p.add_argument("--out", type=Path, default=Path("runs/bench/compile.json"))
    p.add_argument("--update-committed", action="store_true",
                   help="also refresh the committed benchmarks/compile.json/.md (book/performance.md)")
    args = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(args)
    try:
        widths = [int(v) for v in a.widths.split(",")]
        threads = [int(v) for v in a.threads.split(",")]
        if len(widths) < 2 or min(widths + threads) < 1 or min(a.members, a.batch, a.repeats, a.steps) < 1 \
                or a.samples < a.batch:
            raise ValueError
    except ValueError:
        print("bench_compile: --widths and --threads take comma-separated integers >= 1; --members, --batch, "
              "--repeats and --steps integers >= 1; --samples at least --batch", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    import nrc

    env = nrc.environment()
    rows = measure(a.members, widths, a.batch, a.samples, threads, a.repeats, a.steps)
    report = {"environment": env, "command": " ".join(["python benchmarks/bench_compile.py"] + args),
              "members": a.members, "widths": widths, "batch": a.batch, "samples": a.samples,
              "repeats": a.repeats, "steps": a.steps, "sweep_steps": sweep_steps(), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2, default=str))
    a.out.with_suffix(".md").write_text(table(report))
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")
    if a.update_committed:
        for suffix in (".json", ".md"):
            shutil.copyfile(a.out.with_suffix(suffix), HERE / f"compile{suffix}")
        print(f"refreshed the committed {HERE / 'compile.json'} and {HERE / 'compile.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
