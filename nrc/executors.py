"""Executors: where the missing members of a sweep train -- here, on a Ray cluster, or on SLURM.

Members of a sweep are independent (each member's trajectory depends only on its own scalars,
see :mod:`nrc.train`) and the cache is keyed per member (:meth:`nrc.ResultStore.member_key`), so
a sweep shards without new machinery: the missing members are split into *shards*, each shard
trains as one stacked model wherever an engine puts it, and every shard's members land in the same
cache. Three executors:

* ``local`` (default): today's behaviour, one stacked model in this process.
* ``ray``: one Ray task per shard (``ray.remote``), asking for ``cpus_per_shard`` CPUs and
  ``gpus_per_shard`` GPUs; ``address`` joins an existing cluster, otherwise a local one is started.
  Shards return their members through Ray's object store and the *driver* writes the cache
  entries, so no shared filesystem is needed. With ``actors`` (set by ``nrc reproduce`` for its
  notebooks' kernels) the shards go to that run's long-lived shard workers instead
  (:class:`ShardWorker`, see :func:`start_shard_actors`).
* ``slurm``: one submitit job per shard, submitted as one job array (``AutoExecutor.map_array``);
  partition, GPUs, time limit and log folder come from options or a profile's ``cluster:``
  section. Results come back as submitit's pickled results in the log folder (which SLURM needs
  on a shared filesystem anyway); the driver writes the cache entries. ``slurm_cluster="local"``
  runs the same code path through submitit's ``LocalExecutor`` (no SLURM: tests, benchmarks).

How a shard is sized (:func:`plan_shards`): a memory estimate of one member in the stacked model
(parameters, gradients and momentum buffers in float32; the minibatch activations, saved for the
backward pass; a member's own data; a float64 refinement's full-batch activations) against the
device's memory times ``memory_fraction`` gives the members that *fit* one device; the sweep is cut
into ``max(slots, ceil(missing / fit))`` shards of equal size (at most ``max_members_per_shard``),
where ``slots`` is how many shards can run at once (Ray: the cluster's CPUs or GPUs divided by a
shard's; SLURM: ``workers`` when given). So every worker gets work and no shard outgrows a device.

``ResultStore.train(..., executor=None)`` reads the executor from ``$NRC_EXECUTOR`` (a name or a
JSON object of options, see :meth:`Executor.to_env`), which ``nrc reproduce --executor`` sets for
the notebooks' kernels: notebooks reach the executor without any change to them.

Ray and submitit are optional (``pip install "nrc[cluster]"``); asking for an executor whose engine
is missing says how to install it in one line.
"""
from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["EXECUTORS", "EXECUTOR_ENV", "Executor", "ExecutorError", "ShardError", "parse_executor",
           "require_engine", "member_memory", "plan_shards", "train_shards", "sbatch_script",
           "add_executor_arguments", "executor_from_args", "CLUSTER_KEYS", "ray_init", "shard_slots",
           "submitit_parameters", "submitit_folder", "as_completed", "one_line", "where_running",
           "ShardWorker", "start_shard_actors", "ACTOR_NAMESPACE"]

EXECUTORS = ("local", "ray", "slurm")
#: Environment variable holding the executor of ``ResultStore.train`` when none is passed.
EXECUTOR_ENV = "NRC_EXECUTOR"
INSTALL = {"ray": 'pip install "nrc[cluster]" (or: pip install "ray>=2")',
           "slurm": 'pip install "nrc[cluster]" (or: pip install "submitit>=1.5")'}
SLURM_CLUSTERS = ("slurm", "local", "debug")
#: Ray namespace of the shard workers ``nrc reproduce`` starts (its kernels are other Ray jobs).
ACTOR_NAMESPACE = "nrc"


class ExecutorError(ValueError):
    """A bad executor option or a missing engine; the message is one line naming the option."""


