"""Issue 20: how far the committed ``full`` run is from its arithmetic floor, and what a 720 s run
would need.

For every notebook of the committed run (``book/published/status.json``) that trained members of
a network on MNIST-sized data by SGD (the large sweeps: T2, T8, E1, E3), the FLOPs of the matrix
products of that training are counted from the notebook's parameters in ``profiles/full.yaml``
(forward, weight gradient and input gradient of every linear map -- none for the first, whose
input needs none -- for every SGD step of every member the notebook trained). Dividing by the best
speed of the bare batched products measured at the same shapes with two threads
(``benchmarks/matmul_ceiling.json``, ``bench_matmul_ceiling.py``) gives the time those sweeps
would take at the speed of their matrix products alone: a floor no trainer can go below. The rest
of the run (start-up, data, analysis, figures, other, and the training of the small networks,
whose arithmetic is negligible and whose time is per-step overhead) is taken as measured.

Writes ``benchmarks/full_run_floor.json`` and the table ``benchmarks/full_run_floor.md``.

Usage::

    python benchmarks/full_run_floor.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

import nrc

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET_S = 720.0
#: Notebooks whose first cell builds a residual MLP (``setups.prepare(..., residual=True)``).
RESIDUAL = {"e3_residual_networks"}
#: Models a notebook trains with its own plain PyTorch loop, at the shapes and steps of its nrc
#: members (E7 trains the same network both ways); their time is in the notebook's "training" phase,
#: so their products are counted too (``members trained`` includes them).
PLAIN_MODELS = {"e7_any_model": 1}


def sweep_flops(params: dict, members: int, residual: bool = False) -> float:
    """FLOPs of the SGD matrix products of ``members`` members trained with ``params``
    (a notebook's parameters in the profile; an MNIST-sized data set of 10 classes)."""
    widths = params.get("widths") or [784, *params["hidden"], 10]
    arch = nrc.Architecture(tuple(widths), residual=residual)
    n = int(params["per_class"]) * 10
    batch = min(int(params.get("batch_size", 128)), n)
    steps = int(params["epochs"]) * (n // batch)
    per_sample = 0
    for i, (_, d_out, d_in) in enumerate(arch.sites()):
        per_sample += 2 * d_in * d_out * (2 if i == 0 else 3)  # forward, weight gradient, input gradient
    return float(per_sample) * batch * steps * members


def floor(status: dict, profile: dict, best_gflops: float) -> dict:
    rows, rest = [], 0.0
    for e in status["notebooks"]:
        p = profile["notebooks"].get(e["name"], {})
        phases = e.get("phases") or {}
        big = (e.get("members_trained") or 0) > 0 and p.get("per_class", 0) >= 1000 and "epochs" in p \
            and (p.get("dataset") in ("mnist", "fashion-mnist") or p.get("datasets"))
        if big:
            members = e["members_trained"] + PLAIN_MODELS.get(e["name"], 0)
            flops = sweep_flops(p, members, residual=e["name"] in RESIDUAL)
            train = float(phases.get("training", e.get("train_seconds") or 0.0))
            rows.append({"notebook": e["name"], "members_trained": members, "tflop": flops / 1e12,
                         "training_s": train, "floor_s": flops / (best_gflops * 1e9),
                         "achieved_gflops": flops / train / 1e9})
            rest += float(e["seconds"]) - train
        else:
            rest += float(e["seconds"])
    big_train = sum(r["training_s"] for r in rows)
    big_floor = sum(r["floor_s"] for r in rows)
    return {"best_matmul_gflops_2_threads": best_gflops, "rows": rows, "big_training_s": big_train,
            "big_floor_s": big_floor, "rest_s": rest, "run_s": big_train + rest, "floor_run_s": big_floor + rest,
            "target_s": TARGET_S, "rest_allowed_s": TARGET_S - big_floor}


def table(res: dict, status: dict, bench: dict) -> str:
    env = bench.get("environment", {})
    lines = [f"The large SGD sweeps of the committed `full` run (commit `{status.get('commit', '')[:10]}`) against "
             f"the speed of their bare matrix products with two threads "
             f"({res['best_matmul_gflops_2_threads']:.0f} GFLOP/s, the best of `benchmarks/matmul_ceiling.json`, "
             f"measured {env.get('time', '?')} at commit `{str(env.get('commit', ''))[:10]}`):", "",
             "| notebook | members trained | TFLOP | training s | floor s | achieved GFLOP/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in res["rows"]:
        lines.append(f"| {r['notebook']} | {r['members_trained']} | {r['tflop']:.1f} | {r['training_s']:.0f} | "
                     f"{r['floor_s']:.0f} | {r['achieved_gflops']:.0f} |")
    lines.append(f"| **total** | | {sum(r['tflop'] for r in res['rows']):.1f} | {res['big_training_s']:.0f} | "
                 f"{res['big_floor_s']:.0f} | |")
    lines += ["", f"The rest of the run -- kernel start-up, data, analysis, figures and the training of the "
                  f"small networks -- took {res['rest_s']:.0f} s. With the large sweeps at their floor the run "
                  f"would still take {res['floor_run_s']:.0f} s; to fit {res['target_s']:.0f} s, everything else "
                  f"would have to shrink to {res['rest_allowed_s']:.0f} s "
                  f"({100 * res['rest_allowed_s'] / res['rest_s']:.0f} % of what it takes now)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.parse_args(argv)  # no options: --help, and one line with exit code 2 for anything else
    status = json.loads((REPO / "book" / "published" / "status.json").read_text())
    profile = yaml.safe_load((REPO / "profiles" / "full.yaml").read_text())
    bench = json.loads((HERE / "matmul_ceiling.json").read_text())
    best = bench["summary"]["2"]["best_matmul_gflops"]
    res = floor(status, profile, best)
    (HERE / "full_run_floor.json").write_text(json.dumps(res, indent=2) + "\n")
    text = table(res, status, bench)
    (HERE / "full_run_floor.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
