"""The smoke profile on a local Ray cluster: shard tasks against the run's shard workers, and locally.

``nrc reproduce --executor ray`` runs each notebook as a Ray task whose kernel is a Ray job of its
own. Ray's worker processes serve one job, so when a kernel's shards are Ray *tasks*, every kernel
starts new worker processes that import torch. The runner now starts long-lived shard workers
(``nrc.executors.ShardWorker`` actors) for the whole run instead; ``NRC_RAY_SHARD_TASKS=1`` restores
the tasks. This script runs, one after the other on this machine, into fresh temporary folders:

* ``ray, shard workers``: ``nrc reproduce --profile smoke --executor ray --workers 2 --threads 1``;
* ``ray, shard tasks``: the same with ``NRC_RAY_SHARD_TASKS=1``;
* ``local``: ``nrc reproduce --profile smoke --threads 1``;

and records for each the wall time, the CPU-seconds the whole machine spent meanwhile
(``/proc/stat``; the machine should be otherwise idle, and the load average is recorded), and the
number of distinct processes that trained the cache's members. This is the CI's smoke run
(``tests/conftest.py`` runs it on Ray beside the other tests).

Usage::

    python benchmarks/ray_smoke.py                       # into runs/bench/ray_smoke.{json,md}
    python benchmarks/ray_smoke.py --update-committed    # and refresh benchmarks/ray_smoke.{json,md}
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["nrc", "reproduce", "--profile", "smoke", "--threads", "1", "--no-resume"]
WAYS = {"ray, shard workers": (["--executor", "ray", "--workers", "2"], {}),
        "ray, shard tasks": (["--executor", "ray", "--workers", "2"], {"NRC_RAY_SHARD_TASKS": "1"}),
        "local": ([], {})}


def machine_cpu_seconds() -> float:
    """CPU-seconds every core of this machine has spent busy since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_one(way: str) -> dict:
    import torch

    extra, env_extra = WAYS[way]
    with tempfile.TemporaryDirectory(prefix="nrc-ray-smoke-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "NRC_RAY_SHARD_TASKS"}
        env.update(NRC_CACHE_DIR=str(Path(tmp) / "cache"), **env_extra)
        cmd = COMMAND + ["--out", str(Path(tmp) / "out")] + extra
        load0, c0, t0 = os.getloadavg()[0], machine_cpu_seconds(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, machine_cpu_seconds() - c0
        if proc.returncode:
            raise SystemExit(f"ray_smoke: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        status = json.loads((Path(tmp) / "out" / "status.json").read_text())
        # a shard's entries say where they were trained; a local run's, trained in each kernel, do not
        where = [torch.load(p, weights_only=False)["meta"].get("where") for p in (Path(tmp) / "cache" / "members").glob("*.pt")]
    return {"way": way, "command": " ".join([f"{k}={v}" for k, v in env_extra.items()] + COMMAND + extra), "wall_s": wall, "machine_cpu_s": cpu, "load_before": load0,
            "load_after": os.getloadavg()[0], "notebooks_ok": sum(e["ok"] for e in status["notebooks"]),
            "notebooks": len(status["notebooks"]), "members": len(where),
            "training_processes": len({(w["host"], w["pid"]) for w in where}) if all(where) else None}


def table(report: dict) -> str:
    env = report["environment"]
    rows = report["rows"]
    lines = [f"Measured {env['time']} on {env['device']}, torch {env['versions'].get('torch')}, "
             f"ray {report['ray']}, commit `{str(env['commit'])[:10]}`, one run each, one after the other; "
             f"1-minute load average between {min(r['load_before'] for r in rows):.1f} and "
             f"{max(r['load_after'] for r in rows):.1f}. Command: `{report['command']}`.", "",
             "| way | wall (s) | machine CPU-seconds | notebooks ok | members | processes that trained them |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['way']} (`{r['command']}`) | {r['wall_s']:.0f} | {r['machine_cpu_s']:.0f} | "
                     f"{r['notebooks_ok']} of {r['notebooks']} | {r['members']} | "
                     f"{r['training_processes'] if r['training_processes'] else 'each notebook kernel'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "ray_smoke.json",
                   help="JSON written here, its Markdown table beside it (default under runs/, ignored by git)")
    p.add_argument("--update-committed", action="store_true",
                   help="also refresh the committed benchmarks/ray_smoke.json/.md (book/cluster.md includes it)")
    a = p.parse_args(argv)
    import ray

    import nrc

    from datetime import datetime, timezone

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = []
    for way in WAYS:
        print(f"ray_smoke: {way} ...", flush=True)
        rows.append(run_one(way))
        print(f"ray_smoke: {way}: {rows[-1]['wall_s']:.0f} s wall, {rows[-1]['machine_cpu_s']:.0f} CPU-s", flush=True)
    env = nrc.environment()
    env["time"] = started  # when the runs began
    report = {"environment": env, "ray": ray.__version__,
              "command": "python " + " ".join(["benchmarks/ray_smoke.py"] + sys.argv[1:]), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2, default=str))
    a.out.with_suffix(".md").write_text(table(report))
    print(table(report))
    if a.update_committed:
        committed = Path(__file__).resolve().parent / "ray_smoke.json"
        for src, dst in ((a.out, committed), (a.out.with_suffix(".md"), committed.with_suffix(".md"))):
            shutil.copyfile(src, dst)
        print(f"refreshed {committed} and {committed.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
