"""The ``nrc`` command: ``nrc sweep`` (train and measure a weight-decay sweep), ``nrc reproduce``
(run the notebooks of a profile with papermill) and ``nrc book`` (build the site).

``nrc sweep`` with no options runs the embedded default: a synthetic Gaussian mixture (no
download), a ReLU MLP, five weight decays x two seeds trained as one stacked model on the CPU in
well under two minutes, and prints per-layer numerical ranks that fall as weight decay grows.
It ends with three lines: what training cost in this run (members trained, or loaded from the
cache), where the tables went, and the next command worth running.

Every input is validated by :mod:`nrc_companion.config` (``nrc sweep``'s options are the fields of
its :class:`~nrc_companion.config.SweepOptions`) before anything is trained or written (output
folders are probed first); a bad value prints one line naming the option, the value and what is
allowed, and exits with code 2. Ctrl-C prints where the run stopped and exits with 130; no
traceback reaches the user unless ``--debug`` is given.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Only the standard library is imported up front: ``nrc --help`` and ``nrc --version`` must not
# wait for torch, pandas, matplotlib or pydantic (seconds); each command imports what it needs.

#: Where the current run is, for the Ctrl-C message.
_STATE: dict = {}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of the usage block."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _default_text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``nrc sweep``, one per field of :class:`nrc_companion.config.SweepOptions`.

    Names, groups, help, allowed values and defaults are read from the model's fields; values are
    left as typed (``None`` when not given) for :func:`nrc_companion.config.sweep_options` to check.
    """
    import dataclasses

    from .config import SWEEP_GROUPS, SweepOptions, describe, field_defaults, field_types

    p.add_argument("--config", type=Path, help="YAML or JSON file with any of the options below "
                   "(keys with underscores, e.g. weight_decays: [0.001, 0.01]); flags override it")
    groups = {name: p.add_argument_group(name) for name in SWEEP_GROUPS}
    types, defaults = field_types(SweepOptions), field_defaults(SweepOptions)
    for f in dataclasses.fields(SweepOptions):
        meta, default = f.metadata, defaults[f.name]
        flag = "--" + f.name.replace("_", "-")
        if types[f.name] is bool:
            default_text = "" if default is False and not meta["negatable"] else f" (default: {_default_text(default)})"
            action = argparse.BooleanOptionalAction if meta["negatable"] else "store_true"
            groups[meta["group"]].add_argument(flag, action=action, default=None, help=meta["help"] + default_text)
            continue
        library = (f"; nrc.TrainConfig's default: {_default_text(meta['library_default'])}"
                   if "library_default" in meta else "")
        shown = "" if default is None else f"; default {_default_text(default)}"
        groups[meta["group"]].add_argument(flag, metavar=f.name.upper(),
                                           help=f"{meta['help']} ({describe(types[f.name])}{shown}{library})")
    from nrc.executors import add_executor_arguments

    add_executor_arguments(p)  # --executor local|ray|slurm and its options (book/cluster.md)


def _flags(args) -> dict:
    import dataclasses

    from .config import SweepOptions

    return {f.name: getattr(args, f.name, None) for f in dataclasses.fields(SweepOptions)}


def _prepare(o):
    """Check what the options alone cannot tell, before any data is loaded, trained or written."""
    from .config import ConfigError, check_device, check_writable
    from nrc.models import Architecture
    from nrc.train import TrainConfig, grid

    check_device(o.device)
    if o.out:
        check_writable(o.out, "--out")
    if not o.no_cache:
        check_writable(o.cache_dir or os.environ.get("NRC_CACHE_DIR") or ".nrc-cache", "--cache-dir")
    d_in = {"mnist": 784, "fashion-mnist": 784, "cifar10": 3072}.get(o.dataset, o.dim)
    k = 10 if o.dataset != "synthetic" else o.classes
    try:
        arch = Architecture((d_in, *o.widths, k), activation=o.activation, bias=o.bias, residual=o.residual)
    except ValueError as e:
        raise ConfigError(f"--widths = {','.join(map(str, o.widths))} is not allowed: {e}") from None
    config = TrainConfig(loss=o.loss, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, momentum=o.momentum,
                         schedule=o.schedule, regularize_bias=o.regularize_bias, refine=o.refine,
                         refine_steps=o.refine_steps)
    members = grid(weight_decay=list(o.weight_decays), seed=list(o.seeds))
    return arch, config, members


