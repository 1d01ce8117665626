"""``nrc reproduce``: execute the notebooks of a profile with papermill.

Each notebook ``notebooks/NAME.ipynb`` is executed (with the profile's parameters injected) into
``book/executed/NAME.ipynb``, with the kernel's working directory set to ``notebooks/`` and these
environment variables set for the kernel (and restored afterwards):

* ``NRC_PROGRESS=0`` -- no progress bars in executed notebooks;
* ``MPLBACKEND`` unset, so the kernel's inline backend puts figures in the executed notebooks;
* ``NRC_RESULTS_DIR=<out>/results`` -- where notebooks write their key numbers (``nrc_companion.record``);
* ``NRC_PROFILE=<profile name>``;
* ``NRC_CACHE_DIR=<repo>/.nrc-cache`` unless already set;
* ``OMP_NUM_THREADS`` (and the BLAS equivalents) for CPU profiles: ``--threads``, by default the
  idle cores (:func:`choose_threads`);
* ``NRC_TRAIN_LOG=<out>/training/<notebook>.jsonl`` -- where ``ResultStore.train`` counts training
  seconds and members trained / loaded from the cache (summed into ``status.json``);
* ``NRC_TIMING_FILE=<out>/training/<notebook>.timing.json`` -- where :mod:`nrc.timing` writes the
  kernel's data / training / analysis / figures seconds; with the kernel start-up read from
  papermill's cell times they make each notebook's ``phases`` in ``status.json``;
* ``PYTHONPATH`` gets the directory holding the running ``nrc`` package first, so the kernel
  imports the same ``nrc`` as the runner (also from a plain checkout).

Each notebook runs in a kernel of its own, :mod:`nrc_companion.kernel` (ipykernel with the
notebooks' libraries already imported). When the kernels leave a core idle (``--threads`` below
the cores), the next notebook's kernel starts while the current notebook runs, so its start-up and
imports overlap that notebook (``where.kernel_started_ahead`` in ``status.json``; the notebook's
``seconds`` then leave them out). The executed copy is written when the notebook ends, ok or not.

A run is resumable: a notebook already ok in ``<out>/status.json`` for the same profile and the
same source hash (source notebook, ``nrc/*.py``, parameters) is skipped (``--no-resume`` reruns
all); training resumes through the cache and its checkpoints. Executed copies store papermill's
paths relative to the repository and carry no absolute repository or home path.

A failing notebook does not stop the run; its executed copy (with the traceback) is kept and
``<out>/status.json`` marks it failed. ``status.json`` records the provenance of the build: profile,
device, Python and library versions, git commit, start time, and per notebook the wall time and
outcome. With ``only=[...]`` the entries of the other notebooks in an existing ``status.json`` are
kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

from .profiles import Profile, ProfileError, load_profile, notebook_parameters, validate_profile
from nrc.provenance import device_name, git_state

__all__ = ["reproduce", "RunReport", "NotebookRun", "add_reproduce_arguments",
           "run_reproduce", "choose_threads", "kernel_environment", "injected_parameters", "source_hash",
           "training_counts", "apply_overrides", "STATUS_FILE", "TRAIN_LOG_ENV", "VERSION_PACKAGES"]

STATUS_FILE = "status.json"
#: Markdown fragment with the run's timings, next to status.json (book/performance.md includes it).
SUMMARY_FILE = "run_summary.md"
#: Environment variable naming the JSON-lines file ResultStore.train appends its counts to.
TRAIN_LOG_ENV = "NRC_TRAIN_LOG"
#: Environment variable naming the per-notebook phase-timing file (see :mod:`nrc.timing`).
TIMING_ENV = "NRC_TIMING_FILE"


def _kernel_manager(log_path: Path):
    """A kernel manager whose kernel preloads the notebooks' libraries and writes its stderr to ``log_path``.

    A Python kernel whose spec runs ``-m ipykernel_launcher`` runs ``-m nrc_companion.kernel``
    instead: the same kernel, with :data:`nrc_companion.kernel.PRELOADED` imported before it
    answers (other kernels start as their spec says). Its stderr goes to ``log_path``, not the
    user's terminal: a kernel left behind by Ctrl-C otherwise prints its own shutdown traceback
    (ZMQError) and start-up warnings under the runner's one-line message; cell errors still reach
    the notebook. The manager keeps the last client it made (``last_client``), so whoever started
    the kernel can close that client's channels when it stops the kernel.
    """
    from jupyter_client.manager import AsyncKernelManager

    class RunnerKernelManager(AsyncKernelManager):
        last_client = None

        async def _async_pre_start_kernel(self, **kw):
            cmd, kw = await super()._async_pre_start_kernel(**kw)
            if list(cmd[1:3]) == ["-m", "ipykernel_launcher"]:
                cmd = [cmd[0], "-m", "nrc_companion.kernel", *cmd[3:]]
            kw["stderr"] = open(log_path, "ab")  # noqa: SIM115 - the kernel process owns it
            return cmd, kw

        def client(self, **kw):
            self.last_client = super().client(**kw)
            return self.last_client

    return RunnerKernelManager


def _start_kernel(kernel: str, env: dict[str, str], cwd: Path, log_path: Path, notebook: Path):
    """Launch the kernel of ``notebook`` now, without waiting for it; return its started manager.

    The kernel loads the libraries of :data:`nrc_companion.kernel.PRELOADED` that the notebook
    imports (:func:`nrc_companion.kernel.preload_for`) while the caller goes on (papermill waits
    for it to answer when the notebook starts).
    """
    from jupyter_core.utils import run_sync

    from .kernel import PRELOAD_ENV, preload_for

    km = _kernel_manager(log_path)(kernel_name=kernel)
    run_sync(km.start_kernel)(env={**env, PRELOAD_ENV: ",".join(preload_for(notebook))}, cwd=str(cwd))
    return km


def _quiet_dead_kernel_tasks() -> None:
    """After Ctrl-C: papermill's cell task ends in DeadKernelError when its kernel is stopped, and
    nobody awaits it any more; asyncio would print that as a traceback under the runner's one-line
    message. Other errors are still reported."""
    from jupyter_core.utils import ensure_event_loop
    from nbclient.exceptions import DeadKernelError

    def handler(loop, context):
        if not isinstance(context.get("exception"), DeadKernelError):
            loop.default_exception_handler(context)

    ensure_event_loop().set_exception_handler(handler)


@contextmanager
def _kernels_stopped():
    """A dict for kernels started ahead of their notebooks; any left in it at the end are stopped
    (a failed or interrupted run leaves no kernel behind)."""
    kernels: dict = {}
    try:
        yield kernels
    finally:
        for km in kernels.values():
            _stop_kernel(km)


def _stop_kernel(km) -> None:
    """Kill a notebook's kernel at once and close the client papermill made for it.

    Nothing is lost by not waiting for a graceful exit: cells write their records, tables, cache
    entries and timing files before they return, each atomically.
    """
    from jupyter_core.utils import run_sync

    if km.last_client is not None:
        km.last_client.stop_channels()
    if run_sync(km.is_alive)():
        run_sync(km.shutdown_kernel)(now=True)
    else:  # it died, or papermill stopped it on Ctrl-C: only the connection files are left
        run_sync(km.cleanup_resources)()
VERSION_PACKAGES = ("torch", "numpy", "scipy", "pandas", "matplotlib", "papermill", "nrc")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class NotebookRun:
    """The outcome of one notebook: wall seconds, ok, and (if it failed) the error."""

    name: str
    seconds: float
    ok: bool
    error: str | None = None     # one line, e.g. "ZeroDivisionError: division by zero"
    details: str | None = None   # the last lines of the traceback
    output: Path | None = None


@dataclass
class RunReport:
    """What :func:`reproduce` did. ``ok`` is True when every notebook ran without error."""

    profile: str
    runs: list[NotebookRun] = field(default_factory=list)
    status_path: Path | None = None
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    @property
    def failures(self) -> dict[str, str]:
        """Failed notebook -> the error's last lines."""
        return {r.name: r.details or r.error or "failed" for r in self.runs if not r.ok}

    @property
    def times(self) -> dict[str, float]:
        """Notebook -> wall seconds."""
        return {r.name: r.seconds for r in self.runs}


