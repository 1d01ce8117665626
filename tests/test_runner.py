"""Tests for nrc_companion.runner (``nrc reproduce``) on two tiny notebooks written into ``tmp_path``.

Kernels take a few seconds to start, so the module executes three notebooks in all: one full run
(one notebook ok, one raising) and one ``--only`` run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from conftest import write_notebook

from nrc_companion.profiles import ProfileError
from nrc_companion.cli import main
from nrc_companion.runner import RunReport, add_reproduce_arguments, reproduce

pytest.importorskip("papermill")

OK_BODY = '''\
import json, os, sys
from pathlib import Path
heavy = sorted(m for m in ("torch", "pandas", "matplotlib", "seaborn", "scipy") if m in sys.modules)
out = Path(os.environ["NRC_RESULTS_DIR"])
out.mkdir(parents=True, exist_ok=True)
env = {k: os.environ.get(k) for k in ("NRC_PROGRESS", "NRC_PROFILE", "NRC_CACHE_DIR", "NRC_RESULTS_DIR")}
(out / "good.json").write_text(json.dumps({"epochs": epochs, "lr": lr, "tags": tags, "profile": profile,
                                           "cwd": os.getcwd(), "env": env, "heavy": heavy,
                                           "preload_env": os.environ.get("NRC_KERNEL_PRELOAD")}))
print("good done", epochs)
'''

FAIL_BODY = 'print("about to fail")\nraise RuntimeError("boom " + str(n))\n'


@pytest.fixture
def repo(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    write_notebook(nbdir / "good.ipynb",
                   'epochs: int = 1  # epochs\nlr: float = 0.5  # learning rate\n'
                   'tags: list = ["a"]  # tags\nprofile: str = "custom"  # profile name', OK_BODY)
    write_notebook(nbdir / "bad.ipynb", "n: int = 1  # a number", FAIL_BODY)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text(
        "profile: tiny\ndescription: two tiny notebooks\ndevice: cpu\n"
        "notebooks:\n  bad:\n    n: 7\n  good:\n    epochs: 3\n    lr: 2\n    tags: [x, y]\n")
    monkeypatch.delenv("NRC_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def args(repo, *extra):
    """``nrc reproduce`` of the tiny profile: its command line."""
    return ["reproduce", "--profile", "tiny", "--notebooks", str(repo / "notebooks"), "--out", str(repo / "out"), *extra]


def test_invalid_profile_runs_nothing(repo, capsys):
    (repo / "profiles" / "tiny.yaml").write_text(
        "profile: tiny\nextra: 1\nnotebooks:\n  good:\n    epochs: many\n    epoch: 2\n  ghost: {}\n")
    assert main(args(repo)) == 2
    err = capsys.readouterr().err
    for fragment in ("unknown top-level key 'extra'", "good: parameter 'epochs' = 'many' is not allowed: expected an integer",
                     "good: unknown parameter 'epoch'", "unknown notebook 'ghost'",
                     "notebook 'bad'", "missing from the profile"):
        assert fragment in err
    assert not (repo / "out").exists()
    with pytest.raises(ProfileError):
        reproduce("tiny", notebooks_dir=repo / "notebooks", out_dir=repo / "out")


def test_only_unknown_name_lists_valid_names(repo, capsys):
    with pytest.raises(ValueError, match="valid names: bad, good"):
        reproduce("tiny", only=["nope"], notebooks_dir=repo / "notebooks", out_dir=repo / "out")
    assert main(args(repo, "--only", "nope")) == 2
    assert "nope" in capsys.readouterr().err
    assert not (repo / "out").exists()


def test_list_prints_parameters(repo, capsys):
    assert main(args(repo, "--list")) == 0
    out = capsys.readouterr().out
    squeezed = [" ".join(line.split()) for line in out.splitlines()]
    assert "good" in squeezed and "bad" in squeezed
    assert "epochs : int = 3 (default 1) # epochs" in squeezed
    assert "lr : float = 2 (default 0.5) # learning rate" in squeezed
    assert "profile : str = 'tiny' (default 'custom') # profile name" in squeezed
    assert "n : int = 7 (default 1) # a number" in squeezed


def test_full_run_collects_failure_and_writes_status(repo, capsys):
    before = dict(os.environ)
    assert main(args(repo)) == 1
    assert dict(os.environ) == before                               # environment restored
    printed = capsys.readouterr().out
    assert "bad" in printed and "FAILED" in printed and "RuntimeError: boom 7" in printed
    assert "1/2 ok" in printed

    out = repo / "out"
    # the failure did not stop the run: good ran after bad, with the profile's parameters
    result = json.loads((out / "results" / "good.json").read_text())
    assert result["epochs"] == 3 and result["lr"] == 2.0 and isinstance(result["lr"], float)
    assert result["tags"] == ["x", "y"] and result["profile"] == "tiny"
    assert Path(result["cwd"]) == (repo / "notebooks").resolve()
    env = result["env"]
    assert env["NRC_PROGRESS"] == "0" and env["NRC_PROFILE"] == "tiny"
    assert env["NRC_RESULTS_DIR"] == str((out / "results").resolve())
    assert env["NRC_CACHE_DIR"] == str((repo / ".nrc-cache").resolve())
    # the kernel preloaded none of the libraries this notebook does not import, and left no trace
    assert result["heavy"] == [] and result["preload_env"] is None

    # executed copies: both kept, parameters injected, the failed one holds the traceback
    good = nbformat.read(str(out / "good.ipynb"), as_version=4)
    injected = [c for c in good.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "epochs = 3" in injected[0].source and 'profile = "tiny"' in injected[0].source
    bad = nbformat.read(str(out / "bad.ipynb"), as_version=4)
    assert "boom 7" in json.dumps(bad.cells[-1].outputs) or "boom 7" in json.dumps([c.get("outputs") for c in bad.cells])

    status = json.loads((out / "status.json").read_text())
    assert status["profile"] == "tiny" and status["description"] == "two tiny notebooks"
    assert status["profile_device"] == "cpu" and status["device"]
    assert status["python"].count(".") == 2
    assert set(status["versions"]) == {"torch", "numpy", "scipy", "pandas", "matplotlib", "papermill", "nrc"}
    assert status["versions"]["papermill"].startswith("2.")
    assert status["commit"] == "unknown"                            # tmp_path is not a git repository
    assert status["started"].endswith("+00:00") and status["finished"]
    entries = {e["name"]: e for e in status["notebooks"]}
    assert [e["name"] for e in status["notebooks"]] == ["bad", "good"]   # profile order
    assert entries["good"]["ok"] is True and entries["good"]["error"] is None
    assert entries["bad"]["ok"] is False and "RuntimeError: boom 7" in entries["bad"]["error"]
    assert all(e["seconds"] > 0 for e in entries.values())
    assert entries["good"]["parameters"] == {"profile": "tiny", "epochs": 3, "lr": 2.0, "tags": ["x", "y"]}
    assert status["total_seconds"] == pytest.approx(sum(e["seconds"] for e in entries.values()), abs=0.02)


def test_only_merges_into_existing_status(repo, tmp_path):
    out = repo / "out"
    out.mkdir()
    old = {"profile": "tiny", "notebooks": [
        {"name": "bad", "seconds": 1.5, "ok": False, "error": "RuntimeError: old"},
        {"name": "good", "seconds": 9.0, "ok": False, "error": "stale"}]}
    (out / "status.json").write_text(json.dumps(old))
    lines = []
    report = reproduce("tiny", only=["good"], notebooks_dir=repo / "notebooks", out_dir=out, log=lines.append)
    assert isinstance(report, RunReport) and report.ok and report.failures == {}
    assert list(report.times) == ["good"] and report.times["good"] > 0
    assert any(line.startswith("good") and line.rstrip().endswith("ok") for line in lines)
    status = json.loads((out / "status.json").read_text())
    entries = {e["name"]: e for e in status["notebooks"]}
    assert [e["name"] for e in status["notebooks"]] == ["bad", "good"]
    assert entries["bad"] == old["notebooks"][0]                    # kept as it was
    assert entries["good"]["ok"] is True and entries["good"]["seconds"] != 9.0
    assert status["total_seconds"] == pytest.approx(1.5 + entries["good"]["seconds"], abs=0.02)
    assert not (out / "bad.ipynb").exists()                         # only 'good' ran


def test_add_reproduce_arguments_mounts_as_subcommand():
    import argparse
    parser = argparse.ArgumentParser(prog="nrc")
    sub = parser.add_subparsers(dest="command")
    add_reproduce_arguments(sub.add_parser("reproduce"))
    ns = parser.parse_args(["reproduce", "--only", "a", "--only", "b", "--timeout", "30"])
    assert ns.only == ["a", "b"] and ns.timeout == 30.0 and ns.profile == "smoke"
    assert ns.out == "book/executed" and ns.notebooks == "notebooks" and ns.kernel == "python3" and not ns.list


# ----------------------------------------------------------------------------------------------
# resume, training counters, relative paths, threads (issue 12)


def test_resume_skips_ok_notebooks_with_same_sources(repo):
    out = repo / "out"
    reproduce("tiny", notebooks_dir=repo / "notebooks", out_dir=out, log=lambda s: None, threads=1)
    first = json.loads((out / "status.json").read_text())
    good1 = {e["name"]: e for e in first["notebooks"]}["good"]
    # one thread leaves a core idle (on more than one core): the second notebook's kernel started
    # while the first ran; the first's could not
    ahead = {e["name"]: e["where"]["kernel_started_ahead"] for e in first["notebooks"]}
    assert ahead == {"bad": False, "good": (os.cpu_count() or 1) > 1}
    assert good1["skipped"] is False and good1["source_hash"]
    lines = []
    report = reproduce("tiny", only=["good"], notebooks_dir=repo / "notebooks", out_dir=out, log=lines.append)
    good2 = {e["name"]: e for e in json.loads((out / "status.json").read_text())["notebooks"]}["good"]
    assert report.ok and good2["skipped"] is True and good2["seconds"] == good1["seconds"]
    assert any("skipped" in line for line in lines)
    # a changed source is rerun
    src = repo / "notebooks" / "good.ipynb"
    nb = nbformat.read(str(src), as_version=4)
    nb.cells[1].source += "\nprint('changed')\n"
    nbformat.write(nb, str(src))
    reproduce("tiny", only=["good"], notebooks_dir=repo / "notebooks", out_dir=out, log=lambda s: None)
    good3 = {e["name"]: e for e in json.loads((out / "status.json").read_text())["notebooks"]}["good"]
    assert good3["skipped"] is False and good3["source_hash"] != good1["source_hash"]
    # executed copies carry relative papermill paths and no absolute repository path
    text = (out / "good.ipynb").read_text()
    meta = json.loads(text)["metadata"]["papermill"]
    assert not meta["input_path"].startswith("/") and not meta["output_path"].startswith("/")
    assert str(repo.resolve()) not in text


def test_training_counts_from_result_store(tmp_path, monkeypatch):
    import nrc
    from nrc_companion.runner import TRAIN_LOG_ENV, training_counts

    log = tmp_path / "train.jsonl"
    monkeypatch.setenv(TRAIN_LOG_ENV, str(log))
    store = nrc.ResultStore(tmp_path / "cache")
    data = nrc.make_gaussian_mixture(num_classes=3, dim=4, per_class=5, spread=0.5, seed=0)
    arch = nrc.Architecture((4, 6, 3))
    config = nrc.TrainConfig(epochs=2, batch_size=5)
    store.train(arch, data, [{"weight_decay": 0.01, "seed": 0}], config, progress=False)
    store.train(arch, data, [{"weight_decay": 0.01, "seed": 0}, {"weight_decay": 0.1, "seed": 1}], config,
                progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["trained"], r["loaded"]) for r in rows] == [(1, 0), (1, 1)]
    assert all(r["seconds"] > 0 for r in rows)
    counts = training_counts(log)
    assert counts["members_trained"] == 2 and counts["members_loaded"] == 1
    assert counts["train_seconds"] == pytest.approx(sum(r["seconds"] for r in rows), abs=0.01)
    assert training_counts(tmp_path / "absent.jsonl") == {"train_seconds": 0.0, "members_trained": 0,
                                                           "members_loaded": 0}


def test_choose_threads(monkeypatch):
    from nrc_companion.runner import choose_threads

    assert choose_threads(3) == 3 and choose_threads("2") == 2
    with pytest.raises(ValueError, match="--threads"):
        choose_threads(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads("auto") == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert choose_threads("auto") == (os.cpu_count() or 1)
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 0.0, 0.0))
    assert choose_threads("auto") == 1


def test_bad_threads_argument_exits_2(repo, capsys):
    assert main(args(repo, "--threads", "zero")) == 2
    assert "--threads must be 'auto' or an integer >= 1" in capsys.readouterr().err
    assert not (repo / "out").exists()


def test_the_kernel_preloads_what_the_notebook_imports(tmp_path):
    """``preload_for``: the modules of PRELOADED that a notebook's code cells import (``from a
    import b`` names ``a.b``), magics skipped, a cell that does not parse ignored; an unreadable
    notebook gets them all. Every notebook of the book preloads the set-ups and the plots, which
    import torch, pandas, seaborn and matplotlib themselves (see the test below)."""
    from nrc_companion.kernel import PRELOADED, preload_for

    nb = write_notebook(tmp_path / "a.ipynb", None, "%matplotlib inline\nimport numpy as np",
                        "x = 1\nfrom nrc_companion import plots, records as r\n!ls",
                        "def f(:\n    import torch", "from . import seaborn\nimport IPython.display")
    assert preload_for(nb) == ("numpy", "IPython.display", "nrc_companion.records", "nrc_companion.plots")
    assert preload_for(write_notebook(tmp_path / "b.ipynb", "n: int = 1", "import json, nrc_companion")) == ()
    assert preload_for(tmp_path / "missing.ipynb") == PRELOADED
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        wanted = preload_for(path)
        assert {"nrc_companion.setups", "nrc_companion.plots"} <= set(wanted), path.name


def test_the_kernel_binds_its_ports_before_it_preloads(tmp_path):
    """The runner's kernel takes the ports of its connection file before its imports (which last
    seconds): none of them is free while a preloaded module is still loading, so no other process
    can take one in the meantime (the kernel would die with "Address already in use")."""
    import socket
    import subprocess
    import sys
    import time

    from jupyter_client.connect import write_connection_file

    from nrc_companion.kernel import PRELOAD_ENV

    conn, info = write_connection_file(str(tmp_path / "kernel.json"), ip="127.0.0.1")
    started, release = tmp_path / "started", tmp_path / "release"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "slow_preload.py").write_text(
        f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
        f"while not pathlib.Path({str(release)!r}).exists():\n    time.sleep(0.05)\n")
    env = {**os.environ, PRELOAD_ENV: "slow_preload",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "mods"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "nrc_companion.kernel", "-f", conn], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the preloaded module never started loading"
            time.sleep(0.05)
        free = []
        for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", info[name]))
                    free.append(name)
                except OSError:
                    pass
        assert free == [], f"free while the kernel preloads: {free}"
        release.touch()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_the_runners_kernel_preloads_importable_modules():
    """Every module the runner's kernel may import before it answers exists (a stale name would
    kill every kernel at start-up); in a fresh process, the set-ups and the plots, which every
    notebook imports, bring the heavy libraries with them, so their kernels still start with them."""
    import subprocess
    import sys

    from nrc_companion.kernel import PRELOADED

    code = ("import importlib, sys\nimport nrc_companion.setups, nrc_companion.plots\n"
            "print(sorted(m for m in ('torch', 'pandas', 'seaborn', 'matplotlib.pyplot') if m in sys.modules))\n"
            f"for m in {PRELOADED!r}:\n    importlib.import_module(m)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['matplotlib.pyplot',", "'pandas',", "'seaborn',", "'torch']"]
