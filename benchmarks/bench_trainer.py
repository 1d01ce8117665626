"""Side-by-side timings: nrc's stacked sweep trainer vs a plain loop of nn.Modules, and more.

Every ratio is measured in one run on one device; nothing is typed in. Usage:

    python benchmarks/bench_trainer.py                      # CPU-sized defaults
    python benchmarks/bench_trainer.py --device cuda --members 16,64,256 --width 512 --depth 4

Measures
  1. stacked trainer (nrc.train) vs a loop of independent nn.Module + torch.optim.SGD models,
     same MLP, same number of SGD steps, same batch size per member;
  2. stacked trainer vs a bare batched-matmul step with foreach SGD (the kernel-level ceiling);
  3. float64 singular values: nrc.svdvals vs default torch.linalg.svdvals on the same device;
  4. NC1 of stacked features: nrc.nc1 (K x K algebra) vs the D x D pseudo-inverse route.
Results are printed and written as JSON (--out).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import nrc


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeat=1):
    fn()  # warm-up
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / repeat


def bench_training(M, widths, n, batch, steps, device):
    K = widths[-1]
    data = nrc.make_gaussian_mixture(num_classes=K, dim=widths[0], per_class=n // K, spread=1.0, seed=0)
    data = data.to(device)
    arch = nrc.Architecture(tuple(widths))
    epochs = max(1, steps // (data.n_train // batch))
    config = nrc.TrainConfig(epochs=epochs, batch_size=batch, lr=0.05)
    members = [{"weight_decay": 1e-4 * (1 + i), "seed": i} for i in range(M)]
    real_steps = epochs * (data.n_train // batch)

    def stacked():
        nrc.train(arch, data, members, config, device=device, progress=False)

    def loop():
        for m in members:
            model = nrc.to_module(arch, nrc.init_params(arch, [m["seed"]], device=device), 0)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=m["weight_decay"])
            gen = torch.Generator().manual_seed(m["seed"])
            for _ in range(epochs):
                perm = torch.randperm(data.n_train, generator=gen).to(device)
                for b in range(data.n_train // batch):
                    idx = perm[b * batch:(b + 1) * batch]
                    loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

    def bare():
        # batched matmuls + foreach SGD: no validation, no schedule, no divergence bookkeeping
        params = nrc.init_params(arch, range(M), device=device)
        ps = [p.requires_grad_(True) for p in params.values()]
        bufs = [torch.zeros_like(p) for p in ps]
        wd = torch.tensor([m["weight_decay"] for m in members], device=device).view(M, 1, 1)
        for _ in range(real_steps):
            idx = torch.randint(data.n_train, (M, batch), device=device)
            x, y = data.x_train[idx], data.y_train[idx]
            h = x
            for i, p in enumerate(ps):
                h = torch.bmm(h, p.transpose(1, 2))
                if i < len(ps) - 1:
                    h = torch.relu(h)
            loss = torch.nn.functional.cross_entropy(h.reshape(M * batch, K), y.reshape(-1)) * M
            grads = torch.autograd.grad(loss, ps)
            with torch.no_grad():
                grads = [g + wd * p for g, p in zip(grads, ps)]
                torch._foreach_mul_(bufs, 0.9)
                torch._foreach_add_(bufs, grads)
                torch._foreach_add_(ps, bufs, alpha=-0.05)

    t_stacked = _time(stacked, device)
    t_loop = _time(loop, device)
    t_bare = _time(bare, device)
    return {"M": M, "steps": real_steps, "stacked_s": t_stacked, "loop_s": t_loop, "bare_s": t_bare,
            "speedup_vs_loop": t_loop / t_stacked, "fraction_of_bare": t_bare / t_stacked,
            "model_steps_per_s": M * real_steps / t_stacked}


def bench_svd(count, size, device):
    W = torch.randn(count, size, size, dtype=torch.float64, device=device)
    t_nrc = _time(lambda: nrc.svdvals(W), device)
    t_default = _time(lambda: torch.linalg.svdvals(W), device)
    err = float(abs(torch.as_tensor(nrc.svdvals(W)) - torch.linalg.svdvals(W).cpu()).max())
    return {"matrices": count, "size": size, "nrc_s": t_nrc, "torch_default_s": t_default,
            "time_fraction": t_nrc / t_default, "max_abs_difference": err}


def bench_nc1(M, N, D, K, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    labels = torch.randint(K, (N,), generator=g).to(device)
    Z = (torch.randn(M, N, D, generator=g) + 3 * torch.randn(K, D, generator=g)[labels.cpu()]).to(device)

    def pinv_route():
        Zd = Z.double()
        out = []
        for m in range(M):
            means, _ = nrc.class_means(Zd[m], labels, K)
            R = Zd[m] - means[labels]
            Sw = R.T @ R / N
            C = means - Zd[m].mean(0)
            out.append(torch.trace(Sw @ torch.linalg.pinv(C.T @ C / K, rtol=1e-10)) / K)
        return torch.stack(out)

    t_nrc = _time(lambda: nrc.nc1(Z, labels, K), device)
    t_pinv = _time(pinv_route, device)
    rel = float(((nrc.nc1(Z, labels, K) - pinv_route()).abs() / pinv_route().abs()).max())
    return {"members": M, "N": N, "D": D, "K": K, "nrc_s": t_nrc, "pinv_s": t_pinv,
            "speedup": t_pinv / t_nrc, "max_rel_difference": rel}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--members", default="4,16", help="comma-separated M values")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3, help="hidden layers")
    p.add_argument("--input-dim", type=int, default=784)
    p.add_argument("--samples", type=int, default=2560)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--svd", default="16,256", help="count,size of float64 matrices")
    p.add_argument("--nc1", default="4,6000,256,10", help="members,N,D,K")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    a = p.parse_args(argv)
    device = torch.device(a.device)
    widths = [a.input_dim] + [a.width] * a.depth + [10]
    report = {"environment": nrc.environment(), "device": str(device), "widths": widths, "training": []}
    for M in [int(v) for v in a.members.split(",")]:
        r = bench_training(M, widths, a.samples, a.batch, a.steps, device)
        report["training"].append(r)
        print(f"M={M:4d}: stacked {r['stacked_s']:.2f} s, loop {r['loop_s']:.2f} s -> {r['speedup_vs_loop']:.1f}x "
              f"faster; bare batched step {r['bare_s']:.2f} s -> trainer runs at {r['fraction_of_bare']:.2f} of it",
              flush=True)
    count, size = (int(v) for v in a.svd.split(","))
    report["svd"] = s = bench_svd(count, size, device)
    print(f"svdvals float64 {count}x{size}^2: nrc {s['nrc_s']*1e3:.1f} ms vs torch default "
          f"{s['torch_default_s']*1e3:.1f} ms -> {s['time_fraction']:.2f} of its time (max diff {s['max_abs_difference']:.1e})")
    M, N, D, K = (int(v) for v in a.nc1.split(","))
    report["nc1"] = c = bench_nc1(M, N, D, K, device)
    print(f"NC1 {M} members x {N} x {D}: nrc {c['nrc_s']*1e3:.1f} ms vs D x D pinv {c['pinv_s']*1e3:.1f} ms "
          f"-> {c['speedup']:.1f}x (max rel diff {c['max_rel_difference']:.1e})")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
