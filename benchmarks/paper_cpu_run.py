"""Issue 18, point 6: the ``paper`` profile end to end on this CPU, at its full shapes, with its
training cut to the minimum -- the command of the book's *Running past one machine* page, run as
written there -- timed, with its peak memory.

The command is read from ``book/cluster.md`` (its ``console`` block that runs the ``paper``
profile with ``--set device=cpu``), so the page and this script cannot drift apart; ``nrc`` is run
as ``python -m nrc_companion.cli`` with ``--out`` and ``--no-resume`` added, in a fresh cache.
While it runs, every 5 s, the script sums over the command's process tree (the driver, the local
Ray cluster, its workers and the notebook kernels):

* RSS: resident pages, a page shared by several processes counted in each (an overstatement);
* PSS: each shared page split between the processes that map it (the tree's own footprint);

and reads the 1-minute load average (the machine may be shared). It writes
``benchmarks/paper_cpu_run.json`` (the command, the run's ``status.json`` provenance -- commit,
device, versions --, the peaks, the load, and each notebook's time split into phases) and the table
``benchmarks/paper_cpu_run.md`` that the book includes.

With one epoch the numbers are not results: the run proves shapes, memory and plumbing.

Run (``NRC_DATA`` must hold MNIST and Fashion-MNIST, ~1-2 hours on 2 cores)::

    python benchmarks/paper_cpu_run.py --out /tmp/paper-run --cache /tmp/paper-cache
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PHASES = ("startup", "data", "training", "analysis", "figures", "other")


def documented_command(page: Path = REPO / "book" / "cluster.md") -> list[str]:
    """The CPU command of the ``paper`` profile as the book's page writes it, as an argv."""
    for block in re.findall(r"^```console\n(.*?)^```", page.read_text(), re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block).strip()
        if "--profile paper" in joined and "--set device=cpu" in joined:
            argv = shlex.split(joined)
            assert argv[0] == "nrc", f"{page}: the paper CPU command should start with nrc, not {argv[0]!r}"
            return argv
    raise SystemExit(f"{page}: no console block runs the paper profile with --set device=cpu")


