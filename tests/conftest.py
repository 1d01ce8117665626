"""Shared fixtures: real data sets, and one smoke run of all notebooks read by the notebook tests.

Data. A test that needs a real data set asks the ``need_data`` fixture for it. A data set found
under the data root (``$NRC_DATA``, else ``../shared/data`` beside the checkout, else
``~/.cache/nrc/data``; Fashion-MNIST also in Debian's package folder) is used as is; a missing one
is downloaded there, md5-checked, when the machine is online. Offline and missing, the test is
skipped with one line naming the data set, the folder and the layout expected, unless
``NRC_REQUIRE_DATA=1`` (set by ``.ci/run``), which turns that skip into a failure.

Smoke run. The notebook tests read the records of one run of the ``smoke`` profile, shared by
the session. Notebooks whose data set is unavailable are left out of the run (their tests skip
as above); a notebook that fails fails only its own tests, with its own error in a few lines.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXECUTED = REPO / "book" / "executed"

# Offline data: MNIST lies in ../shared/data beside a checkout of this project (see README).
if not os.environ.get("NRC_DATA") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["NRC_DATA"] = str(REPO.parent / "shared" / "data")
os.environ.setdefault("NRC_PROGRESS", "0")
# One intra-op thread per process, for this session and every process it starts (set before
# anything imports torch or NumPy). The session's smoke run keeps both cores of a 2-core CI machine
# busy beside the tests, and a process whose OpenMP/BLAS threads outnumber the free cores spends
# its time in spin-waiting barriers: measured on this project's 2-core machine with one core busy,
# test_theorem's stationarity test, test_train's L-BFGS test and test_landscape took 114 s with two
# threads and 6.7 s with one. A caller's own setting is kept. Tests of thread handling set theirs.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

#: The layout each data set needs under the data root (torchvision's), for the skip message.
LAYOUT = {
    "mnist": "MNIST/raw/ (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
             "t10k-labels-idx1-ubyte.gz)",
    "fashion-mnist": "FashionMNIST/raw/ (the same four idx .gz names; or Debian's dataset-fashion-mnist)",
    "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch)",
}
TITLE = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# Seconds per download attempt: offline, a machine with a black-holed network must not spend the
# data loader's 60 s per try before the test is skipped.
_PROBE_TIMEOUT_S = 15
_DATA_PROBLEMS: dict[str, str | None] = {}


def require_data() -> bool:
    """``NRC_REQUIRE_DATA=1``: a missing data set fails its tests instead of skipping them."""
    return os.environ.get("NRC_REQUIRE_DATA", "") not in ("", "0")


def data_problem(name: str) -> str | None:
    """None when data set ``name`` can be loaded (found, or downloaded now); else one line why not.

    Tried once per session: loading reads the files when present, otherwise downloads them
    (md5-checked, into the data root) first.
    """
    if name not in _DATA_PROBLEMS:
        from nrc import data
        from nrc.data import download

        saved = download.TIMEOUT_S
        download.TIMEOUT_S = _PROBE_TIMEOUT_S
        try:
            data.load_dataset(name, per_class=1, test_per_class=0, download=True)
            _DATA_PROBLEMS[name] = None
        except Exception as err:  # noqa: BLE001 - any failure is the one line the skip shows
            last = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            cause = next((ln for ln in last if "://" in ln), last[0] if last else type(err).__name__)
            cause = re.sub(r"https?://([^/\s]+)\S*", r"\1", cause)  # the host says enough
            _DATA_PROBLEMS[name] = (
                f"{TITLE[name]} is not in the data root {data.data_root()} and could not be downloaded "
                f"({cause[:200]}); offline, set NRC_DATA to a folder holding {LAYOUT[name]}")
        finally:
            download.TIMEOUT_S = saved
    return _DATA_PROBLEMS[name]


def skip_without(name: str) -> None:
    """Skip (or, with ``NRC_REQUIRE_DATA=1``, fail) the calling test when data set ``name`` is missing."""
    why = data_problem(name)
    if why is None:
        return
    if require_data():
        pytest.fail(f"NRC_REQUIRE_DATA=1 but {why}", pytrace=False)
    pytest.skip(why)


def mixture(num_classes: int = 3, dim: int = 6, per_class: int = 16, spread: float = 0.5, seed: int = 0, **kw):
    """The tests' small synthetic data set: :func:`nrc.make_gaussian_mixture` with these defaults
    (3 well-separated classes in 6 dimensions, 16 samples each); ``kw`` goes to it as well."""
    import nrc

    return nrc.make_gaussian_mixture(num_classes=num_classes, dim=dim, per_class=per_class, spread=spread,
                                     seed=seed, **kw)


def benchmark_script(name: str):
    """The module ``benchmarks/<name>.py`` (the benchmark scripts are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_notebook(path: Path, parameters: str | None, *cells: str, extra_parameters: str | None = None) -> Path:
    """Write a notebook to ``path`` (folders made): a Python 3 kernel, the ``parameters``-tagged
    cell ``parameters`` (none when ``None``; a second one with ``extra_parameters``), then one code
    cell per entry of ``cells``. Returns ``path``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": ["parameters"]})
                for src in (parameters, extra_parameters) if src is not None]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def need_data():
    """``need_data(name)`` -> the data root holding ``name``; skips the test when unavailable."""
    from nrc.data import data_root

    def need(name: str) -> Path:
        skip_without(name)
        return data_root()

    return need


# --------------------------------------------------------------------------------------------
# The smoke run


def notebook_datasets(profile, notebooks_dir: Path) -> dict[str, set[str]]:
    """Notebook -> the real data sets it loads under ``profile`` (from ``dataset``/``datasets``)."""
    from nrc_companion.profiles import notebook_parameters

    needs = {}
    for name, values in profile.notebooks.items():
        params = notebook_parameters(notebooks_dir / f"{name}.ipynb")
        found = set()
        for key in ("dataset", "datasets"):
            if key in params:
                value = values.get(key, params[key].default)
                found.update(value if isinstance(value, (list, tuple)) else [value])
        needs[name] = {d for d in found if d in TITLE}
    return needs


@dataclass
class SmokeRun:
    """Where the smoke run lies, which notebooks failed in it or were left out of it, and where it ran."""

    out: Path
    failures: dict[str, str] = field(default_factory=dict)  # notebook -> its error, a few lines
    left_out: dict[str, str] = field(default_factory=dict)  # notebook -> why (a data set missing)
    executor: str = "local"  # "ray": `nrc reproduce --executor ray` on a local Ray cluster of 2 CPUs


def smoke_executor() -> str:
    """Where the session's smoke run executes: ``"ray"`` where Ray is installed, else ``"local"``.

    With the ``cluster`` extra of the README's test command the one smoke run of the session is
    ``nrc reproduce --profile smoke --executor ray`` (2 single-CPU workers, a fresh cache): the
    notebook tests read its records, and ``tests/test_cluster.py`` checks from the same run that
    every notebook ran on Ray and every shared member was trained once. Running the profile a
    second time for that check would double the smoke run's cost. ``NRC_SMOKE_EXECUTOR=local``
    runs it here in one process instead.
    """
    wanted = os.environ.get("NRC_SMOKE_EXECUTOR", "")
    if wanted in ("local", "ray"):
        return wanted
    try:
        import ray  # noqa: F401
    except ImportError:
        return "local"
    return "ray"


def run_smoke(profile_name: str, notebooks_dir: Path, out: Path) -> SmokeRun:
    """Run ``profile_name``'s notebooks into ``out``, leaving out those whose data are missing.

    The run trains into its own cache (``out/cache``), so what it trains is what the notebooks
    ask for today, and the members each notebook trained can be counted.
    """
    from nrc.executors import Executor
    from nrc_companion.profiles import load_profile
    from nrc_companion.runner import reproduce

    profile = load_profile(profile_name, notebooks_dir=notebooks_dir)
    left_out = {}
    for name, datasets in notebook_datasets(profile, notebooks_dir).items():
        why = next((w for w in map(data_problem, sorted(datasets)) if w), None)
        if why:
            left_out[name] = why
    names = [n for n in profile.notebooks if n not in left_out]
    failures = {}
    kind = smoke_executor()
    if names:
        os.environ["NRC_CACHE_DIR"] = str(out / "cache")  # this child process's own, fresh cache
        executor = Executor(kind="ray", workers=2) if kind == "ray" else None
        report = reproduce(profile, only=names, notebooks_dir=notebooks_dir, out_dir=out, resume=False,
                           threads=1 if kind == "ray" else "auto", executor=executor)
        failures = {r.name: r.details or r.error or "failed" for r in report.runs if not r.ok}
    return SmokeRun(out, failures, left_out, kind)


def _smoke_reusable(out: Path) -> str | None:
    """Why the smoke run in ``out`` cannot be reused for the current sources; None when it can.

    Reusable only when its ``status.json`` is of profile ``smoke``, was made at the current git
    commit, lists every notebook of the smoke profile as ok, and each
    entry's source hash matches the current notebook, package and parameters.
    """
    from nrc_companion.profiles import load_profile, validate_profile
    from nrc.provenance import git_state
    from nrc_companion.runner import injected_parameters, source_hash

    try:
        status = json.loads((out / "status.json").read_text())
    except (OSError, ValueError):
        return f"no readable {out / 'status.json'}"
    if status.get("profile") != "smoke":
        return f"{out} holds a run of profile {status.get('profile')!r}, not 'smoke'"
    commit, _ = git_state(REPO)
    if status.get("commit") != commit:
        return f"{out} was run at commit {status.get('commit')}, HEAD is {commit}"
    profile = load_profile("smoke", notebooks_dir=REPO / "notebooks")
    declared = validate_profile(profile, REPO / "notebooks")
    entries = {e.get("name"): e for e in status.get("notebooks", [])}
    for name in profile.notebooks:
        e = entries.get(name)
        if not e or not e.get("ok"):
            return f"{name} is missing or failed in {out / 'status.json'}"
        expected = source_hash(REPO / "notebooks" / f"{name}.ipynb", injected_parameters(profile, name, declared))
        if e.get("source_hash") != expected:
            return f"{name}: sources changed since the smoke run in {out}"
    return None


#: The fixtures that read the smoke run; a session with a test using one of them starts the run.
SMOKE_FIXTURES = {"smoke_run", "smoke_dir", "smoke_records", "record"}
#: What the child process of the smoke run writes beside it: the SmokeRun as JSON, and its output.
SMOKE_RESULT, SMOKE_LOG = "smoke-run.json", "smoke-run.log"


def smoke_child(profile_name: str, notebooks_dir: str, out: str) -> None:
    """In the child process: :func:`run_smoke`, its outcome written to ``out/SMOKE_RESULT``."""
    run = run_smoke(profile_name, Path(notebooks_dir), Path(out))
    tmp = Path(out) / (SMOKE_RESULT + ".tmp")  # renamed into place: a waiting worker never reads half of it
    tmp.write_text(json.dumps({**asdict(run), "out": str(run.out)}))
    tmp.replace(Path(out) / SMOKE_RESULT)


#: Set by the session's main process (the xdist controller, or the only process): the folder that
#: holds the session's one smoke run, shared by every xdist worker.
SHARED_ENV = "NRC_SMOKE_SHARED"
#: The smoke run's process id, written where every worker and the main process can read it.
SMOKE_PID = "smoke-run.pid"


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has set up its factory
def pytest_configure(config):
    """In the session's main process: the folder of the session's one smoke run (in pytest's own
    temporary folder), inherited by xdist workers through the environment."""
    if not hasattr(config, "workerinput"):
        base = config._tmp_path_factory.getbasetemp()  # pytest-N: the workers' folders lie inside it
        os.environ[SHARED_ENV] = str(base / "smoke-run")


def pytest_sessionfinish(session):
    """In the main process: stop a smoke run still going when the session ends (``-x``, Ctrl-C, a
    selection that did not wait for it) and the kernels it started (its own process group)."""
    if hasattr(session.config, "workerinput"):
        return
    try:
        out = Path(os.environ[SHARED_ENV])
        if not (out / SMOKE_RESULT).exists():  # a finished run's pid may belong to another process by now
            os.killpg(int((out / SMOKE_PID).read_text()), signal.SIGKILL)
    except (KeyError, OSError, ValueError):
        pass  # no smoke run, or it has ended


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a finished child not yet reaped is a zombie: count it as ended
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return True


@pytest.fixture(scope="session", autouse=True)
def smoke_started(request):
    """Start the smoke run as the session starts, in a child process, when a test will read it.

    The notebooks then run beside the session's other tests (the book build, the unit tests); the
    first notebook test waits for the run (``smoke_run``). Under pytest-xdist every worker that
    collects such a test asks for it, and the first one starts it: one run per session, in the
    folder the main process chose (``NRC_SMOKE_SHARED``); the main process stops it if the session
    ends first. Yields the folder, or None when no collected test reads the run or
    ``NRC_SMOKE_DONE=1`` reuses an earlier one. ``NRC_SMOKE_PROFILE`` and ``NRC_SMOKE_NOTEBOOKS``
    run another profile / notebook folder (the tests of this fixture use them).
    """
    import fcntl

    if os.environ.get("NRC_SMOKE_DONE") == "1" or not any(
            SMOKE_FIXTURES & set(getattr(item, "fixturenames", ())) for item in request.session.items):
        yield None
        return
    out = Path(os.environ[SHARED_ENV])
    out.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "smoke-run.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker starts the run; the others find its pid
        if not (out / SMOKE_PID).exists():
            notebooks = Path(os.environ.get("NRC_SMOKE_NOTEBOOKS") or REPO / "notebooks").resolve()
            code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import conftest; "
                    f"conftest.smoke_child({os.environ.get('NRC_SMOKE_PROFILE') or 'smoke'!r}, {str(notebooks)!r}, "
                    f"{str(out)!r})")
            with open(out / SMOKE_LOG, "wb") as log:
                proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # its own group: its kernels end with it
            (out / SMOKE_PID).write_text(str(proc.pid))
    yield out


@pytest.fixture(scope="session")
def smoke_run(smoke_started) -> SmokeRun:
    """The smoke run: the one started with the session (waited for here), or an earlier one reused.

    By default the smoke profile is executed (via the runner, in a child process started by
    ``smoke_started``) into a temporary folder, never into the repository. ``NRC_SMOKE_DONE=1``
    reuses the run in ``$NRC_SMOKE_OUT`` (default ``book/executed``) instead, but only when it
    matches the current commit, profile and sources (see :func:`_smoke_reusable`); otherwise the
    test session fails with the reason.
    """
    import time

    if os.environ.get("NRC_SMOKE_DONE") == "1":
        out = Path(os.environ.get("NRC_SMOKE_OUT") or EXECUTED).resolve()
        why = _smoke_reusable(out)
        assert why is None, f"NRC_SMOKE_DONE=1 but the smoke run cannot be reused: {why}"
        where = {(e.get("where") or {}).get("executor") for e in json.loads((out / "status.json").read_text())["notebooks"]}
        return SmokeRun(out, executor="ray" if where == {"ray"} else "local")
    assert smoke_started is not None, "smoke_run is used, but the session did not start the smoke run"
    out = smoke_started
    pid = int((out / SMOKE_PID).read_text())
    while not (out / SMOKE_RESULT).exists() and _alive(pid):
        time.sleep(0.5)  # the run writes its outcome last, then ends
    try:
        found = json.loads((out / SMOKE_RESULT).read_text())
    except (OSError, ValueError):
        tail = (out / SMOKE_LOG).read_text(errors="replace").splitlines()[-30:]
        pytest.fail("the smoke run ended without its outcome; its last lines:\n" + "\n".join(tail), pytrace=False)
    return SmokeRun(Path(found["out"]), found["failures"], found["left_out"], found["executor"])


@pytest.fixture(scope="session")
def smoke_dir(smoke_run) -> Path:
    """Where the smoke run lies."""
    return smoke_run.out


@pytest.fixture(scope="session")
def smoke_records(smoke_dir) -> dict:
    """Every notebook record of the smoke run, by notebook name (failed notebooks have none)."""
    return {p.stem: json.loads(p.read_text()) for p in (smoke_dir / "results").glob("*.json")}


@pytest.fixture
def record(smoke_run, smoke_records, request):
    """The record of the notebook named by the test's ``notebook`` mark.

    Its own failure fails the test with the notebook's error; a notebook left out of the run for
    want of data skips it (fails with ``NRC_REQUIRE_DATA=1``).
    """
    name = request.node.get_closest_marker("notebook").args[0]
    if name in smoke_run.left_out:
        why = smoke_run.left_out[name]
        if not require_data():
            pytest.skip(f"{name} not run: {why}")
        request.node.notebook_failure = f"NRC_REQUIRE_DATA=1 but {name} could not run: {why}"
        return {}
    if name in smoke_run.failures:
        # Reported by pytest_runtest_call below: the test then *fails* (not a set-up error) with
        # the notebook's own error, like any failing assertion of its own.
        request.node.notebook_failure = (f"notebook {name} failed in the smoke run "
                                         f"({smoke_run.out / (name + '.ipynb')}):\n{smoke_run.failures[name]}")
        return {}
    assert name in smoke_records, f"notebook {name} wrote no record (did it run?)"
    return smoke_records[name]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    """Fail a test whose notebook failed in (or, with ``NRC_REQUIRE_DATA=1``, was left out of) the
    smoke run, with that notebook's reason only."""
    failure = getattr(item, "notebook_failure", None)
    if failure:
        pytest.fail(failure, pytrace=False)
