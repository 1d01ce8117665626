"""Each matrix product of one SGD step at E1's shapes, in the trainer's layout and in the ceiling's.

``nrc.train`` stores each member's weights column-major (the layout of the gradient that autograd's
``bmm`` backward returns, so parameters, gradients and momentum buffers update in one fused pass),
and autograd forms the weight gradient as ``u^T g`` (in x out). ``bench_matmul_ceiling.py`` times
the products with row-major weights and the weight gradient as ``g^T u`` (out x in). This script
times every product of a step both ways, per layer, so that the layout's share of the gap between
the trainer and the ceiling can be read off (issue 20):

* forward ``u W^T`` with W row-major or column-major;
* weight gradient as ``u^T g`` (the trainer's) or ``g^T u`` (the ceiling's);
* input gradient ``g W`` with W row-major or column-major.

Each timing is the best of 3 repeats of 20 calls with preallocated outputs.

Usage::

    python benchmarks/bench_product_layouts.py --threads 1,2
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def best_ms(f, n: int = 20, repeats: int = 3) -> float:
    f()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e3


def layer_products(M: int, batch: int, d_in: int, d_out: int) -> dict[str, float]:
    """Milliseconds of each form of the layer's three products."""
    g = torch.Generator().manual_seed(0)
    u, grad = torch.randn(M, batch, d_in, generator=g), torch.randn(M, batch, d_out, generator=g)
    w_row = torch.randn(M, d_out, d_in, generator=g)
    w_col = w_row.transpose(1, 2).contiguous().transpose(1, 2)  # the trainer's layout
    fwd, gin = torch.empty(M, batch, d_out), torch.empty(M, batch, d_in)
    wg_in_out, wg_out_in = torch.empty(M, d_in, d_out), torch.empty(M, d_out, d_in)
    return {
        "forward, W column-major (trainer)": best_ms(lambda: torch.bmm(u, w_col.transpose(1, 2), out=fwd)),
        "forward, W row-major (ceiling)": best_ms(lambda: torch.bmm(u, w_row.transpose(1, 2), out=fwd)),
        "weight grad u^T g (trainer)": best_ms(lambda: torch.bmm(u.transpose(1, 2), grad, out=wg_in_out)),
        "weight grad g^T u (ceiling)": best_ms(lambda: torch.bmm(grad.transpose(1, 2), u, out=wg_out_in)),
        "input grad g W, W column-major (trainer)": best_ms(lambda: torch.bmm(grad, w_col, out=gin)),
        "input grad g W, W row-major (ceiling)": best_ms(lambda: torch.bmm(grad, w_row, out=gin)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=21)
    p.add_argument("--widths", default="784,256,256,256,10")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", default="1,2")
    a = p.parse_args(argv)
    try:
        widths = [int(v) for v in a.widths.split(",")]
        threads = [int(v) for v in a.threads.split(",")]
        if len(widths) < 2 or min(widths) < 1 or min(threads) < 1 or a.members < 1 or a.batch < 1:
            raise ValueError
    except ValueError:
        print("bench_product_layouts: --widths and --threads take comma-separated integers >= 1; "
              "--members and --batch integers >= 1", file=sys.stderr)
        return 2
    for t in threads:
        torch.set_num_threads(t)
        totals = {"trainer": 0.0, "ceiling": 0.0}
        for layer, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            ms = layer_products(a.members, a.batch, d_in, d_out)
            if layer == 1:  # the first layer's input needs no gradient
                ms = {k: v for k, v in ms.items() if not k.startswith("input grad")}
            print(f"threads={t} layer {layer} ({d_in} -> {d_out}): "
                  + "; ".join(f"{k} {v:.2f} ms" for k, v in ms.items()))
            for k, v in ms.items():
                totals["trainer" if "(trainer)" in k else "ceiling"] += v
        print(f"threads={t} one step's products: trainer's layout {totals['trainer']:.1f} ms, "
              f"ceiling's {totals['ceiling']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
