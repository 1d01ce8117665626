"""Damaged files nrc wrote itself: reported by name, moved aside, recomputed; never a dead end."""
import warnings

import numpy as np
import pytest
import torch

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
    from nrc.cli import main

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
    r = subprocess.run([sys.executable, "-m", "nrc.cli", *argv], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: cache entry {entry} is unreadable"), err
