"""The ``nrc`` command: ``nrc sweep`` (train and measure a weight-decay sweep), ``nrc reproduce``
(run the notebooks of a profile with papermill) and ``nrc book`` (build the site).

``nrc sweep`` with no arguments runs the embedded default: a synthetic Gaussian mixture (no
download), a ReLU MLP, five weight decays x two seeds trained as one stacked model on the CPU in
well under two minutes, and prints per-layer numerical ranks that fall as weight decay grows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULTS = {
    "dataset": "synthetic", "data_root": None, "per_class": 50, "classes": 4, "dim": 20, "spread": 1.0,
    "widths": [64, 64, 64], "activation": "relu", "bias": False, "residual": False,
    "loss": "mse", "epochs": 150, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "schedule": "cosine",
    "regularize_bias": True, "refine": "none", "refine_steps": 0,
    "weight_decays": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "seeds": [0, 1],
    "device": "auto", "cache_dir": None, "no_cache": False, "out": None, "tol": 1e-2, "quiet": False,
}


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    from .data import DATASETS
    from .models import ACTIVATIONS

    p.add_argument("--config", type=Path, help="YAML or JSON file with any of the options below "
                   "(keys with underscores, e.g. weight_decays: [0.001, 0.01]); flags override it")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, help="data set (default: synthetic Gaussian mixture)")
    g.add_argument("--data-root", help="root of the data files (torchvision layout); default $NRC_DATA")
    g.add_argument("--per-class", type=int, help="training samples per class (default 50)")
    g.add_argument("--classes", type=int, help="synthetic: number of classes K (default 4)")
    g.add_argument("--dim", type=int, help="synthetic: input dimension (default 20)")
    g.add_argument("--spread", type=float, help="synthetic: within-class standard deviation (default 1.0)")
    g = p.add_argument_group("network")
    g.add_argument("--widths", type=_ints, help="hidden widths, comma-separated (default 64,64,64)")
    g.add_argument("--activation", choices=sorted(ACTIVATIONS), help="activation (default relu)")
    g.add_argument("--bias", action=argparse.BooleanOptionalAction, help="layers with biases (default: no)")
    g.add_argument("--residual", action=argparse.BooleanOptionalAction,
                   help="residual MLP z + V sigma(W z) (default: no)")
    g = p.add_argument_group("training")
    g.add_argument("--loss", choices=["ce", "mse"], help="loss (default mse)")
    g.add_argument("--epochs", type=int, help="SGD epochs (default 150)")
    g.add_argument("--batch-size", type=int, help="minibatch size per member (default 32)")
    g.add_argument("--lr", type=float, help="learning rate (default 0.05)")
    g.add_argument("--momentum", type=float, help="SGD momentum in [0, 1) (default 0.9)")
    g.add_argument("--schedule", choices=["cosine", "constant"], help="learning-rate schedule (default cosine)")
    g.add_argument("--regularize-bias", action=argparse.BooleanOptionalAction,
                   help="apply weight decay to biases too (default: yes)")
    g.add_argument("--refine", choices=["none", "gd", "lbfgs"],
                   help="full-batch float64 refinement toward a stationary point (default none)")
    g.add_argument("--refine-steps", type=int, help="refinement iterations (default 0)")
    g = p.add_argument_group("sweep")
    g.add_argument("--weight-decays", type=_floats,
                   help="weight decays lambda >= 0, comma-separated (default 1e-3,3e-3,1e-2,3e-2,1e-1)")
    g.add_argument("--seeds", type=_ints, help="seeds, comma-separated (default 0,1)")
    g = p.add_argument_group("output")
    g.add_argument("--device", help="'auto' (CUDA if available), 'cpu' or 'cuda' (default auto)")
    g.add_argument("--cache-dir", help="results cache (default $NRC_CACHE_DIR or .nrc-cache)")
    g.add_argument("--no-cache", action="store_true", default=None, help="train without the cache")
    g.add_argument("--out", type=Path, help="write tidy.csv, members.csv, spectra.csv and meta.json here")
    g.add_argument("--tol", type=float, help="relative tolerance tau of the printed rank (default 1e-2)")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress bar")


def _options(args) -> dict:
    opts = dict(DEFAULTS)
    if getattr(args, "config", None):
        import yaml

        loaded = yaml.safe_load(args.config.read_text()) or {}
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"{args.config}: unknown option(s) {unknown}; allowed: {sorted(DEFAULTS)}")
        opts.update(loaded)
    for k in DEFAULTS:
        v = getattr(args, k, None)
        if v is not None:
            opts[k] = v
    return opts


def _validate(o: dict):
    """Build every object that can fail before any data is loaded or any training starts."""
    from .data import DATASETS
    from .models import Architecture
    from .train import TrainConfig, _validate_members, grid

    if o["dataset"] not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {o['dataset']!r}")
    for key, low in (("per_class", 1), ("classes", 2), ("dim", 1)):
        if int(o[key]) < low:
            raise ValueError(f"{key} must be >= {low}, got {o[key]}")
    if not float(o["spread"]) >= 0:
        raise ValueError(f"spread must be >= 0, got {o['spread']}")
    if not o["weight_decays"]:
        raise ValueError("weight_decays must list at least one value")
    if not o["seeds"]:
        raise ValueError("seeds must list at least one value")
    if not 0 < float(o["tol"]) < 1:
        raise ValueError(f"tol must be in (0, 1), got {o['tol']}")
    if o["device"] not in ("auto", "cpu", "cuda") and not str(o["device"]).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {o['device']!r}")
    widths = [int(w) for w in o["widths"]]
    d_in = {"mnist": 784, "fashion-mnist": 784, "cifar10": 3072}.get(o["dataset"], int(o["dim"]))
    k = 10 if o["dataset"] != "synthetic" else int(o["classes"])
    arch = Architecture((d_in, *widths, k), activation=o["activation"], bias=bool(o["bias"]),
                        residual=bool(o["residual"]))
    config = TrainConfig(loss=o["loss"], epochs=int(o["epochs"]), batch_size=int(o["batch_size"]),
                         lr=float(o["lr"]), momentum=float(o["momentum"]), schedule=o["schedule"],
                         regularize_bias=bool(o["regularize_bias"]), refine=o["refine"],
                         refine_steps=int(o["refine_steps"]))
    members = grid(weight_decay=[float(v) for v in o["weight_decays"]], seed=[int(s) for s in o["seeds"]])
    _validate_members(members, config)
    return arch, config, members


def run_sweep(args) -> int:
    try:
        o = _options(args)
        arch, config, members = _validate(o)
    except (ValueError, OSError) as err:
        print(f"nrc sweep: error: {err}", file=sys.stderr)
        return 2
    import pandas as pd

    from .analysis import analyze
    from .data import load_dataset
    from .results import ResultStore, save_run
    from .train import train

    try:
        if o["dataset"] == "synthetic":
            data = load_dataset("synthetic", num_classes=int(o["classes"]), dim=int(o["dim"]),
                                per_class=int(o["per_class"]), spread=float(o["spread"]), seed=0)
        else:
            data = load_dataset(o["dataset"], root=o["data_root"], per_class=int(o["per_class"]))
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"nrc sweep: error: {err}", file=sys.stderr)
        return 2
    device = None if o["device"] == "auto" else o["device"]
    progress = False if o["quiet"] else None
    print(f"nrc sweep: {data.name}, {data.n_train} samples, K={data.num_classes}; network {arch.widths} "
          f"{arch.activation}{' residual' if arch.residual else ''}; {len(members)} members "
          f"({len(o['weight_decays'])} weight decays x {len(o['seeds'])} seeds) trained as one stacked model",
          flush=True)
    if o["no_cache"]:
        sweep = train(arch, data, members, config, device=device, progress=progress)
    else:
        sweep = ResultStore(o["cache_dir"]).train(arch, data, members, config, device=device, progress=progress)
    analysis = analyze(sweep, data)
    tol = float(o["tol"])
    s = analysis.sites.copy()
    s["rank"] = [int(v) for v in _rank(analysis, tol)]
    order = list(dict.fromkeys(s.sort_values("layer")["site"]))
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        print(f"\nNumerical rank rank_tau(W_l) (tau = {tol:g}), mean over seeds; rows: weight matrices, "
              "columns: weight decay")
        print(s.pivot_table(index="site", columns="weight_decay", values="rank").reindex(order).round(1))
        print(f"\nDistance to rank K={arch.num_classes}, d_K^F(W_l)/||W_l||_F, mean over seeds")
        print(s.pivot_table(index="site", columns="weight_decay", values="dK_rel").reindex(order)
              .map(lambda v: f"{v:.2e}"))
        print("\nPer weight decay: train accuracy, train loss, diverged members")
        m = analysis.members.groupby("weight_decay").agg(train_acc=("train_acc", "mean"),
                                                         train_loss=("train_loss", "mean"),
                                                         diverged=("diverged", "sum"))
        print(m)
    print(f"\ntrained in {sweep.seconds:.1f} s on {sweep.device}")
    if o["out"]:
        save_run(o["out"], sweep, analysis, options={k: str(v) if isinstance(v, Path) else v for k, v in o.items()})
        print(f"wrote {o['out']}/tidy.csv, members.csv, spectra.csv, meta.json")
    return 0


def _rank(analysis, tol):
    """rank_tau of every (member, site) row of ``analysis.sites``, from the stored spectra."""
    ranks = (analysis.spectra.assign(above=analysis.spectra["s_rel"] > tol)
             .groupby(["member", "site"])["above"].sum())
    return [ranks[(m, site)] for m, site in zip(analysis.sites["member"], analysis.sites["site"])]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nrc", description="Neural Rank Collapse companion: weight-decay sweeps, spectra, neural "
        "collapse and the rank-TCV bound (Zangrando et al., arXiv 2402.03991).")
    sub = parser.add_subparsers(dest="command")
    sweep = sub.add_parser("sweep", help="train a weight-decay x seed sweep as one stacked model and print "
                           "per-layer ranks", description="Train a weight-decay x seed sweep as one stacked "
                           "model and print per-layer numerical ranks. With no options: the embedded "
                           "synthetic default (no download).")
    add_sweep_arguments(sweep)
    sweep.set_defaults(func=run_sweep)
    from .runner import add_reproduce_arguments, run_reproduce

    rep = sub.add_parser("reproduce", help="run the notebooks of a profile with papermill",
                         description="Validate a profile, run its notebooks with papermill into book/executed, "
                         "print the time per notebook, exit non-zero if any failed.")
    add_reproduce_arguments(rep)
    rep.set_defaults(func=run_reproduce)
    try:
        from .book import add_book_arguments, run_book
    except ImportError:  # the book module is optional
        add_book_arguments = None
    if add_book_arguments is not None:
        book = sub.add_parser("book", help="build the Jupyter Book from the executed notebooks")
        add_book_arguments(book)
        book.set_defaults(func=run_book)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        args = parser.parse_args(["sweep", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