class ShardError(RuntimeError):
    """Shards that failed after their retries; the members of every other shard are in the cache.

    ``failures`` lists ``(shard description, error)``; rerunning trains only the missing members.
    """

    def __init__(self, failures: list[tuple[str, str]], total: int):
        self.failures = list(failures)
        lines = "; ".join(f"{what}: {err}" for what, err in failures)
        super().__init__(f"{len(failures)} of {total} shard(s) failed ({lines}); the other shards' members "
                         "are cached, so running the same command again trains only the missing members")


@dataclass(frozen=True)
class Executor:
    """Where and how the missing members of a sweep train.

    Parameters
    ----------
    kind : {"local", "ray", "slurm"}
    address : str, optional
        Ray: address of an existing cluster (``"auto"``, ``"ray://host:10001"``); none starts a
        local cluster with ``workers * cpus_per_shard`` CPUs (default: all cores).
    workers : int, optional
        Shards in flight at once. Ray, local cluster: its size in shards. SLURM: the job array's
        parallelism (``%N`` of ``--array``). Also the notebooks run at once by ``nrc reproduce``.
    cpus_per_shard, gpus_per_shard : int
        Resources of one shard (GPUs: 0 or 1; a stacked model lives on one device).
    members_per_shard : int, optional
        Fixed shard size; default from the memory estimate (:func:`plan_shards`).
    max_members_per_shard : int
        Cap of the memory-derived shard size.
    device_memory_gb : float, optional
        Memory of one shard's device; default: the local GPU's (GPU shards; 16 GiB when no GPU is
        visible to the driver) or the available RAM divided by the shards in flight (CPU shards).
    memory_fraction : float
        Share of the device memory a shard may plan for, in (0, 1].
    retries : int
        Times a failed or killed shard is run again before it is reported by name.
    partition, account : str, optional
        SLURM partition and account.
    time_limit_min : int
        SLURM time limit of one shard's job, minutes.
    mem_gb : float, optional
        SLURM memory of one job.
    log_folder : str, optional
        submitit's folder (job scripts, logs, pickled results); default ``<cache>/cluster-logs``.
    slurm_cluster : {"slurm", "local", "debug"}
        submitit's cluster; ``"local"`` runs the jobs as local processes (no SLURM).
    setup : tuple of str
        Shell lines run in the job before Python (e.g. ``module load cuda``).
    shared_fs : bool
        Whether workers see the cache folder. True: shards checkpoint there, so a killed shard
        resumes where it stopped. False: checkpoints go to the worker's temporary folder (a retry on
        the same node resumes). Results always come back through the engine.
    actors : tuple of str
        Ray: names of running :class:`ShardWorker` actors (namespace :data:`ACTOR_NAMESPACE`) that
        take the shards instead of new tasks. ``nrc reproduce`` starts them and sets this for its
        notebooks' kernels; not a profile or command-line option.
    """

    kind: str = "local"
    address: str | None = None
    workers: int | None = None
    cpus_per_shard: int = 1
    gpus_per_shard: int = 0
    members_per_shard: int | None = None
    max_members_per_shard: int = 64
    device_memory_gb: float | None = None
    memory_fraction: float = 0.7
    retries: int = 1
    partition: str | None = None
    account: str | None = None
    time_limit_min: int = 60
    mem_gb: float | None = None
    log_folder: str | None = None
    slurm_cluster: str = "slurm"
    setup: tuple = ()
    shared_fs: bool = True
    actors: tuple = ()

    def __post_init__(self):
        def bad(name, allowed):
            value = getattr(self, name)
            raise ExecutorError(f"executor option {name!r} must be {allowed}, got {value!r}")

        if self.kind not in EXECUTORS:
            bad("kind", f"one of {', '.join(EXECUTORS)}")
        for name in ("workers", "members_per_shard"):
            v = getattr(self, name)
            if v is not None and not (_is_int(v) and v >= 1):
                bad(name, "an integer >= 1 (or unset)")
        for name, lo in (("cpus_per_shard", 1), ("max_members_per_shard", 1), ("retries", 0),
                         ("time_limit_min", 1)):
            v = getattr(self, name)
            if not (_is_int(v) and v >= lo):
                bad(name, f"an integer >= {lo}")
        if not (_is_int(self.gpus_per_shard) and self.gpus_per_shard in (0, 1)):
            bad("gpus_per_shard", "0 or 1 (a stacked model lives on one device)")
        for name in ("device_memory_gb", "mem_gb"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
                bad(name, "a number > 0 (or unset)")
        if not (isinstance(self.memory_fraction, (int, float)) and 0 < self.memory_fraction <= 1):
            bad("memory_fraction", "a number in (0, 1]")
        if self.slurm_cluster not in SLURM_CLUSTERS:
            bad("slurm_cluster", f"one of {', '.join(SLURM_CLUSTERS)}")
        for name in ("address", "partition", "account", "log_folder"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, str) and v):
                bad(name, "a non-empty string (or unset)")
        if not isinstance(self.shared_fs, bool):
            bad("shared_fs", "true or false")
        if isinstance(self.setup, str) or not all(isinstance(s, str) for s in self.setup):
            bad("setup", "a list of shell lines")
        object.__setattr__(self, "setup", tuple(self.setup))
        if isinstance(self.actors, str) or not all(isinstance(a, str) and a for a in self.actors):
            bad("actors", "a list of Ray actor names")
        object.__setattr__(self, "actors", tuple(self.actors))
        if self.actors and self.kind != "ray":
            bad("actors", "empty unless kind is 'ray'")

    def options(self) -> dict:
        """The options that differ from the defaults (what :meth:`to_env` writes)."""
        default = Executor()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "kind" and getattr(self, f.name) != getattr(default, f.name)}

    def to_env(self) -> str:
        """The value of ``$NRC_EXECUTOR`` that :func:`parse_executor` reads back into this executor."""
        opts = self.options()
        if not opts:
            return self.kind
        return json.dumps({"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}},
                          sort_keys=True)

    def replace(self, **changes) -> "Executor":
        return Executor(**{**asdict(self), **changes})


#: Keys of a profile's ``cluster:`` section (the options of :class:`Executor`, plus ``executor``).
CLUSTER_KEYS = tuple(["executor"] + [f.name for f in fields(Executor) if f.name not in ("kind", "actors")])


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_executor(value=None, **overrides) -> Executor:
    """An :class:`Executor` from a name, a JSON object, a dict, an Executor, or ``$NRC_EXECUTOR``.

    Parameters
    ----------
    value : None, str, dict or Executor
        None reads ``$NRC_EXECUTOR`` (unset: ``"local"``). A string is a name (``"ray"``) or a JSON
        object (``{"kind": "ray", "address": "auto"}``). A dict holds ``kind`` (or ``executor``)
        and options; unknown keys are an error naming the allowed ones.
    **overrides
        Options that win over ``value``'s (None values are ignored).

    Raises
    ------
    ExecutorError
        One line naming the bad key or value and what is allowed.
    """
    if value is None and os.environ.get(EXECUTOR_ENV):
        try:
            return parse_executor(os.environ[EXECUTOR_ENV], **overrides)
        except ExecutorError as e:
            raise ExecutorError(f"${EXECUTOR_ENV}={os.environ[EXECUTOR_ENV]!r}: {e}") from None
    if isinstance(value, Executor):
        spec = asdict(value)
    else:
        if value is None:
            value = "local"
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ExecutorError(f"${EXECUTOR_ENV} / executor is not valid JSON: {e}") from None
            else:
                value = {"kind": text}
        if not isinstance(value, dict):
            raise ExecutorError(f"executor must be one of {', '.join(EXECUTORS)} or a mapping of options, "
                                f"got {type(value).__name__}")
        spec = dict(value)
        if "executor" in spec:
            spec["kind"] = spec.pop("executor")
    spec.update({k: v for k, v in overrides.items() if v is not None})
    allowed = [f.name for f in fields(Executor)]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ExecutorError(f"unknown executor option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    if isinstance(spec.get("setup"), list):
        spec["setup"] = tuple(spec["setup"])
    return Executor(**spec)


def require_engine(kind: str):
    """Import the engine of ``kind`` (``ray`` or ``submitit``), or say in one line how to install it."""
    if kind == "local":
        return None
    name = "ray" if kind == "ray" else "submitit"
    try:
        return __import__(name)
    except ImportError:
        raise ExecutorError(f"--executor {kind} needs {name}, which is not installed; install it with: "
                            f"{INSTALL[kind]}") from None


# ----------------------------------------------------------------------------------------------
# shard sizes


def _param_count(arch) -> int:
    from .models import init_params

    return sum(p[0].numel() for p in init_params(arch, [0]).values())


def member_memory(arch, config, n_train: int, per_member_data: bool) -> tuple[int, int]:
    """Estimated bytes of one member in a stacked shard, and bytes a shard holds once.

    Per member: parameters, gradients and momentum buffers (3 x P float32); the minibatch input
    and, per layer, the pre-activation, activation and its gradient (3 x B x sum of widths,
    float32), which the backward pass keeps; the member's own training data when members have
    their own data sets; a refinement's float64 copies (3 x P) and full-batch activations
    (3 x N x sum of widths), plus L-BFGS's history of 50 pairs. Once per shard: the shared
    training data (and its float64 copy for a refinement).
    """
    P = _param_count(arch)
    hidden = sum(arch.widths[1:]) * (2 if getattr(arch, "residual", False) else 1)
    B = min(config.batch_size, n_train)
    d = arch.widths[0]
    per = 4 * (3 * P + B * d + 3 * B * hidden)
    shared = 0
    if per_member_data:
        per += 4 * n_train * d
    else:
        shared += 4 * n_train * d
    if config.refine != "none" and config.refine_steps > 0:
        per += 8 * n_train * d if per_member_data else 0
        shared += 0 if per_member_data else 8 * n_train * d
        per += 8 * (3 * P + 3 * n_train * hidden)  # both refinements run batched over the stack
        if config.refine == "lbfgs":
            per += 8 * 2 * 50 * P  # L-BFGS keeps 50 (s, y) pairs per member
    return per, shared


def _device_bytes(spec: Executor, slots: int) -> tuple[int, str]:
    if spec.device_memory_gb is not None:
        return int(spec.device_memory_gb * 2**30), f"device_memory_gb = {spec.device_memory_gb:g}"
    if spec.gpus_per_shard:
        try:
            import torch

            if torch.cuda.is_available():
                total = torch.cuda.get_device_properties(0).total_memory
                return total, f"the local GPU's {total / 2**30:.0f} GiB"
        except Exception:  # noqa: BLE001 - no usable CUDA on the driver: fall back to the default
            pass
        return 16 * 2**30, "16 GiB (no GPU visible to the driver; set device_memory_gb)"
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        avail = 8 * 2**30
    return avail // max(1, slots), f"available RAM {avail / 2**30:.1f} GiB / {max(1, slots)} shard(s) in flight"


def plan_shards(n: int, per_member: int, shared: int, spec: Executor, slots: int) -> tuple[list[int], str]:
    """Sizes of the shards for ``n`` missing members, and one line saying why.

    ``fit`` = members whose estimated memory (``per_member`` each, plus ``shared`` once) fits the
    device memory times ``memory_fraction``, capped at ``max_members_per_shard``;
    shards = ``max(min(slots, n), ceil(n / fit))``, sizes as equal as possible. A fixed
    ``members_per_shard`` overrides ``fit`` (and ``slots``).
    """
    if n <= 0:
        return [], "nothing to train"
    if spec.members_per_shard:
        k = math.ceil(n / spec.members_per_shard)
        why = f"members_per_shard = {spec.members_per_shard}"
    else:
        device, where = _device_bytes(spec, slots)
        budget = device * spec.memory_fraction - shared
        fit = int(budget // per_member) if budget > 0 else 0
        if fit < 1:
            raise ExecutorError(f"one member needs ~{(per_member + shared) / 2**30:.2f} GiB but a shard may plan for "
                                f"{device * spec.memory_fraction / 2**30:.2f} GiB ({where}); raise device_memory_gb "
                                f"or memory_fraction, or shrink the batch")
        fit = min(fit, spec.max_members_per_shard)
        k = max(min(slots, n), math.ceil(n / fit))
        why = (f"~{per_member / 2**20:.1f} MiB per member + {shared / 2**20:.1f} MiB per shard against "
               f"{spec.memory_fraction:g} x {where}: {fit} member(s) fit a shard; {slots} shard slot(s)")
    base, extra = divmod(n, k)
    return [base + (1 if i < extra else 0) for i in range(k)], why


# ----------------------------------------------------------------------------------------------
# one shard (runs on a worker)


def where_running(kind: str) -> dict:
    out = {"executor": kind, "host": socket.gethostname(), "pid": os.getpid()}
    for var, key in (("SLURM_JOB_ID", "slurm_job"), ("SLURM_ARRAY_TASK_ID", "slurm_array_task"),
                     ("SUBMITIT_LOCAL_JOB_ID", "submitit_local_job")):
        if os.environ.get(var):
            out[key] = os.environ[var]
    if kind == "ray":
        try:
            import ray

            out["ray_node"] = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - provenance is best effort
            pass
    return out


def train_shard(arch, data, members, config, *, device=None, checkpoint=None, threads=None, callback=None,
                kind="local") -> list[dict]:
    """Train one shard as one stacked model; return one cache entry per member (what the driver writes).

    ``checkpoint`` is a path (shared filesystem) or ``("tmp", name)`` for the worker's own
    temporary folder. ``threads`` sets torch's intra-op threads to the shard's CPUs.
    """
    import torch

    from .cache import member_entry
    from .provenance import environment
    from .train import train

    if threads:
        torch.set_num_threads(int(threads))
    if isinstance(checkpoint, tuple):
        checkpoint = Path(tempfile.gettempdir()) / "nrc-checkpoints" / checkpoint[1]
    sweep = train(arch, data, members, config, device=device, checkpoint=checkpoint, progress=False,
                  callback=callback)
    env = dict(environment(), where=where_running(kind))
    return [member_entry(sweep, j, m, env) for j, m in enumerate(sweep.members)]


# ----------------------------------------------------------------------------------------------
# many shards (runs on the driver)


def _describe(members: list[dict]) -> str:
    def one(m):
        return f"wd={m['weight_decay']:g}/seed={m['seed']}"

    names = [one(m) for m in members]
    return "[" + ", ".join(names[:4]) + (f", ... {len(names)} members" if len(names) > 4 else "") + "]"


def shard_slots(spec: Executor) -> int:
    """How many shards can run at once."""
    if spec.workers:
        return spec.workers
    if spec.kind == "ray":
        import ray

        res = ray.cluster_resources()
        key, per = ("GPU", spec.gpus_per_shard) if spec.gpus_per_shard else ("CPU", spec.cpus_per_shard)
        return max(1, int(res.get(key, 1) // per))
    if spec.kind == "slurm" and spec.slurm_cluster != "slurm":
        return max(1, (os.cpu_count() or 1) // spec.cpus_per_shard)
    return 1 if spec.kind == "local" else 10**6  # SLURM: as many as the memory plan asks for


def ray_init(spec: Executor):
    """Connect to ``spec.address``, or start a local Ray cluster of ``workers * cpus_per_shard`` CPUs."""
    ray = require_engine("ray")
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                  configure_logging=False)
        if spec.address:
            kw["address"] = spec.address
        else:  # GPUs: Ray counts the real ones (a made-up count would put shards on no GPU)
            kw["num_cpus"] = spec.workers * spec.cpus_per_shard if spec.workers else os.cpu_count()
        ray.init(**kw)
    res = ray.cluster_resources()
    for key, per, flag in (("CPU", spec.cpus_per_shard, "--cpus-per-shard"), ("GPU", spec.gpus_per_shard, "--gpus-per-shard")):
        if per > res.get(key, 0):  # Ray would wait for ever on a task no node can take
            raise ExecutorError(f"{flag} = {per} but the Ray cluster has {res.get(key, 0):g} {key}(s); "
                                f"lower {flag} (0 GPUs for CPU shards) or join a larger cluster with --address")
    return ray


class ShardWorker:
    """A long-lived shard worker: a Ray actor that trains one shard per call (``train_shard``).

    Why: Ray's worker processes belong to one job, and every notebook kernel of ``nrc reproduce
    --executor ray`` is a job of its own, so a shard *task* from a kernel starts a new process that
    imports torch (seconds of CPU, see ``benchmarks/ray_smoke.py``) and dies with that kernel. The run's shard workers import it
    once and serve every kernel's shards; they ask for a shard's resources for the whole run.
    """

    def train(self, *args, **kwargs) -> list[dict]:
        return train_shard(*args, **kwargs)


def start_shard_actors(spec: Executor, names: list[str]) -> list:
    """Start the shard workers of one ``nrc reproduce`` run, one per name, in :data:`ACTOR_NAMESPACE`.

    A worker killed mid-shard is restarted and its call retried up to ``spec.retries`` times (the
    shard resumes from its checkpoint), as a task would be. Returns the actor handles; the run
    ends them with ``ray.kill`` (an actor would otherwise hold its CPUs until the driver exits).
    """
    ray = ray_init(spec)
    cls = ray.remote(ShardWorker)
    return [cls.options(name=name, namespace=ACTOR_NAMESPACE, num_cpus=spec.cpus_per_shard,
                        num_gpus=spec.gpus_per_shard, max_restarts=spec.retries,
                        max_task_retries=spec.retries).remote() for name in names]


def submitit_parameters(spec: Executor, n: int, name: str = "nrc-shard") -> dict:
    """AutoExecutor parameters of one shard's job (generic ones, and ``slurm_``-prefixed ones)."""
    params = {"name": name, "timeout_min": spec.time_limit_min, "cpus_per_task": spec.cpus_per_shard,
              "gpus_per_node": spec.gpus_per_shard or None, "mem_gb": spec.mem_gb,
              "slurm_partition": spec.partition, "slurm_account": spec.account,
              "slurm_array_parallelism": min(spec.workers or n, n),
              "slurm_setup": list(spec.setup) or None}
    return {k: v for k, v in params.items() if v is not None}


def submitit_folder(spec: Executor, root: Path) -> Path:
    return Path(spec.log_folder) if spec.log_folder else Path(root) / "cluster-logs"


def sbatch_script(spec: Executor, n_shards: int, folder) -> str:
    """The sbatch script submitit's ``SlurmExecutor`` submits for a job array of ``n_shards`` shards.

    Written by submitit itself (``SlurmExecutor._make_submission_file_text``) from the same
    parameters :func:`train_shards` passes, without calling ``sbatch`` (so it runs anywhere).
    """
    require_engine("slurm")
    from submitit.slurm.slurm import SlurmExecutor

    class _ScriptOnly(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:  # SlurmExecutor refuses to start without srun; we only write text
            return 2

    ex = _ScriptOnly(folder)
    params = {k.removeprefix("slurm_"): v for k, v in submitit_parameters(spec, n_shards).items()}
    ex.update_parameters(**ex._convert_parameters(params))
    ex.parameters["map_count"] = n_shards
    return ex._make_submission_file_text(ex._submitit_command_str, "preview")


def train_shards(spec: Executor, arch, data, members: list[dict], keys: list[str], config, *, root,
                 write: Callable[[str, dict], None], device=None, callback=None,
                 log: Callable[[str], None] | None = None) -> dict:
    """Train ``members`` (all missing from the cache) in shards on ``spec``'s engine.

    Each shard's entries are handed to ``write(key, entry)`` as soon as that shard finishes, so
    a failure later loses nothing already trained. A failed or killed shard is run again up to
    ``spec.retries`` times (Ray: the task's ``max_retries``; SLURM: resubmitted), resuming from its
    checkpoint on a shared filesystem.

    Returns
    -------
    dict
        ``shards`` (sizes), ``why`` (the sizing rule's line), ``seconds`` (wall), ``where`` (one
        provenance dict per shard).

    Raises
    ------
    ShardError
        Shards still failing after their retries, by name.
    """
    from .data import Dataset
    from .cache import fingerprint

    engine = require_engine(spec.kind)
    per_member = not isinstance(data, Dataset)
    datasets = list(data) if per_member else None
    if spec.kind == "ray":
        ray_init(spec)
    slots = shard_slots(spec)
    n_train = (datasets[0] if per_member else data).x_train.shape[0]
    per, shared = member_memory(arch, config, n_train, per_member)
    sizes, why = plan_shards(len(members), per, shared, spec, slots)
    bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    shards = [list(range(bounds[i], bounds[i + 1])) for i in range(len(sizes))]
    if log:
        log(f"nrc: {len(members)} member(s) in {len(shards)} shard(s) of {sizes} on {spec.kind} ({why})")

    def ckpt(idx):
        name = f"{fingerprint([keys[i] for i in idx])}.pt"
        return str(Path(root) / "checkpoints" / name) if spec.shared_fs else ("tmp", name)

    def payload(idx):
        sub = [datasets[i] for i in idx] if per_member else data
        return sub, [members[i] for i in idx], ckpt(idx)

    t0 = time.perf_counter()
    failures, where = [], [None] * len(shards)

    def land(s, entries):
        for i, e in zip(shards[s], entries):
            write(keys[i], e)
        where[s] = entries[0]["meta"].get("where") if entries else None

    if spec.kind == "ray":
        ray = engine
        data_ref = None if per_member else ray.put(data)  # one copy in the object store for all shards
        if spec.actors:  # the run's shard workers; a process-dependent first one spreads the kernels' shards
            try:
                workers = [ray.get_actor(a, namespace=ACTOR_NAMESPACE).train.options(retry_exceptions=spec.retries > 0)
                           for a in spec.actors]  # a failed call is retried as a task would be
            except ValueError as e:
                raise ExecutorError(f"executor option 'actors': {one_line(e)} (they live as long as the "
                                    "nrc reproduce run that started them)") from None
            first = os.getpid() % len(workers)
            submit = [workers[(first + s) % len(workers)].remote for s in range(len(shards))]
        else:
            task = ray.remote(train_shard).options(num_cpus=spec.cpus_per_shard, num_gpus=spec.gpus_per_shard,
                                                   max_retries=spec.retries, retry_exceptions=spec.retries > 0)
            submit = [task.remote] * len(shards)
        pending = {}
        for s, idx in enumerate(shards):
            sub, mem, ck = payload(idx)
            ref = submit[s](arch, data_ref if not per_member else sub, mem, config, device=device,
                            checkpoint=ck, threads=spec.cpus_per_shard, callback=callback, kind="ray")
            pending[ref] = s
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # a timeout lets Ctrl-C through
            if not done:
                continue
            s = pending.pop(done[0])
            try:
                land(s, ray.get(done[0]))
            except Exception as e:  # noqa: BLE001 - a failed shard is reported by name, the others land
                failures.append((f"shard {s + 1}/{len(shards)} {_describe([members[i] for i in shards[s]])}",
                                 one_line(e)))
    else:
        submitit = engine
        folder = submitit_folder(spec, root)
        ex = submitit.AutoExecutor(folder=str(folder), cluster=spec.slurm_cluster)
        ex.update_parameters(**submitit_parameters(spec, len(shards)))
        calls = [payload(idx) for idx in shards]

        def submit_many(ss):
            fn = [train_shard] * len(ss)
            subs = [calls[s][0] for s in ss]
            jobs = ex.map_array(_shard_call, fn, [arch] * len(ss), subs, [calls[s][1] for s in ss],
                                [config] * len(ss), [device] * len(ss), [calls[s][2] for s in ss],
                                [spec.cpus_per_shard] * len(ss), [callback] * len(ss))
            return dict(zip(jobs, ss))

        attempts = {s: 0 for s in range(len(shards))}
        pending = submit_many(list(range(len(shards))))
        while pending:
            job = next(j for j in as_completed(list(pending)))
            s = pending.pop(job)
            try:
                land(s, job.result())
            except Exception as e:  # noqa: BLE001 - resubmit, or report by name
                if attempts[s] < spec.retries:
                    attempts[s] += 1
                    if log:
                        log(f"nrc: shard {s + 1}/{len(shards)} failed ({one_line(e)}); retry {attempts[s]} of {spec.retries}")
                    pending.update(submit_many([s]))
                else:
                    failures.append((f"shard {s + 1}/{len(shards)} {_describe([members[i] for i in shards[s]])} "
                                     f"(job {job.job_id}, logs in {folder})", one_line(e)))
    seconds = time.perf_counter() - t0
    if failures:
        raise ShardError(failures, len(shards))
    return {"shards": sizes, "why": why, "seconds": seconds, "where": where}


def _shard_call(fn, arch, data, members, config, device, checkpoint, threads, callback):
    return fn(arch, data, members, config, device=device, checkpoint=checkpoint, threads=threads,
              callback=callback, kind="slurm")


def as_completed(jobs, poll: float = 0.2) -> Iterator:
    """submitit jobs in the order they finish (polling; submitit.helpers.as_completed does the same)."""
    while True:
        for j in jobs:
            if j.done():
                yield j
                return
        time.sleep(poll)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text[:300]


# ----------------------------------------------------------------------------------------------
# command line


def add_executor_arguments(parser) -> None:
    """The ``--executor`` options (``nrc sweep`` and ``nrc reproduce``); values are checked by
    :func:`executor_from_args`."""
    g = parser.add_argument_group("cluster (see book/cluster.md)")
    g.add_argument("--executor", metavar="local|ray|slurm", help="where missing members train: local (default), ray or slurm; "
                   "ray/slurm need: pip install \"nrc[cluster]\"")
    g.add_argument("--address", metavar="ADDR", help="ray: address of an existing cluster (default: start a local one)")
    g.add_argument("--workers", metavar="N", help="shards (and notebooks) in flight at once")
    g.add_argument("--cpus-per-shard", metavar="N", help="CPUs of one shard (default 1)")
    g.add_argument("--gpus-per-shard", metavar="0|1", help="GPUs of one shard: 0 or 1 (default 0)")
    g.add_argument("--members-per-shard", metavar="N", help="fixed shard size (default: from a memory estimate)")
    g.add_argument("--partition", metavar="NAME", help="slurm: partition")
    g.add_argument("--time-limit", dest="time_limit_min", metavar="MIN", help="slurm: time limit of one job, minutes (default 60)")
    g.add_argument("--log-folder", metavar="DIR", help="slurm: submitit's folder for scripts, logs and results")
    g.add_argument("--retries", metavar="N", help="reruns of a failed shard before it is reported (default 1)")


_INT_OPTIONS = ("workers", "cpus_per_shard", "gpus_per_shard", "members_per_shard", "time_limit_min", "retries")


def executor_from_args(args, section: dict | None = None) -> Executor:
    """The executor of parsed ``--executor`` options over a profile's ``cluster:`` section.

    Raises :class:`ExecutorError` (one line, naming the option) for a bad value or a missing engine.
    """
    spec = dict(section or {})
    if "executor" in spec:
        spec["kind"] = spec.pop("executor")
    over = {}
    for name in ("executor", "address", "partition", "log_folder") + _INT_OPTIONS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in _INT_OPTIONS:
            try:
                value = int(value)
            except (TypeError, ValueError):
                flag = "--time-limit" if name == "time_limit_min" else "--" + name.replace("_", "-")
                raise ExecutorError(f"{flag} must be an integer, got {value!r}") from None
        over["kind" if name == "executor" else name] = value
    if "kind" in over and over["kind"] not in EXECUTORS:
        raise ExecutorError(f"--executor must be one of {', '.join(EXECUTORS)}, got {over['kind']!r}")
    out = parse_executor({**spec, **over})
    require_engine(out.kind)
    return out