def _tree(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    todo, found = [root], []
    while todo:
        p = todo.pop()
        found.append(p)
        todo += kids.get(p, [])
    return found


def _field(path: str, name: str) -> int:
    try:
        for line in open(path):
            if line.startswith(name):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Peak summed RSS and PSS of a process tree, and the load average, every ``every`` seconds."""

    def __init__(self, root: int, every: float = 5.0):
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.peak_rss = self.peak_pss = 0
        self.peak_pss_at = None
        self.loads: list[float] = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            tree = _tree(self.root)
            rss = sum(_field(f"/proc/{p}/status", "VmRSS:") for p in tree)
            pss = sum(_field(f"/proc/{p}/smaps_rollup", "Pss:") for p in tree)
            if pss > self.peak_pss:
                self.peak_pss, self.peak_pss_at = pss, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.peak_rss = max(self.peak_rss, rss)
            self.loads.append(os.getloadavg()[0])
            self.stop.wait(self.every)

    def summary(self) -> dict:
        loads = self.loads or [float("nan")]
        return {"peak_rss_bytes": self.peak_rss, "peak_pss_bytes": self.peak_pss,
                "peak_pss_at": self.peak_pss_at, "samples": len(self.loads), "sample_every_s": self.every,
                "load_average_1min": {"min": round(min(loads), 2), "median": round(statistics.median(loads), 2),
                                      "max": round(max(loads), 2)}}


def summarize(command: str, run_dir: Path, sampled: dict, wall_s: float, returncode: int) -> dict:
    """The committed record of one run: its command, provenance, peaks, load and notebooks."""
    from nrc_companion.profiles import load_profile

    status = json.loads((run_dir / "status.json").read_text())
    profile = list(load_profile(status.get("profile", "paper"), REPO / "notebooks").notebooks)
    notebooks = [{"name": e["name"], "ok": e.get("ok"), "seconds": e.get("seconds"), "error": e.get("error"),
                  "members_trained": e.get("members_trained"), "members_loaded": e.get("members_loaded"),
                  "phases": e.get("phases"), "where": e.get("where")} for e in status.get("notebooks", [])]
    keep = ("profile", "commit", "dirty", "device", "python", "platform", "versions", "started", "finished",
            "run_seconds")
    return {"command": command, "returncode": returncode, "wall_seconds": round(wall_s, 1),
            **{k: status.get(k) for k in keep}, **sampled,
            "peak_note": "summed over the driver's process tree (driver, local Ray cluster, workers, kernels), "
                         "sampled every 5 s: RSS counts a shared page in every process that maps it (an "
                         "overstatement); PSS splits it between them",
            "notebooks_ok": sum(bool(n["ok"]) for n in notebooks), "notebooks_total": len(profile),
            "notebooks_not_run": [n for n in profile if n not in {e["name"] for e in notebooks}],
            "notebooks": notebooks}


def table(res: dict) -> str:
    """The Markdown table the book includes: one row per notebook, its phases, and the totals."""
    gb = 1024 ** 3
    load = res["load_average_1min"]
    lines = [f"Measured {res['started']} on {res['device']}, torch {res['versions'].get('torch')}, commit "
             f"`{(res['commit'] or 'unknown')[:10]}`{' (dirty)' if res.get('dirty') else ''}: "
             f"**{res['notebooks_ok']} of {res['notebooks_total']} notebooks ok in {res['wall_seconds'] / 60:.0f} min** "
             f"({res['wall_seconds']:.0f} s); peak memory of the process tree "
             f"{res['peak_pss_bytes'] / gb:.1f} GiB (PSS; {res['peak_rss_bytes'] / gb:.1f} GiB summed RSS); "
             f"1-minute load average {load['min']}-{load['max']} (median {load['median']}). "
             f"How it ran: {res.get('how_run') or '`python benchmarks/paper_cpu_run.py`, which runs the command above'}.", "",
             "| notebook | ok | seconds | " + " | ".join(PHASES) + " | members trained | loaded |",
             "| --- | :---: | ---: | " + " | ".join("---:" for _ in PHASES) + " | ---: | ---: |"]
    for n in res["notebooks"]:
        ph = n.get("phases") or {}
        lines.append(f"| {n['name']} | {'yes' if n['ok'] else 'no'} | {n['seconds']:.0f} | "
                     + " | ".join(f"{ph.get(p, 0):.0f}" for p in PHASES)
                     + f" | {n['members_trained']} | {n['members_loaded']} |")
    sums = {p: sum((n.get("phases") or {}).get(p, 0) for n in res["notebooks"]) for p in PHASES}
    total = sum(sums.values()) or float("nan")
    longest = sorted(res["notebooks"], key=lambda n: -(n["seconds"] or 0))[:3]
    lines[0] += (f" Of the notebooks' {total:.0f} s, analysis took {100 * sums['analysis'] / total:.0f} % and "
                 f"training {100 * sums['training'] / total:.0f} %; the longest were "
                 + ", ".join(f"{n['name']} ({n['seconds']:.0f} s)" for n in longest) + ".")
    for n in res["notebooks"]:
        if not n["ok"]:
            lines[0] += f" {n['name']} failed: {n['error'].rstrip('.')}."
    probe = res.get("e4b_interpolation_probe")
    if probe:
        lines[0] += (" E4b's check needs a trained network that interpolates its training set; one member at these "
                     f"shapes (weight decay {probe[0]['weight_decay']:g}, seed 0, no refinement, one thread) reached "
                     + ", ".join(f"{100 * r['train_acc']:.2f} % training accuracy after {r['epochs']} epochs "
                                 f"({r['seconds']:.0f} s)" for r in probe)
                     + " (`--probe-e4b`): the profile's 200 epochs and L-BFGS refinement are GPU work.")
    if res.get("notebooks_not_run"):
        lines[0] += f" Not run: {', '.join(res['notebooks_not_run'])}."
    lines.append(f"| **total** | {res['notebooks_ok']}/{res['notebooks_total']} | "
                 f"{sum(n['seconds'] for n in res['notebooks']):.0f} | "
                 + " | ".join(f"{sums[p]:.0f}" for p in PHASES)
                 + f" | {sum(n['members_trained'] or 0 for n in res['notebooks'])} | "
                 f"{sum(n['members_loaded'] or 0 for n in res['notebooks'])} |")
    return "\n".join(lines) + "\n"


def interpolation_probe(epochs: list[int], notebook: str = "e4b_dnc1_optimality") -> list[dict]:
    """E4b's check needs a trained network that interpolates its training set. Train one member
    of the paper profile's E4b (its smallest weight decay, seed 0: the likeliest to interpolate) at
    its full shapes for each of ``epochs`` (no refinement, one thread, no cache) and measure its
    training accuracy as the notebook does."""
    import torch

    from nrc import ResultStore
    from nrc_companion import setups
    from nrc_companion.profiles import load_profile, notebook_parameters

    torch.set_num_threads(1)
    values = {k: q.default for k, q in notebook_parameters(REPO / "notebooks" / f"{notebook}.ipynb").items()}
    values.update(load_profile("paper", REPO / "notebooks").notebooks[notebook])
    rows = []
    for e in epochs:
        ns = dict(values, weight_decays=[min(values["weight_decays"])], seeds=[0], epochs=int(e), refine_steps=0,
                  device="cpu")
        with tempfile.TemporaryDirectory() as cache:  # an empty cache: every probe trains
            nb = dataclasses.replace(setups.prepare(notebook, ns), store=ResultStore(cache))
            t0 = time.perf_counter()
            run = setups.trained_starts(nb)
        rows.append({"epochs": int(e), "weight_decay": ns["weight_decays"][0], "seed": 0,
                     "train_acc": run.starts[0]["train_acc"] if run.starts else None,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="folder for the executed notebooks (not in the repository)")
    p.add_argument("--cache", type=Path, help="an empty folder for the run's result cache")
    p.add_argument("--json", type=Path, default=HERE / "paper_cpu_run.json")
    p.add_argument("--table", type=Path, default=HERE / "paper_cpu_run.md")
    p.add_argument("--probe-e4b", metavar="EPOCHS", help="instead of the run: train one E4b member at full shapes for "
                   "each of these comma-separated epoch counts, add its training accuracy to --json, rewrite --table")
    args = p.parse_args(argv)
    if args.probe_e4b:
        res = json.loads(args.json.read_text())
        res["e4b_interpolation_probe"] = interpolation_probe([int(e) for e in args.probe_e4b.split(",")])
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        args.table.write_text(table(res))
        return 0
    if args.out is None or args.cache is None:
        p.error("--out and --cache are required for the run")
    if args.cache.exists() and any(args.cache.iterdir()):
        print(f"--cache: {args.cache} is not empty; the run must train every member", file=sys.stderr)
        return 2
    argv_doc = documented_command()
    cmd = [sys.executable, "-m", "nrc_companion.cli", *argv_doc[1:], "--out", str(args.out), "--no-resume"]
    env = dict(os.environ, NRC_CACHE_DIR=str(args.cache.resolve()))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.wait()
        raise
    finally:
        sampler.stop.set()
        sampler.join()
    res = summarize(" ".join(argv_doc), args.out, sampler.summary(), time.perf_counter() - t0, rc)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    args.table.write_text(table(res))
    print(table(res))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
