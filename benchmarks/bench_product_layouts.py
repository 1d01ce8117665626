"""Each matrix product of one SGD step at E1's shapes, in the trainer's layout, its former one and the ceiling's.

``nrc.models.forward`` computes each layer as ``(W u^T)^T`` with row-major weights: activations
flow feature-major (members x features x batch) and autograd forms the weight gradient as
``g^T u``, row-major like the weights. Until issue 20 it computed ``u W^T`` with the weights stored
column-major (the layout of the gradient ``u^T g`` that autograd then returned).
``bench_matmul_ceiling.py`` times the products with row-major weights as ``u W^T`` and
``g^T u``. This script times every product of a step all three ways, per layer:

* forward: ``W z^T`` (trainer), ``u W^T`` with W column-major (before), ``u W^T`` row-major (ceiling);
* weight gradient: ``g^T u`` from feature-major operands (trainer), ``u^T g`` (before),
  ``g^T u`` from batch-major operands (ceiling);
* input gradient: ``W^T g^T`` (trainer), ``g W`` with W column-major (before) or row-major (ceiling).

Each timing is the best of 3 repeats of 20 calls with preallocated outputs.

Usage::

    python benchmarks/bench_product_layouts.py --threads 1,2
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


FORMS = ("trainer", "before", "ceiling")


def best_ms(f, n: int = 20, repeats: int = 3) -> float:
    f()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e3


def layer_products(M: int, batch: int, d_in: int, d_out: int, first: bool) -> dict[str, float]:
    """Milliseconds of each form of the layer's products (no input gradient for the first layer)."""
    g = torch.Generator().manual_seed(0)
    u, grad = torch.randn(M, batch, d_in, generator=g), torch.randn(M, batch, d_out, generator=g)
    # the trainer's operands: the first layer reads the gathered minibatch transposed, later layers
    # the previous layer's feature-major output; output gradients arrive feature-major
    u_fm = u.transpose(1, 2) if first else u.transpose(1, 2).contiguous()
    grad_fm = grad.transpose(1, 2).contiguous()
    w_row = torch.randn(M, d_out, d_in, generator=g)
    w_col = w_row.transpose(1, 2).contiguous().transpose(1, 2)
    fwd, fwd_fm = torch.empty(M, batch, d_out), torch.empty(M, d_out, batch)
    gin, gin_fm = torch.empty(M, batch, d_in), torch.empty(M, d_in, batch)
    wg_in_out, wg_out_in = torch.empty(M, d_in, d_out), torch.empty(M, d_out, d_in)
    ms = {
        "forward W z^T (trainer)": best_ms(lambda: torch.bmm(w_row, u_fm, out=fwd_fm)),
        "forward u W^T, W column-major (before)": best_ms(lambda: torch.bmm(u, w_col.transpose(1, 2), out=fwd)),
        "forward u W^T, W row-major (ceiling)": best_ms(lambda: torch.bmm(u, w_row.transpose(1, 2), out=fwd)),
        "weight grad g^T u, feature-major (trainer)": best_ms(lambda: torch.bmm(grad_fm, u_fm.transpose(1, 2), out=wg_out_in)),
        "weight grad u^T g (before)": best_ms(lambda: torch.bmm(u.transpose(1, 2), grad, out=wg_in_out)),
        "weight grad g^T u (ceiling)": best_ms(lambda: torch.bmm(grad.transpose(1, 2), u, out=wg_out_in)),
    }
    if not first:
        ms.update({
            "input grad W^T g^T (trainer)": best_ms(lambda: torch.bmm(w_row.transpose(1, 2), grad_fm, out=gin_fm)),
            "input grad g W, W column-major (before)": best_ms(lambda: torch.bmm(grad, w_col, out=gin)),
            "input grad g W, W row-major (ceiling)": best_ms(lambda: torch.bmm(grad, w_row, out=gin)),
        })
    return ms


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
        totals = dict.fromkeys(FORMS, 0.0)
        for layer, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            ms = layer_products(a.members, a.batch, d_in, d_out, first=layer == 1)
            print(f"threads={t} layer {layer} ({d_in} -> {d_out}): "
                  + "; ".join(f"{k} {v:.2f} ms" for k, v in ms.items()))
            for k, v in ms.items():
                totals[next(f for f in FORMS if f"({f})" in k)] += v
        print(f"threads={t} one step's products: " + ", ".join(f"{f} {v:.1f} ms" for f, v in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