def run_sweep(args) -> int:
    """``nrc sweep``: validate, load the data, train (or load from the cache), print, write; exit code."""
    import dataclasses
    import time

    from .config import ConfigError, sweep_options

    try:
        o = sweep_options(_flags(args), getattr(args, "config", None))
        arch, config, members = _prepare(o)
        from nrc.executors import executor_from_args

        executor = executor_from_args(args)  # a bad option or a missing engine: one line, exit 2
        if o.no_cache and executor.kind != "local":
            raise ValueError(f"--executor {executor.kind} lands its shards in the cache; drop --no-cache")
    except (ConfigError, ValueError) as err:
        print(f"nrc sweep: error: {err}", file=sys.stderr)
        return 2
    import pandas as pd

    from nrc.analysis import analyze
    from nrc.data import load_dataset
    from nrc.cache import ResultStore
    from nrc.export import save_run
    from nrc.train import train

    _STATE.update(command="sweep", phase="loading data", epochs=config.epochs, epoch=0,
                  cache=None if o.no_cache else str(ResultStore(o.cache_dir).root),
                  every=config.checkpoint_every)
    try:
        if o.dataset == "synthetic":
            data = load_dataset("synthetic", num_classes=o.classes, dim=o.dim, per_class=o.per_class,
                                spread=o.spread, seed=0)
        else:
            data = load_dataset(o.dataset, root=o.data_root, per_class=o.per_class,
                                download=o.download)
    except (FileNotFoundError, ValueError, RuntimeError, OSError, EOFError) as err:
        print(f"nrc sweep: error: {_one_line(err)}", file=sys.stderr)
        return 2
    device = None if o.device == "auto" else o.device
    progress = False if o.quiet else None
    print(f"nrc sweep: {data.name}, {data.n_train} samples, K={data.num_classes}; network {arch.widths} "
          f"{arch.activation}{' residual' if arch.residual else ''}; {len(members)} members "
          f"({len(o.weight_decays)} weight decays x {len(o.seeds)} seeds) trained as one stacked model",
          flush=True)

    def on_epoch(epoch, params, diverged):
        _STATE["epoch"] = epoch + 1

    _STATE["phase"] = "training"
    store = None if o.no_cache else ResultStore(o.cache_dir)
    # Counted before training, so the closing line can say what came from the cache.
    n_cached = 0 if store is None else sum(store.cached(arch, config, data, members))
    if n_cached == len(members):
        print(f"all {n_cached} members are in the cache {store.root.absolute()}: loading them, no training",
              flush=True)
    start = time.perf_counter()
    if store is None:
        sweep = train(arch, data, members, config, device=device, progress=progress, callback=on_epoch)
    else:
        sweep = store.train(arch, data, members, config, device=device, progress=progress, executor=executor,
                            callback=on_epoch if executor.kind == "local" else None)  # shards report no epochs here
    this_run = time.perf_counter() - start
    _STATE["phase"] = "analysis"
    analysis = analyze(sweep, data)
    if analysis.spectra.empty:
        print(f"nrc sweep: error: all {len(members)} members diverged (loss became NaN/inf); lower --lr "
              f"(now {o.lr:g}) or the weight decays", file=sys.stderr)
        return 1
    tol = o.tol
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
    print()
    print(_training_line(len(members), n_cached, this_run, sweep, store))
    if o.out:
        _STATE["phase"] = "writing"
        save_run(o.out, sweep, analysis, options=dataclasses.asdict(o))
        print(f"tables: wrote tidy.csv, members.csv, spectra.csv and meta.json to {Path(o.out).absolute()}")
    else:
        print("tables: printed above only; add --out DIR to write them as CSV (tidy.csv, members.csv, "
              "spectra.csv, meta.json)")
    print(f"next: {_next_command(o)}")
    return 0


def _training_line(n: int, n_cached: int, seconds: float, sweep, store) -> str:
    """What training cost in this run, and what came from the cache (never the old time alone)."""
    where = f" on {sweep.device}"
    if store is None:
        return f"trained {n} members in {seconds:.1f} s{where} (--no-cache: nothing cached)"
    if n_cached == n:
        return (f"loaded all {n} members from the cache {store.root.absolute()} in {seconds:.1f} s (no training; they "
                f"took {sweep.seconds:.1f} s{where} when trained); --no-cache retrains")
    if n_cached:
        return (f"trained {n - n_cached} members in {seconds:.1f} s{where}, loaded {n_cached} from the cache "
                f"{store.root.absolute()}")
    return f"trained {n} members in {seconds:.1f} s{where}; cached in {store.root.absolute()} (a rerun loads them)"


def _next_command(o) -> str:
    """The next command worth running after this sweep."""
    if not o.out:
        return ("the same command with --out runs/sweep writes the tables (instant: the members are cached)"
                if not o.no_cache else "the same command with --out runs/sweep writes the tables")
    if o.dataset == "synthetic":
        return "the same sweep on MNIST (an 11 MB download): nrc sweep --dataset mnist --download --out runs/mnist"
    return "every notebook of the book on its smoke scale (minutes): nrc reproduce --profile smoke --out runs/smoke"


