"""Damaged files nrc wrote itself: reported by name, moved aside, recomputed; never a dead end."""
import warnings

import numpy as np
import pytest
import torch

from conftest import write_notebook

import nrc
from nrc.safeload import NrcWarning

ARCH = nrc.Architecture((3, 4, 2))
CONFIG = nrc.TrainConfig(loss="mse", epochs=20, batch_size=8, checkpoint_every=5)
MEMBERS = [{"weight_decay": 0.1, "seed": 0}]


@pytest.fixture
def data():
    return nrc.make_gaussian_mixture(num_classes=2, dim=3, per_class=5, spread=0.5, seed=0)


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # cut short
    lambda p: p.write_bytes(b"not a torch file"),                           # overwritten
    lambda p: torch.save({"params": {}}, p),                                 # wrong content
])
def test_damaged_cache_entry_is_named_moved_aside_and_recomputed(damage, tmp_path, data):
    store = nrc.ResultStore(tmp_path / "cache")
    first = store.train(ARCH, data, MEMBERS, CONFIG, progress=False)
    (entry,) = (tmp_path / "cache" / "members").glob("*.pt")
    damage(entry)
    with pytest.warns(NrcWarning, match=f"cache entry {entry} is unreadable") as rec:
        again = store.train(ARCH, data, MEMBERS, CONFIG, progress=False)
    assert "moved it to" in str(rec[0].message) and "recomputing" in str(rec[0].message)
    assert (entry.parent / (entry.name + ".corrupt")).is_file()
    assert entry.is_file()  # recomputed and written again
    for k in first.params:  # the same member, trained again deterministically
        assert torch.equal(first.params[k], again.params[k])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the third run loads cleanly
        store.train(ARCH, data, MEMBERS, CONFIG, progress=False)


def test_damaged_checkpoint_is_named_moved_aside_and_training_restarts(tmp_path, data):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"\x80\x02garbage")
    with pytest.warns(NrcWarning, match=f"checkpoint {ckpt} is unreadable"):
        sweep = nrc.train(ARCH, data, MEMBERS, CONFIG, checkpoint=ckpt, progress=False)
    clean = nrc.train(ARCH, data, MEMBERS, CONFIG, progress=False)
    assert (tmp_path / "ckpt.pt.corrupt").is_file() and not ckpt.exists()
    for k in clean.params:
        assert torch.equal(sweep.params[k], clean.params[k])
    assert not np.asarray(sweep.diverged).any()


def test_cli_prints_a_damaged_entry_as_one_warning_line(tmp_path, capsys):
    from nrc_companion.cli import main

    argv = ["sweep", "--quiet", "--epochs", "2", "--widths", "4", "--classes", "2", "--dim", "3",
            "--per-class", "5", "--weight-decays", "0.1", "--seeds", "0", "--cache-dir", str(tmp_path)]
    assert main(argv) == 0
    (entry,) = (tmp_path / "members").glob("*.pt")
    entry.write_bytes(b"")
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(nrc.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "nrc_companion.cli", *argv], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: cache entry {entry} is unreadable"), err


# ------------------------------------------------------------------------------------------------
# The shared smoke run: a failing notebook fails only its own tests (issue 19)

_INNER_TESTS = '''
import pytest


@pytest.mark.notebook("a_good")
def test_good(record):
    assert record["values"] == {"n": 2}


@pytest.mark.notebook("a_good")
def test_good_again(record):
    assert record["values"]["n"] == 2


@pytest.mark.notebook("b_broken")
def test_broken(record):
    pass


@pytest.mark.notebook("c_needs_cifar")
def test_needs_data(record):
    pass


def test_without_notebooks():
    pass
'''


def _inner_session(tmp_path, profile: str, **env):
    """Run the inner test file under a copy of tests/conftest.py; outcome per test from JUnit XML."""
    import os
    import shutil
    import subprocess
    import sys
    import xml.etree.ElementTree as ET
    from pathlib import Path

    here = Path(__file__).resolve().parent
    session = tmp_path / f"session-{profile}"
    session.mkdir()
    shutil.copy(here / "conftest.py", session / "conftest.py")
    (session / "test_inner.py").write_text(_INNER_TESTS)
    (session / "pytest.ini").write_text("[pytest]\nmarkers =\n    notebook(name): reads a smoke record\n")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NRC_SMOKE", "NRC_REQUIRE"))}
    full_env.update(NRC_SMOKE_NOTEBOOKS=str(tmp_path / "notebooks"),
                    NRC_SMOKE_PROFILE=str(tmp_path / f"{profile}.yaml"),
                    NRC_SMOKE_EXECUTOR="local", **env)  # three tiny notebooks: no Ray cluster for them
    report = session / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={report}", "test_inner.py"], cwd=session, env=full_env,
                          capture_output=True, text=True, timeout=600)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kind = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcomes[case.get("name")] = ("passed", "") if kind is None else (kind.tag, kind.get("message", ""))
    return outcomes, proc.stdout


def test_a_broken_notebook_fails_only_its_own_tests(tmp_path):
    """One notebook raises, another lacks its data set: the rest of the shared run is still tested."""
    import socket

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_notebook(nbdir / "a_good.ipynb", "n: int = 1  # a number",
                   "import nrc_companion\nnrc_companion.record('a_good', {'n': n})")
    write_notebook(nbdir / "b_broken.ipynb", "n: int = 1  # a number", "raise ZeroDivisionError('broken on purpose')")
    write_notebook(nbdir / "c_needs_cifar.ipynb", "dataset: str = 'cifar10'  # data set", "pass")
    (tmp_path / "mixed.yaml").write_text("profile: mixed\ndevice: cpu\nnotebooks:\n  a_good: {n: 2}\n"
                                         "  b_broken: {n: 2}\n  c_needs_cifar: {}\n")
    (tmp_path / "data").mkdir()
    with socket.socket() as sock:  # a port nobody listens on: offline
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    offline = dict(NRC_DATA=str(tmp_path / "data"), NRC_DATA_MIRROR=dead)
    outcomes, text = _inner_session(tmp_path, "mixed", **offline)
    assert outcomes["test_good"] == ("passed", "") and outcomes["test_good_again"] == ("passed", ""), text
    assert outcomes["test_without_notebooks"] == ("passed", ""), text
    kind, message = outcomes["test_broken"]
    assert kind == "failure" and "notebook b_broken failed in the smoke run" in message, text
    assert "ZeroDivisionError: broken on purpose" in message and len(message.splitlines()) <= 12, message
    kind, message = outcomes["test_needs_data"]
    assert kind == "skipped" and len(message.splitlines()) == 1, text
    assert "CIFAR-10" in message and str(tmp_path / "data") in message and "NRC_DATA" in message, message
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()  # the failed download left nothing

    # NRC_REQUIRE_DATA=1 (CI): the same missing data set is a failure, in one line.
    (tmp_path / "data_only.yaml").write_text("profile: data_only\ndevice: cpu\nnotebooks:\n  c_needs_cifar: {}\n")
    outcomes, text = _inner_session(tmp_path, "data_only", NRC_REQUIRE_DATA="1", **offline)
    kind, message = outcomes["test_needs_data"]
    assert kind == "failure" and "NRC_REQUIRE_DATA=1 but c_needs_cifar could not run" in message, text
    assert len(message.splitlines()) == 1, message