# ----------------------------------------------------------------------------------------------
# provenance


def _versions() -> dict[str, str]:
    out = {}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    if out.get("nrc") == "not installed":  # a plain checkout: report the package's own version
        try:
            from nrc import __version__
            out["nrc"] = f"{__version__} (not installed)"
        except ImportError:
            pass
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# running


@contextmanager
def _environ(updates: dict[str, str | None]):
    """Set (or, for ``None``, unset) environment variables; restore them afterwards."""
    saved = {k: os.environ.get(k) for k in updates}
    for k, v in updates.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def kernel_environment(profile: Profile, out_dir: Path, repo: Path, threads: int = 1) -> dict[str, str | None]:
    """The environment variables the runner sets (a value) or unsets (None) for the notebook kernels
    of a run into ``out_dir`` (listed in this module's docstring)."""
    cache = os.environ.get("NRC_CACHE_DIR")
    pkg_root = str(Path(__file__).resolve().parents[1])
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {
        "NRC_PROGRESS": "0",
        # unset: the kernel then uses its inline backend; an inherited MPLBACKEND=Agg would leave
        # the executed notebooks (and the book's pages) without figures
        "MPLBACKEND": None,
        "NRC_RESULTS_DIR": str(out_dir / "results"),
        "NRC_PROFILE": profile.name,
        "NRC_CACHE_DIR": str(Path(cache).resolve()) if cache else str(repo / ".nrc-cache"),
        "PYTHONPATH": os.pathsep.join([pkg_root] + [p for p in pythonpath if p != pkg_root]),
    }
    if os.environ.get("NRC_DATA"):  # kernels start in notebooks/: a relative root means the caller's
        env["NRC_DATA"] = str(Path(os.environ["NRC_DATA"]).expanduser().absolute())
    if str(profile.device).startswith("cpu"):
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def choose_threads(requested: str | int | None = "auto") -> int:
    """Intra-op threads for the notebook kernels of a CPU profile.

    ``"auto"`` (default): ``$OMP_NUM_THREADS`` when set, else the cores that are idle now, i.e.
    ``cpu_count - round(1-minute load average)``, at least 1. Why: on this project's 2-core CPU,
    at the full profile's shapes, two threads train about twice as fast as one on an idle machine
    but several times *slower* when the other core is busy (threads wait for each other), so the
    kernels take only the cores nobody else is using (measured: benchmarks/bench_matmul_ceiling.py
    --threads 1,2). An integer forces that count.
    """
    if requested not in (None, "auto"):
        n = int(requested)
        if n < 1:
            raise ValueError(f"--threads must be 'auto' or an integer >= 1, got {requested!r}")
        return n
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) >= 1:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 1
    return max(1, min(cores, cores - int(round(load))))


