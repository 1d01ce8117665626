"""Issue 20: the ``full`` profile two notebooks at a time, against the published run, side by side
at one commit.

The published run (``book/published``) executes the notebooks one after the other, each kernel
with two intra-op threads. On the same 2-core machine,

    NRC_CACHE_DIR=EMPTY_DIR nrc reproduce --profile full --executor ray --workers 2 --threads 1 --no-resume --out RUN_DIR

runs them on a local Ray cluster: two notebooks at once, one thread each, their training on two
single-CPU shard workers (*Running past one machine* in the book). One thread per process loses
nothing to the products (the trainer reaches a larger share of the bare products with one thread
than with two, ``benchmarks/matmul_ceiling.md``), and the single-threaded parts of the notebooks
(kernel start-up, analysis, figures, the small networks) fill both cores instead of one.

This script reads both run folders -- same profile, same commit, clean trees, every notebook ok,
each from an empty cache -- and writes ``benchmarks/full_run_parallel.json`` and the table
``benchmarks/full_run_parallel.md`` that the *Performance* page includes: the wall time of each
run, each notebook's time in both, and how far the numbers moved between the two kernel paths
(``compare_runs.py``: the largest relative change per notebook and every verdict that differs).

    python benchmarks/full_run_parallel.py RUN_DIR                 # against book/published
    python benchmarks/full_run_parallel.py RUN_DIR --published DIR
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
COMMAND = "nrc reproduce --profile full --executor ray --workers 2 --threads 1 --no-resume --out RUN_DIR"
OUT_JSON, OUT_MD = HERE / "full_run_parallel.json", HERE / "full_run_parallel.md"


def _compare_runs():
    spec = importlib.util.spec_from_file_location("compare_runs", HERE / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _status(run: Path) -> dict:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{run}: not a run folder of nrc reproduce (no readable status.json)") from None


def _provenance(status: dict) -> dict:
    where = {(e.get("where") or {}).get("executor") for e in status["notebooks"]}
    return {"commit": status["commit"], "dirty": status["dirty"], "device": status["device"],
            "threads": status["threads"], "executor": ",".join(sorted(str(w) for w in where)),
            "started": status["started"], "finished": status["finished"],
            "run_seconds": status["run_seconds"], "notebook_seconds": status["total_seconds"],
            "load_average": status.get("load_average"), "torch": status["versions"].get("torch")}


def summarize(parallel: Path, published: Path) -> dict:
    """Both runs' provenance and times, per notebook, and what moved between them."""
    runs = {"parallel": _status(parallel), "published": _status(published)}
    for name, s in runs.items():
        bad = [e["name"] for e in s["notebooks"] if not e.get("ok")]
        if s.get("profile") != "full" or not s.get("finished") or bad or s.get("dirty") is not False:
            raise ValueError(f"the {name} run must be a finished run of profile 'full' from a clean tree with "
                             f"every notebook ok (profile {s.get('profile')!r}, finished {s.get('finished')!r}, "
                             f"dirty {s.get('dirty')!r}, failed {bad})")
    if runs["parallel"]["commit"] != runs["published"]["commit"]:
        raise ValueError(f"the runs are of different commits ({runs['parallel']['commit'][:10]} and "
                         f"{runs['published']['commit'][:10]}): side by side means one commit")
    cr = _compare_runs()
    changes = cr.compare_runs(published, parallel).set_index("notebook")
    old_v, new_v = cr._verdicts(published), cr._verdicts(parallel)  # read once, as compare_runs.report does
    moved = cr._moved(old_v, new_v)
    times = {name: {e["name"]: e["seconds"] for e in s["notebooks"]} for name, s in runs.items()}
    rows = []
    for nb in times["published"]:
        c = changes.loc[nb] if nb in changes.index else None

        def num(key):
            v = None if c is None else c[key]
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

        rows.append({"notebook": nb, "published_s": times["published"][nb], "parallel_s": times["parallel"].get(nb),
                     "max_rel_change_tables": num("max_rel_change_tables"),
                     "where": "" if c is None else str(c["where"] or ""),
                     "max_rel_change_values": num("max_rel_change_values"),
                     "value": "" if c is None else str(c["value"] or "")})
    return {"command": COMMAND, "runs": {k: _provenance(v) for k, v in runs.items()}, "notebooks": rows,
            "verdicts": len(set(old_v) & set(new_v)), "moved_verdicts": moved.to_dict("records")}


def _sig(x) -> str:
    return "" if x is None else ("0" if x == 0 else f"{x:.1g}")


def table(res: dict) -> str:
    """The Markdown fragment the Performance page includes."""
    p, q = res["runs"]["parallel"], res["runs"]["published"]
    moved = res["moved_verdicts"]
    lines = [
        f"Both runs from an empty cache at commit `{q['commit'][:10]}` on {q['device']} (torch {q['torch']}), "
        f"one after the other: the published run (started {q['started']}, notebooks one at a time, "
        f"{q['threads']} threads) took **{q['run_seconds']:.0f} s**; `{res['command']}` (started {p['started']}, "
        f"executor {p['executor']}, {p['threads']} thread per process) took **{p['run_seconds']:.0f} s**, "
        f"{p['run_seconds'] / q['run_seconds']:.2f} of it. The notebooks' own wall times add up to "
        f"{q['notebook_seconds']:.0f} s and {p['notebook_seconds']:.0f} s: two notebooks sharing two cores "
        "each take longer, and a notebook waiting for members that the other is training counts the wait.",
        "",
        (f"All {res['verdicts']} verdicts are the same in both runs." if not moved else
         f"{len(moved)} of {res['verdicts']} verdicts differ: "
         + "; ".join(f"`{m['check']}` {m['old verdict']} -> {m['new verdict']}" for m in moved) + ".")
        + " The numbers move by the kernel path alone (one thread instead of two): the largest relative change "
          "of any number per notebook, in its result tables and in its recorded values:",
        "",
        "| notebook | published s | two at a time s | largest change, tables | where | largest change, values | value |",
        "| --- | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in res["notebooks"]:
        lines.append(f"| {r['notebook']} | {r['published_s']:.0f} | {r['parallel_s']:.0f} | "
                     f"{_sig(r['max_rel_change_tables'])} | {r['where']} | {_sig(r['max_rel_change_values'])} | "
                     f"{r['value']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help=f"the run folder of `{COMMAND}`")
    ap.add_argument("--published", type=Path, default=REPO / "book" / "published",
                    help="the sequential run to set it beside (default: book/published)")
    a = ap.parse_args(argv)
    try:
        res = summarize(a.run.resolve(), a.published.resolve())
    except ValueError as e:
        print(f"full_run_parallel: {e}", file=sys.stderr)
        return 2
    OUT_JSON.write_text(json.dumps(res, indent=1) + "\n")
    OUT_MD.write_text(table(res))
    print(table(res), end="")
    print(f"wrote {OUT_JSON.relative_to(REPO)} and {OUT_MD.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
