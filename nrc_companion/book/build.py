"""``nrc book``: check the run folder, stage the sources, generate the pages, run jupyter-book.

The book never executes code; every build goes through a staged copy of the sources
(:func:`stage_sources`), so no run folder is modified.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from .pages import generate_pages
from .run import BANNER_ENV, EXECUTED, GENERATED, check_executed
from .stage import stage_run

__all__ = ["add_book_arguments", "build_book", "run_book", "stage_sources"]

STAGED = "_build/staged"    # sources staged for a build from another run folder
_JB = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"


def stage_sources(root, executed_dir, dest) -> Path:
    """Copy the book's sources into ``dest``, with ``dest/book/published`` staged from ``executed_dir``.

    The table of contents points at ``book/published``; every build goes through such a staged
    copy (:func:`stage_run`: prepared notebooks, links to the rest), so no run folder is touched.
    """
    import shutil

    root, dest = Path(root).resolve(), Path(dest).resolve()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns(Path(EXECUTED).name, GENERATED, "executed", "__pycache__", "*.pyc")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(root / name, dest / name)
    # benchmarks and profiles: fragments the pages include (benchmark tables, the paper profile)
    for name in ("book", "nrc", "notebooks", "benchmarks", "profiles"):
        if (root / name).is_dir():
            shutil.copytree(root / name, dest / name, ignore=ignore)
    stage_run(executed_dir, dest / EXECUTED)
    return dest


def build_book(root=".", executed_dir=None, strict=True, *, builder="html", quiet=False,
               output_dir=None) -> int:
    """Check the executed notebooks, generate the pages, and build the book with jupyter-book.

    Parameters
    ----------
    root : path
        Repository root (holds ``_config.yml`` and ``_toc.yml``).
    executed_dir : path, optional
        Run folder of executed notebooks; default ``<root>/book/published`` (the committed run,
        which the table of contents points at). Every build goes through a staged copy of the
        sources in ``<output_dir>/_build/staged`` (:func:`stage_sources`), so no run folder is modified.
    strict : bool
        Refuse to build when a notebook is missing, failed or holds an error output, and pass
        ``-n -W --keep-going`` (every warning fails the build). ``False`` builds what there is.
    output_dir : path, optional
        Where ``_build/<builder>`` goes; default ``root``.

    Returns
    -------
    int
        0 on success; jupyter-book's exit code, or 2 when the checks refuse to build.
    """
    root = Path(root).resolve()
    executed_dir = Path(executed_dir).resolve() if executed_dir is not None else root / EXECUTED
    output_dir = Path(output_dir).resolve() if output_dir is not None else root
    problems = check_executed(executed_dir, root=root)
    if problems:
        msg = "nrc book: cannot build the book from these executed notebooks:\n  " + "\n  ".join(problems)
        if strict:
            print(msg, file=sys.stderr)
            return 2
        print(msg.replace("cannot build", "building anyway (strict=False)"), file=sys.stderr)
    src = stage_sources(root, executed_dir, output_dir / STAGED)
    generate_pages(executed_dir, src / "book", root=src)
    cmd = [sys.executable, "-c", _JB, "build", str(src), "--path-output", str(output_dir),
           "--builder", builder, "--all"]
    if strict:
        cmd += ["-n", "-W", "--keep-going"]
    if quiet:
        cmd.append("-q")
    env = dict(os.environ, **{BANNER_ENV: str(executed_dir.resolve())})
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=src, env=env).returncode
    where = output_dir / "_build" / builder
    print(f"nrc book: jupyter-book {'succeeded' if rc == 0 else f'failed (exit {rc})'} in "
          f"{time.time() - t0:.1f} s; output in {where}", file=sys.stderr)
    return rc


def add_book_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``nrc book``."""
    parser.add_argument("--root", default=".", help="repository root with _config.yml (default: .)")
    parser.add_argument("--executed", default=None,
                        help=f"run folder of executed notebooks (default: <root>/{EXECUTED}, the committed "
                             "run; e.g. book/executed for your own `nrc reproduce`)")
    parser.add_argument("--no-strict", dest="strict", action="store_false",
                        help="build even with missing or failed notebooks, and without -n -W")
    parser.add_argument("--generate-only", action="store_true",
                        help="only write the generated pages (book/generated/)")
    parser.add_argument("--quiet", "-q", action="store_true", help="less output from Sphinx")
    return parser


def run_book(args: argparse.Namespace) -> int:
    """Run ``nrc book`` with parsed arguments."""
    root = Path(args.root)
    if args.generate_only:
        for p in generate_pages(args.executed or root / EXECUTED, root / "book", root=root):
            print(p)
        return 0
    return build_book(root, args.executed, strict=args.strict, quiet=args.quiet)
