"""Notebooks in parallel for ``nrc reproduce --executor ray|slurm``: one Ray task or SLURM job each.

The research library's :mod:`nrc.executors` shards a sweep's members; this module runs whole
notebooks on the same engines. It does not know how a notebook is executed: the runner hands
:class:`NotebookPool` its function for that (``run``, a module-level function, so Ray and
submitit send it to the workers by reference) together with each notebook's arguments.

Ctrl-C: the Ray pool force-cancels the notebook tasks still in flight (Ray kills their worker
processes; each kernel then exits, since its parent is gone) and, when the pool started a local
Ray cluster, shuts it down at once, so the command stops within seconds. Everything a notebook
finished is in ``status.json`` and every member a shard finished is in the cache, so running the
same command again runs only what is missing.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from nrc.executors import (Executor, as_completed, one_line, ray_init, require_engine, shard_slots,
                           start_shard_actors, submitit_folder, submitit_parameters)

__all__ = ["NotebookPool", "SHARD_TASKS_ENV"]

#: ``NRC_RAY_SHARD_TASKS=1``: the kernels' shards run as Ray tasks (a new worker process per kernel
#: and shard slot) instead of in the run's shard workers; for a cluster whose CPUs should not be
#: held for a whole run, and for ``benchmarks/ray_smoke.py``, which compares the two.
SHARD_TASKS_ENV = "NRC_RAY_SHARD_TASKS"


class NotebookPool:
    """Runs notebooks in parallel on Ray (one task each) or SLURM (one job each).

    Parameters
    ----------
    spec : nrc.executors.Executor
        The engine (``kind`` ``"ray"`` or ``"slurm"``) and its options.
    root : path
        The cache folder (submitit's default log folder lies under it).
    run : callable
        ``run(**call, kind=...)`` executes one notebook and returns its outcome (a dict with
        ``seconds``, ``error``, ``details`` and ``where``); module-level, so the engines can pickle
        it by reference.
    log : callable
        Receives progress lines.

    Notes
    -----
    Ray: a notebook task asks for no CPU of its own, because its kernel's training goes to the
    run's shard workers on the same cluster (through ``$NRC_EXECUTOR``; see
    :func:`nrc.executors.start_shard_actors`), which hold the CPUs, and a task holding CPUs while
    it waits for its own shards could deadlock a small cluster; at most ``workers`` notebooks run at
    once (default: the cluster's CPUs / ``cpus_per_shard``). The shard workers end with the run
    (or on Ctrl-C). SLURM: each notebook is one job with a
    shard's resources, and its kernel trains inside that job (``$NRC_EXECUTOR=local``), since a job
    does not submit jobs.
    """

    def __init__(self, spec: Executor, root: Path, run: Callable[..., dict], log: Callable[[str], None] = print):
        self.spec, self.root, self.run, self.log = spec, Path(root), run, log
        self.engine = require_engine(spec.kind)
        self.queue: list[tuple[str, dict]] = []
        self.started_cluster = False
        if spec.kind == "ray":
            self.started_cluster = not self.engine.is_initialized() and not spec.address
            ray_init(spec)
            self.width = spec.workers or shard_slots(spec)
            # one shard worker per slot, but no more than the cluster can place (shard_slots without
            # workers): an actor it cannot place would hold its shards for ever
            count = min(self.width, shard_slots(spec.replace(workers=None)))
            run = uuid.uuid4().hex[:8]
            self.actor_names = [] if os.environ.get(SHARD_TASKS_ENV) == "1" else \
                [f"nrc-shards-{run}-{i}" for i in range(count)]
            self.actors = []  # started with the first notebook (results), ended with the last

    def kernel_executor(self) -> str:
        """``$NRC_EXECUTOR`` for the kernels: Ray shards onto this cluster; SLURM trains in the job."""
        if self.spec.kind == "ray":
            address = self.spec.address
            if not address or address == "auto":
                address = self.engine.get_runtime_context().gcs_address
            return self.spec.replace(address=address, actors=tuple(self.actor_names)).to_env()
        return "local"

    def submit(self, name: str, call: dict) -> None:
        self.queue.append((name, call))

    def results(self) -> Iterator[tuple[str, dict]]:
        """(notebook, outcome) in the order the notebooks finish."""
        if not self.queue:
            return
        if self.spec.kind == "ray":
            yield from self._ray_results()
            return
        ex = self.engine.AutoExecutor(folder=str(submitit_folder(self.spec, self.root)),
                                      cluster=self.spec.slurm_cluster)
        ex.update_parameters(**submitit_parameters(self.spec, len(self.queue), name="nrc-notebook"))
        start = time.perf_counter()
        jobs = ex.map_array(_slurm_call, [self.run] * len(self.queue), [c for _, c in self.queue])
        pending = {j: n for j, (n, _) in zip(jobs, self.queue)}
        try:
            while pending:
                job = next(as_completed(list(pending)))
                name = pending.pop(job)
                try:
                    yield name, job.result()
                except Exception as e:  # noqa: BLE001 - the job died (killed, time limit)
                    yield name, {"seconds": time.perf_counter() - start, "error": one_line(e),
                                 "details": one_line(e), "where": {"executor": "slurm", "job": job.job_id}}
        finally:
            for job in pending:  # Ctrl-C: jobs still queued or running are cancelled (scancel)
                job.cancel(check=False)

    def _ray_results(self) -> Iterator[tuple[str, dict]]:
        ray = self.engine
        task = ray.remote(self.run).options(num_cpus=0, max_retries=0)
        queue, pending = list(self.queue), {}
        self.actors = start_shard_actors(self.spec, self.actor_names)
        try:
            while queue or pending:
                while queue and len(pending) < max(1, self.width):
                    name, call = queue.pop(0)
                    pending[task.remote(**call, kind="ray")] = (name, time.perf_counter())
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # a timeout lets Ctrl-C through
                if not done:
                    continue
                name, start = pending.pop(done[0])
                try:
                    yield name, ray.get(done[0])
                except Exception as e:  # noqa: BLE001 - the task itself died (killed, out of memory)
                    yield name, {"seconds": time.perf_counter() - start, "error": one_line(e),
                                 "details": one_line(e), "where": {"executor": "ray"}}
        finally:
            if pending:  # interrupted (Ctrl-C) or abandoned: stop the notebooks still in flight now
                for ref in pending:
                    ray.cancel(ref, force=True)
            for actor in self.actors:  # their CPUs go back to the cluster now, not when this driver exits
                ray.kill(actor)
            self.actors = []
            if pending and self.started_cluster:
                ray.shutdown()


def _slurm_call(run: Callable[..., dict], call: dict) -> dict:
    return run(**call, kind="slurm")