def _error_text(exc: BaseException) -> tuple[str, str]:
    """(one-line error, last lines of the traceback) of a papermill failure."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename is not None:
        short = f"{ename}: {evalue}" if evalue else str(ename)
        tb = getattr(exc, "traceback", None) or []
        text = "\n".join(tb) if tb else short
    else:
        short = f"{type(exc).__name__}: {exc}"
        text = short
    text = _ANSI.sub("", text)
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and set(ln.strip()) != {"-"}]
    short = _ANSI.sub("", short).strip().splitlines()
    short = short[-1] if short else type(exc).__name__
    return short[:300], "\n".join(lines[-8:])


def injected_parameters(profile: Profile, name: str, declared: dict) -> dict:
    """The values papermill injects into notebook ``name``: the profile's, plus ``profile`` when the
    notebook declares it (``declared``: :func:`~nrc_companion.profiles.validate_profile`'s result)."""
    params = declared[name]
    values = {}
    if "profile" in params:
        values["profile"] = profile.name
    for key, value in profile.notebooks[name].items():
        # an int given for a float parameter is injected as a float
        if params[key].type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[key] = value
    return values


def _read_status(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def source_hash(src: Path, params: dict) -> str:
    """What an executed notebook depends on: its source, the nrc package's code, its parameters."""
    h = hashlib.sha256(src.read_bytes())
    for f in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def _timing_path(train_log: Path) -> Path:
    """The :mod:`nrc.timing` file of the notebook whose training log is ``train_log``."""
    return train_log.with_name(train_log.name.replace(".jsonl", "") + ".timing.json")


def _phases(executed: Path, timing_file: Path, seconds: float) -> dict:
    """Where a notebook's wall ``seconds`` went: kernel start-up, the :mod:`nrc.timing` phases, other.

    ``startup`` is the time from papermill's notebook start (``metadata.papermill.start_time``, set
    before the kernel is launched) to the start of the first executed cell; ``other`` is the rest
    of the wall time (notebook code outside the library's phases, papermill's own work).
    """
    from datetime import datetime

    from nrc.timing import PHASES, read

    out = {"startup": 0.0}
    try:
        import nbformat

        nb = nbformat.read(str(executed), as_version=4)
        begin = nb.metadata.get("papermill", {}).get("start_time")
        first = next((c.metadata.get("papermill", {}).get("start_time") for c in nb.cells
                      if c.cell_type == "code" and c.metadata.get("papermill", {}).get("start_time")), None)
        if begin and first:
            out["startup"] = max(0.0, (datetime.fromisoformat(first) - datetime.fromisoformat(begin)).total_seconds())
    except Exception:  # noqa: BLE001 - a missing or unreadable notebook leaves start-up at 0
        pass
    measured = read(timing_file)
    for name in PHASES:
        out[name] = float(measured.get(name, 0.0))
    out["other"] = max(0.0, float(seconds) - sum(out.values()))
    return {k: round(v, 2) for k, v in out.items()}


def training_counts(path: Path) -> dict:
    """Sum the lines ResultStore.train appended to ``path`` (see :data:`TRAIN_LOG_ENV`)."""
    out = {"train_seconds": 0.0, "members_trained": 0, "members_loaded": 0}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        out["train_seconds"] += float(r.get("seconds", 0.0))
        out["members_trained"] += int(r.get("trained", 0))
        out["members_loaded"] += int(r.get("loaded", 0))
    out["train_seconds"] = round(out["train_seconds"], 2)
    return out


def _relativize(nb_path: Path, repo: Path) -> None:
    """Store papermill's input/output paths relative to the repository, and strip machine paths
    (the cache and data folders, the repository's absolute path, the home directory) from outputs, so a committed executed
    notebook carries no absolute path, user or host name of the machine that ran it."""
    import nbformat

    nb = nbformat.read(str(nb_path), as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = os.path.relpath(Path(meta[key]).resolve(), repo.resolve())
    meta.pop("environment_variables", None)
    text = nbformat.writes(nb)
    prefixes = [(os.environ.get(v, ""), f"${v}") for v in ("NRC_CACHE_DIR", "NRC_DATA")]
    prefixes += [(str(repo.resolve()), "."), (str(Path.home()), "~")]
    for prefix, repl in sorted(prefixes, key=lambda pr: -len(pr[0])):  # longest first
        if prefix not in ("", "/"):
            text = text.replace(json.dumps(prefix)[1:-1], repl)
    tmp = nb_path.with_suffix(".ipynb.tmp")
    tmp.write_text(text)
    os.replace(tmp, nb_path)


def execute(src, dst, parameters: dict, km, *, cwd, timeout) -> None:
    """Execute one notebook with papermill in the started kernel ``km`` and stop that kernel at once.

    The one way both a local run and a notebook task on a cluster execute a notebook: the
    executed copy is written once, when the notebook ends (ok or failed), not after every cell
    (papermill's saves cost up to ~0.15 s each, twice per cell); the kernel is killed rather
    than asked to shut down (see :func:`_stop_kernel`). Errors propagate to the caller.
    """
    import papermill as pm

    try:
        pm.execute_notebook(str(src), str(dst), parameters=parameters, km=km, cwd=str(cwd), progress_bar=False,
                            execution_timeout=timeout, request_save_on_cell_execute=False,
                            # the kernel answers once it has imported the notebooks' libraries:
                            # under load that can pass papermill's default of 60 s
                            start_timeout=600)
    except Exception:
        raise
    except BaseException:  # Ctrl-C: the kernel is stopped on purpose, its cell task left behind
        _quiet_dead_kernel_tasks()
        raise
    finally:
        _stop_kernel(km)


def run_notebook(src: str, dst: str, parameters: dict, *, kernel: str, cwd: str, timeout, env: dict,
                 kernel_log: str, kind: str) -> dict:
    """Execute one notebook (:func:`execute`) in a kernel started with ``env``; return its outcome
    and where it ran.

    What :class:`~nrc_companion.pool.NotebookPool` runs in a Ray task or a SLURM job (``kind``):
    the executed copy and the records land in the paths given, which on a cluster must lie on a
    shared filesystem.

    Returns
    -------
    dict
        ``seconds`` (wall), ``error`` (one line, or None), ``details`` (the traceback's last
        lines) and ``where`` (:func:`nrc.executors.where_running`).
    """
    from nrc.executors import where_running

    start, error, details = time.perf_counter(), None, None
    try:
        with _environ(env):
            km = _start_kernel(kernel, dict(os.environ), Path(cwd), Path(kernel_log), Path(src))
            execute(src, dst, parameters, km, cwd=cwd, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - reported in the notebook's status entry
        error, details = _error_text(e)
    return {"seconds": time.perf_counter() - start, "error": error, "details": details,
            "where": where_running(kind)}


def reproduce(profile: Profile | str | os.PathLike = "smoke", *, only=None, notebooks_dir="notebooks",
              out_dir="book/executed", kernel: str = "python3", timeout: float | None = None,
              threads: str | int | None = "auto", resume: bool = True,
              log: Callable[[str], None] = print, executor=None, overrides=None) -> RunReport:
    """Execute a profile's notebooks with papermill and write ``<out_dir>/status.json``.

    Parameters
    ----------
    profile : Profile, str or path
        A loaded :class:`~nrc_companion.profiles.Profile`, or a profile name / YAML path for
        :func:`~nrc_companion.profiles.load_profile`.
    only : list of str, optional
        Run just these notebooks (in profile order); the other entries of an existing
        ``status.json`` are kept.
    notebooks_dir, out_dir : path
        Source notebooks, and where executed copies, ``results/`` and ``status.json`` go.
    kernel : str
        Jupyter kernel name.
    timeout : float, optional
        Per-cell execution timeout in seconds (papermill's ``execution_timeout``); none by default.
    threads : "auto" or int
        Intra-op threads of the kernels of a CPU profile (:func:`choose_threads`).
    resume : bool
        Skip a notebook whose entry in an existing ``status.json`` is ok, of the same profile,
        with the same source hash (source notebook, ``nrc/*.py``, parameters) and whose executed
        copy exists: a killed run continues where it stopped. Training itself resumes through
        the cache and its checkpoints.
    log : callable
        Receives one line per notebook as it finishes and the final summary.
    executor : str, dict or nrc.executors.Executor, optional
        ``"ray"`` / ``"slurm"``: run the notebooks in parallel, one Ray task or SLURM job each
        (:class:`nrc_companion.pool.NotebookPool`), and set ``$NRC_EXECUTOR`` for their kernels so
        ``ResultStore.train`` shards their training (Ray); notebooks sharing a sweep train each
        member once (per-member locks in the cache). Default: one notebook after the other, here.
    overrides : dict, optional
        ``{parameter: value}`` applied to every notebook of the profile that declares the
        parameter (``nrc reproduce --set epochs=1``); a parameter no notebook declares is an error.

    Raises
    ------
    ProfileError
        The profile is invalid (nothing runs).
    ValueError
        ``only`` names a notebook that is not in the profile.
    """
    notebooks_dir = Path(notebooks_dir).resolve()
    if not isinstance(profile, Profile):
        profile = load_profile(profile, notebooks_dir)
    if overrides:
        for note in apply_overrides(profile, overrides, notebooks_dir):
            log(f"note: {note}")
    declared = validate_profile(profile, notebooks_dir)
    pool = None
    if executor is not None:
        from nrc.executors import parse_executor

        from .pool import NotebookPool

        spec = parse_executor(executor)
        if spec.kind != "local":
            cache = os.environ.get("NRC_CACHE_DIR") or str(notebooks_dir.parent / ".nrc-cache")
            pool = NotebookPool(spec, Path(cache), run_notebook, log=log)
    names = list(profile.notebooks)
    if only is not None:
        only = [only] if isinstance(only, str) else list(only)
        unknown = [n for n in only if n not in profile.notebooks]
        if unknown:
            raise ValueError(f"not in profile {profile.name!r}: {', '.join(unknown)}; "
                             f"valid names: {', '.join(names) or '(none)'}")
        names = [n for n in names if n in set(only)]

    device = device_name()
    # Kernels run here unless a pool sends them elsewhere: refuse before anything is written.
    if pool is None and str(profile.device).startswith("cuda") and device.startswith("CPU"):
        raise ValueError(f"profile {profile.name!r} needs CUDA (device {profile.device!r}) but torch sees no "
                         "GPU here; run it on a machine with CUDA, or use --profile full (the published "
                         "CPU scale) or --profile smoke")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    repo = notebooks_dir.parent
    status_path = out_dir / STATUS_FILE
    commit, dirty = git_state(repo)
    started = _now()
    provenance = {
        "profile": profile.name, "description": profile.description, "profile_device": profile.device,
        "device": device, "python": platform.python_version(), "platform": platform.platform(),
        "versions": _versions(), "commit": commit, "dirty": dirty, "started": started,
    }
    n_threads = choose_threads(threads)
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    provenance.update(threads=n_threads, load_average=load, paper_profile_run=False,
                      note="The GPU `paper` profile has not been run: no GPU was lent to this project.")
    previous = _read_status(status_path) if (only is not None or resume) else None
    kept = [e for e in (previous or {}).get("notebooks", [])
            if isinstance(e, dict) and e.get("name") not in names]
    done = {e.get("name"): e for e in (previous or {}).get("notebooks", [])
            if resume and isinstance(e, dict) and e.get("ok") and e.get("profile") == profile.name}
    if previous is not None and previous.get("profile") not in (None, profile.name):
        log(f"note: {status_path} also lists notebooks run with profile {previous.get('profile')!r}")

    report = RunReport(profile=profile.name, status_path=status_path)
    entries: dict[str, dict] = {}

    def write_status(finished: str | None) -> None:
        new = [entries[n] for n in names if n in entries]
        merged = _merge_entries(kept, new, order=list(profile.notebooks))
        status = dict(provenance, finished=finished, run_seconds=round(time.perf_counter() - t0, 2),
                      total_seconds=round(sum(float(e.get("seconds") or 0) for e in merged), 2),
                      notebooks=merged)
        _write_json(status_path, status)
        _write_summary(out_dir / SUMMARY_FILE, status)

    t0 = time.perf_counter()
    log(f"nrc reproduce: profile {profile.name!r} ({profile.description or 'no description'}), "
        f"{len(names)} notebook{'s' if len(names) != 1 else ''} -> {out_dir}")
    width = max((len(n) for n in names), default=0)
    train_logs = out_dir / "training"
    kernel_env = kernel_environment(profile, out_dir, repo, n_threads)
    if pool is not None:
        kernel_env["NRC_EXECUTOR"] = pool.kernel_executor()

    def finish(name, params, digest, dst, train_log, seconds, error, details, where):
        if dst.is_file():
            try:
                _relativize(dst, repo)
            except Exception as e:  # noqa: BLE001 - an unreadable output is reported, not fatal
                error = error or f"could not rewrite paths in {dst.name}: {e}"
        run = NotebookRun(name, seconds, error is None, error, details, dst)
        report.runs.append(run)
        entries[name] = {"name": name, "seconds": round(seconds, 2), "ok": run.ok, "error": error,
                         "profile": profile.name, "started": started, "commit": commit,
                         "parameters": params, "output": dst.name, "source_hash": digest,
                         "skipped": False, "where": where, **training_counts(train_log),
                         "phases": _phases(dst, _timing_path(train_log), seconds)}
        log(f"{name:<{width}}  {seconds:8.1f} s  {'ok' if run.ok else 'FAILED: ' + str(run.error)}"
            + (f"  ({where.get('executor')} on {where.get('host')})" if pool is not None else ""))
        write_status(None)

    queued = {}
    plan = []  # (name, its parameters, source hash, whether an earlier run already did it)
    for name in names:
        params = injected_parameters(profile, name, declared)
        digest = source_hash(notebooks_dir / f"{name}.ipynb", params)
        old = done.get(name)
        plan.append((name, params, digest, old is not None and old.get("source_hash") == digest
                     and (out_dir / f"{name}.ipynb").is_file()))
    to_run = [name for name, *_, skip in plan if not skip]
    # Notebooks run here, one after the other, each in a kernel of its own that starts (and
    # imports the notebooks' libraries, see nrc_companion.kernel) while the previous notebook
    # runs -- when the kernels leave a core idle (threads below the cores). With every core
    # training, a kernel starting beside them would slow the training more than it saves.
    ahead = pool is None and n_threads < (os.cpu_count() or 1)

    def start_kernel(name: str):
        train_log = train_logs / f"{name}.jsonl"
        train_log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, TRAIN_LOG_ENV: str(train_log), TIMING_ENV: str(_timing_path(train_log))}
        return _start_kernel(kernel, env, notebooks_dir, train_logs / f"{name}.kernel.log",
                             notebooks_dir / f"{name}.ipynb")

    def run_here(name, params, digest, src, dst, train_log, kernels):
        start, error, details = time.perf_counter(), None, None
        started_ahead = name in kernels
        km = kernels.pop(name) if started_ahead else start_kernel(name)
        later = to_run[to_run.index(name) + 1:]
        if ahead and later:
            kernels[later[0]] = start_kernel(later[0])
        try:
            execute(src, dst, params, km, cwd=notebooks_dir, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - record any failure and go on with the next notebook
            error, details = _error_text(e)
        finish(name, params, digest, dst, train_log, time.perf_counter() - start, error, details,
               {"executor": "local", "host": platform.node(), "kernel_started_ahead": started_ahead})

    with _environ(kernel_env), _kernels_stopped() as kernels:
        for name, params, digest, skip in plan:
            src, dst = notebooks_dir / f"{name}.ipynb", out_dir / f"{name}.ipynb"
            if skip:
                old = done[name]
                entries[name] = dict(old, skipped=True)
                report.runs.append(NotebookRun(name, float(old.get("seconds") or 0), True, None, None, dst))
                log(f"{name:<{width}}  {'skipped':>10}  ok (same profile and sources as the earlier run)")
                write_status(None)
                continue
            train_log = train_logs / f"{name}.jsonl"
            train_log.parent.mkdir(parents=True, exist_ok=True)
            train_log.write_text("")
            _timing_path(train_log).unlink(missing_ok=True)
            if pool is not None:  # run later, in parallel; kernels get kernel_env plus their own log
                pool.submit(name, dict(src=str(src), dst=str(dst), parameters=params, kernel=kernel,
                                       cwd=str(notebooks_dir), timeout=timeout,
                                       env={**kernel_env, TRAIN_LOG_ENV: str(train_log),
                                            TIMING_ENV: str(_timing_path(train_log))},
                                       kernel_log=str(train_logs / f"{name}.kernel.log")))
                queued[name] = (params, digest, dst, train_log)
                continue
            run_here(name, params, digest, src, dst, train_log, kernels)
        if pool is not None:
            for name, out in pool.results():
                finish(name, *queued[name], out["seconds"], out["error"], out["details"], out["where"])
    report.total_seconds = time.perf_counter() - t0
    write_status(_now())
    log(_summary(report))
    return report


def apply_overrides(profile: Profile, overrides: dict, notebooks_dir: Path) -> list[str]:
    """Apply ``{parameter: value}`` (``nrc reproduce --set``) to the notebooks of ``profile``.

    ``KEY`` goes to every notebook that declares ``KEY`` with a type that accepts the value;
    ``NOTEBOOK.KEY`` to that notebook only (then :func:`validate_profile` checks the type). Returns
    one note per notebook that declares ``KEY`` with another type and was left alone (e.g.
    ``refine_steps=0`` and T1's list of budgets). Raises ValueError naming a key that no notebook
    declares (or no notebook can take) and the declared ones.
    """
    declared = {}
    for name in profile.notebooks:
        try:
            declared[name] = notebook_parameters(Path(notebooks_dir) / f"{name}.ipynb")
        except (ValueError, OSError):
            declared[name] = {}  # reported by validate_profile
    known = sorted({p for params in declared.values() for p in params})
    notes = []
    for key, value in overrides.items():
        nb, dot, param = key.rpartition(".")
        if dot:
            if nb not in profile.notebooks or param not in declared[nb]:
                raise ValueError(f"--set {key}=...: {nb!r} is not a notebook of profile {profile.name!r} declaring "
                                 f"{param!r}; notebooks: {', '.join(profile.notebooks)}")
            profile.notebooks[nb] = {**profile.notebooks[nb], param: value}
            continue
        users = [n for n in profile.notebooks if key in declared[n]]
        fits = [n for n in users if declared[n][key].accepts(value)]
        if not fits:
            raise ValueError(f"--set {key}={value!r}: no notebook of profile {profile.name!r} declares a parameter "
                             f"{key!r}" + (f" of a type that takes {value!r}" if users else "")
                             + f"; declared parameters: {', '.join(known)}")
        for n in fits:
            profile.notebooks[n] = {**profile.notebooks[n], key: value}
        notes += [f"--set {key}: {n} declares {key}: {declared[n][key].type}; left as is "
                  f"(use --set {n}.{key}=VALUE)" for n in users if n not in fits]
    return notes


def _parse_sets(items) -> dict:
    """``["epochs=1", "refine_steps=0"]`` -> ``{"epochs": 1, "refine_steps": 0}`` (values read as YAML)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set must be KEY=VALUE (e.g. --set epochs=1), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError(f"--set {key.strip()}: {text!r} is not a YAML value (e.g. 1, 0.5, [1, 2], true)") from None
    return out


def _write_summary(path: Path, status: dict) -> None:
    """A Markdown fragment of the run's timings (included by the book's performance page)."""
    rows = ["| notebook | wall s | training s | members trained | members from the cache | |",
            "| --- | ---: | ---: | ---: | ---: | --- |"]
    for e in status["notebooks"]:
        note = ("earlier part of the run" if e.get("skipped") else "") + ("" if e.get("ok") else " FAILED")
        rows.append(f"| {e['name']} | {float(e.get('seconds') or 0):.1f} | {float(e.get('train_seconds') or 0):.1f} "
                    f"| {e.get('members_trained', '')} | {e.get('members_loaded', '')} | {note.strip()} |")
    n_ok = sum(1 for e in status["notebooks"] if e.get("ok"))
    head = (f"Profile `{status['profile']}`: {n_ok} of {len(status['notebooks'])} notebooks ok, "
            f"{float(status['total_seconds']):.0f} s ({float(status['total_seconds']) / 60:.1f} min) of notebook "
            f"wall time in all; device {status['device']}, {status.get('threads')} thread(s), load average "
            f"{status.get('load_average')} at the start; commit `{str(status.get('commit'))[:10]}`"
            + ("" if status.get("finished") else "; **the run has not finished**") + ".")
    split = ["| notebook | wall s | start-up s | data s | training s | analysis s | figures s | other s | analysis share |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    sums = dict.fromkeys(("seconds", "startup", "data", "training", "analysis", "figures", "other"), 0.0)
    for e in status["notebooks"]:
        ph = e.get("phases")
        if not isinstance(ph, dict):
            continue
        wall = float(e.get("seconds") or 0)
        vals = [float(ph.get(k, 0.0)) for k in ("startup", "data", "training", "analysis", "figures", "other")]
        for k, v in zip(sums, [wall] + vals):
            sums[k] += v
        share = f"{vals[3] / wall:.0%}" if wall > 0 else ""
        split.append(f"| {e['name']} | {wall:.1f} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {share} |")
    if len(split) > 2:
        share = f"{sums['analysis'] / sums['seconds']:.0%}" if sums["seconds"] > 0 else ""
        split.append("| **all** | " + " | ".join(f"**{v:.1f}**" for v in sums.values()) + f" | **{share}** |")
        rows += ["", "Where the wall time went (`phases` in `status.json`: kernel start-up from papermill's cell "
                 "times, the rest measured by `nrc.timing` inside the kernel; other = wall minus the rest):", ""] + split
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(head + "\n\n" + "\n".join(rows) + "\n")
    os.replace(tmp, path)


def _merge_entries(kept: list[dict], new: list[dict], order: list[str]) -> list[dict]:
    """Old entries of notebooks not re-run plus the new ones, in profile order (others last)."""
    by_name = {e["name"]: e for e in kept}
    by_name.update({e["name"]: e for e in new})
    rank = {n: i for i, n in enumerate(order)}
    return sorted(by_name.values(), key=lambda e: rank.get(e["name"], len(rank)))


def _summary(report: RunReport) -> str:
    runs = report.runs
    width = max([len(r.name) for r in runs] + [len("notebook")])
    lines = ["", f"{'notebook':<{width}}  {'seconds':>9}  status", f"{'-' * width}  {'-' * 9}  ------"]
    lines += [f"{r.name:<{width}}  {r.seconds:9.1f}  {'ok' if r.ok else 'FAILED'}" for r in runs]
    failed = len(report.failures)
    lines.append(f"{'total':<{width}}  {report.total_seconds:9.1f}  "
                 f"{len(runs) - failed}/{len(runs)} ok")
    for name, text in report.failures.items():
        lines.append(f"\n{name} FAILED:\n" + "\n".join("    " + ln for ln in text.splitlines()))
    if report.status_path:
        lines.append(f"\nstatus: {report.status_path}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# command line


def add_reproduce_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``nrc reproduce`` options to ``parser`` (for mounting as a CLI subcommand)."""
    parser.add_argument("--profile", default="smoke", metavar="NAME|PATH",
                        help="profile name (profiles/NAME.yaml) or YAML path (default: smoke)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this notebook (repeatable); other status entries are kept")
    parser.add_argument("--out", default="book/executed", metavar="DIR",
                        help="executed notebooks, results/ and status.json (default: book/executed)")
    parser.add_argument("--notebooks", default="notebooks", metavar="DIR",
                        help="source notebooks (default: notebooks)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="per-cell execution timeout (default: none)")
    parser.add_argument("--threads", default="auto", metavar="N|auto",
                        help="intra-op threads of a CPU profile's kernels (default: auto = idle cores)")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="rerun every notebook even if an earlier run of the same profile and "
                             "sources left it ok in the output folder")
    parser.add_argument("--list", action="store_true",
                        help="list the profile's notebooks and their parameters, run nothing")
    parser.add_argument("--set", dest="set", action="append", metavar="KEY=VALUE",
                        help="override a parameter in every notebook that declares it, e.g. --set epochs=1 "
                             "(repeatable; the value is read as YAML)")
    from nrc.executors import add_executor_arguments

    add_executor_arguments(parser)
    return parser


def _fmt(value) -> str:
    return repr(value)


def _list(profile: Profile, notebooks_dir: Path, out=print) -> int:
    out(f"profile {profile.name!r}: {profile.description or ''} (device: {profile.device or 'unspecified'})")
    for name, values in profile.notebooks.items():
        out(f"\n{name}")
        try:
            params = notebook_parameters(notebooks_dir / f"{name}.ipynb")
        except (ValueError, OSError) as e:
            out(f"    ! {e}")
            continue
        width = max((len(p) for p in params), default=0)
        for p in params.values():
            val = f"{_fmt(p.default)}"
            if p.name == "profile":
                val = f"{_fmt(profile.name)}  (default {_fmt(p.default)})"
            elif p.name in values:
                val = f"{_fmt(values[p.name])}  (default {_fmt(p.default)})"
            out(f"    {p.name:<{width}} : {p.type} = {val}" + (f"  # {p.help}" if p.help else ""))
        for key in values:
            if key not in params:
                out(f"    ! unknown parameter {key!r}")
    return 0


def run_reproduce(args: argparse.Namespace) -> int:
    """Run ``nrc reproduce`` from parsed arguments; returns the exit code
    (0 all ok, 1 a notebook failed, 2 invalid profile or arguments)."""
    notebooks_dir = Path(args.notebooks)
    try:
        profile = load_profile(args.profile, notebooks_dir)
        overrides = _parse_sets(getattr(args, "set", None))
        if args.list:  # what would run: the profile with the --set overrides, validated
            if overrides:
                for note in apply_overrides(profile, overrides, notebooks_dir):
                    print(f"note: {note}", file=sys.stderr)
                validate_profile(profile, notebooks_dir)
            return _list(profile, notebooks_dir)
        threads = getattr(args, "threads", "auto")
        if threads != "auto" and not (str(threads).isdigit() and int(threads) >= 1):
            raise ValueError(f"--threads must be 'auto' or an integer >= 1, got {threads!r}")
        from nrc.executors import executor_from_args

        executor = executor_from_args(args, profile.raw.get("cluster"))
        report = reproduce(profile, only=args.only, notebooks_dir=notebooks_dir, out_dir=args.out,
                           kernel=args.kernel, timeout=args.timeout, threads=threads,
                           resume=getattr(args, "resume", True), executor=executor,
                           overrides=overrides)
    except (ProfileError, FileNotFoundError, ValueError) as e:
        print(f"nrc reproduce: {e}", file=sys.stderr)
        return 2
    return 0 if report.ok else 1