def _rank(analysis, tol):
    """rank_tau of every (member, site) row of ``analysis.sites``, from the stored spectra."""
    ranks = (analysis.spectra.assign(above=analysis.spectra["s_rel"] > tol)
             .groupby(["member", "site"])["above"].sum())
    return [ranks[(m, site)] for m, site in zip(analysis.sites["member"], analysis.sites["site"])]


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if not isinstance(err, (EOFError, OSError)) or str(err) else f"{type(err).__name__}: {text}"


def run_book_checked(args) -> int:
    """``nrc book``: a clear message when not run at a repository root."""
    root = Path(args.root)
    missing = [f for f in ("_config.yml", "_toc.yml") if not (root / f).is_file()]
    if missing:
        print(f"nrc book: error: {root.absolute()} is not the nrc repository root (no {' or '.join(missing)}); "
              f"run it from the folder holding _config.yml, or pass --root PATH", file=sys.stderr)
        return 2
    from .book.build import run_book

    return run_book(args)


def run_reproduce_checked(args) -> int:
    """``nrc reproduce``: the output folder is probed before any notebook runs."""
    from datetime import datetime, timezone

    from .config import check_writable

    from .runner import run_reproduce

    if not getattr(args, "list", False):
        check_writable(args.out, "--out")  # before any notebook runs (ConfigError: exit 2)
    _STATE.update(command="reproduce", out=Path(args.out).absolute(), args=args,
                  t0=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return run_reproduce(args)


def _reproduce_progress() -> tuple[str | None, int, int]:
    """(notebook running when interrupted, notebooks finished in this run, notebooks in this run)."""
    import json

    args, t0 = _STATE.get("args"), _STATE.get("t0", "")
    try:
        from .profiles import load_profile

        names = list(load_profile(args.profile, Path(args.notebooks)).notebooks)
        if args.only:
            names = [n for n in names if n in set(args.only)]
    except Exception:  # noqa: BLE001 - best effort, for a message
        names = []
    try:
        status = json.loads((_STATE["out"] / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    done = []
    if str(status.get("started", "")) >= t0:
        done = [e.get("name") for e in status.get("notebooks", [])
                if str(e.get("started", "")) >= t0 and e.get("name") in names]
    current = next((n for n in names if n not in done), None)
    return current, len(done), len(names)


_EXAMPLES = {
    "nrc": """examples:
  nrc sweep                                               the main job: synthetic data, seconds, no download
  nrc sweep --dataset mnist --download --out runs/mnist   the same on MNIST, tables written to runs/mnist
  nrc reproduce --profile smoke --out runs/smoke          every notebook of the book, small (minutes)
  nrc book                                                build the book from the committed run""",
    "sweep": """examples:
  nrc sweep                                               5 weight decays x 2 seeds on synthetic data
  nrc sweep --epochs 50 --weight-decays 1e-3,1e-1 --out runs/sweep
  nrc sweep --dataset mnist --download --per-class 100 --out runs/mnist""",
    "reproduce": """examples:
  nrc reproduce --profile smoke --only t2_rank_tcv_bound --out runs/smoke   one notebook, seconds
  nrc reproduce --profile smoke --out runs/smoke          all notebooks, small (minutes)
  nrc reproduce --profile full --list                     what the published run ran, with its parameters""",
    "book": """examples:
  nrc book                                                the site of the committed run (book/published)
  nrc book --executed runs/smoke --no-strict              the site of your own run folder
  nrc book --generate-only                                only the generated pages""",
}


def build_parser(light: bool = False, sweep_options: bool = True) -> argparse.ArgumentParser:
    """The ``nrc`` parser.

    Parameters
    ----------
    light : bool
        Leave out the options of ``nrc reproduce`` and ``nrc book`` (their modules import
        papermill-side and torch-side code): enough for ``nrc --help`` and ``nrc --version``.
    sweep_options : bool
        Add the options of ``nrc sweep`` (read from its model, :mod:`nrc_companion.config`);
        ``nrc --help`` and ``nrc --version`` do without.
    """
    from nrc import __version__

    import textwrap

    # RawDescription keeps the examples' columns; the descriptions are wrapped here instead.
    raw = argparse.RawDescriptionHelpFormatter

    def wrap(text: str) -> str:
        return textwrap.fill(text, 95)

    parser = _Parser(
        prog="nrc", description=wrap("Neural Rank Collapse companion: weight-decay sweeps, spectra, neural "
        "collapse and the rank-TCV bound (Zangrando et al., arXiv 2402.03991). The main job is "
        "'nrc sweep': train a weight-decay sweep and print per-layer ranks (try 'nrc sweep --help')."),
        epilog=_EXAMPLES["nrc"], formatter_class=raw)
    parser.add_argument("--version", action="version", version=f"nrc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="{sweep,reproduce,book}", parser_class=_Parser)
    sweep = sub.add_parser("sweep", help="(main job) train a weight-decay x seed sweep as one stacked model "
                           "and print per-layer ranks", description=wrap("Train a weight-decay x seed sweep as one "
                           "stacked model and print per-layer numerical ranks. With no options: the embedded "
                           "synthetic default (no download). Trained members are cached (.nrc-cache), so a "
                           "rerun loads them; --out writes the tables as CSV. The defaults are those of this "
                           "embedded experiment; where the library's nrc.TrainConfig has another, the option says "
                           "so."),
                           epilog=_EXAMPLES["sweep"], formatter_class=raw)
    if sweep_options:
        add_sweep_arguments(sweep)
    sweep.set_defaults(func=run_sweep)
    rep = sub.add_parser("reproduce", help="run the notebooks of a profile with papermill",
                         description=wrap("Validate a profile, run its notebooks with papermill into --out "
                         "(default book/executed), print the time per notebook and, for a failed one, its "
                         "error; exit non-zero if any failed. A rerun skips notebooks already ok."),
                         epilog=_EXAMPLES["reproduce"], formatter_class=raw)
    rep.set_defaults(func=run_reproduce_checked)
    book = sub.add_parser("book", help="build the Jupyter Book from the executed notebooks",
                          description=wrap("Check a run folder of executed notebooks and build the site with "
                          "jupyter-book into _build/html/ (default: the committed run in book/published)."),
                          epilog=_EXAMPLES["book"], formatter_class=raw)
    book.set_defaults(func=run_book_checked)
    if not light:
        from .book.build import add_book_arguments
        from .runner import add_reproduce_arguments

        add_reproduce_arguments(rep)
        add_book_arguments(book)
    return parser


def _interrupted() -> str:
    s = _STATE
    if s.get("command") == "sweep":
        phase = s.get("phase")
        if phase == "training":
            where = f"during training, at epoch {s.get('epoch', 0)} of {s.get('epochs')}"
            if s.get("cache"):
                saved = (f"members finished so far and a checkpoint (every {s.get('every')} epochs) are in "
                         f"{s['cache']}; run the same command again to resume from there")
            else:
                saved = "nothing was saved (--no-cache); run the command again to start over"
        elif phase in ("analysis", "writing"):
            where = f"after training, during {phase}"
            saved = (f"the trained members are cached in {s['cache']}; run the same command again to finish "
                     "without retraining" if s.get("cache") else "run the command again to start over")
        else:
            where, saved = "before training started", "nothing was written; run the command again"
        return f"nrc sweep: interrupted {where}; {saved}"
    if s.get("command") == "reproduce":
        current, done, total = _reproduce_progress()
        where = f" while running {current}" if current else ""
        return (f"nrc reproduce: interrupted{where} ({done} of {total} notebooks finished, recorded in "
                f"{s.get('out')}/status.json); run the same command again to finish (trained members are "
                "cached, so finished training is not repeated)")
    return "nrc: interrupted"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    _STATE.clear()
    if not argv:
        build_parser(light=True, sweep_options=False).print_help()
        return 0
    if argv[0] in ("-h", "--help", "--version"):
        build_parser(light=True, sweep_options=False).parse_args(argv)  # prints and exits (SystemExit 0)
    # Only reproduce and book need their modules' options (and the imports behind them).
    parser = build_parser(light=argv[0] not in ("reproduce", "book"), sweep_options=argv[0] not in ("reproduce", "book"))
    first = argv[0]
    commands = {"sweep", "reproduce", "book"}
    if first not in commands and first not in ("-h", "--help", "--version"):
        sweep_flags = {o for a in parser._subparsers._group_actions[0].choices["sweep"]._actions
                       for o in a.option_strings}
        if first.split("=")[0] in sweep_flags:
            print(f"nrc: error: {first.split('=')[0]} is an option of 'nrc sweep'; run: nrc sweep {' '.join(argv)}",
                  file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    import warnings

    from nrc.safeload import NrcWarning  # imports torch: only once a command runs

    default_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *a, **k: (
        f"warning: {message}\n" if issubclass(category, NrcWarning) else default_format(message, category, *a, **k))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"\n{_interrupted()}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - no traceback reaches a CLI user
        from .config import ConfigError

        if isinstance(err, ConfigError):
            print(f"nrc {args.command}: error: {err}", file=sys.stderr)
            return 2
        if debug:
            raise
        print(f"nrc {args.command}: error: {type(err).__name__}: {_one_line(err)} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    """The ``nrc`` console script: :func:`main`, then exit.

    After Ctrl-C under Ray the pool has already cancelled its tasks and stopped the local cluster
    (about 2 s); Python's own shutdown with Ray and torch loaded then takes another ~7 s
    (measured: 6.7 s for a bare Ray script with torch, 1.5 s with ``os._exit``). Nothing is left
    to flush but our own streams, so an interrupted run leaves at once.
    """
    code = main()
    if code == 130 and "ray" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
