"""The ``nrc`` command line: every bad input is one line on stderr, exit code 2, nothing written.

Each case of issue 9 is asserted on its exit code, its one-line message and on what is left behind.
"""
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_notebook

from nrc_companion.cli import main

#: The parameters cell of the tiny notebooks the reproduce tests write.
TINY_PARAMS = "n: int = 1  # a number"

REPO = Path(__file__).resolve().parents[1]
TINY = ["--quiet", "--epochs", "2", "--widths", "4", "--classes", "2", "--dim", "3", "--per-class", "5",
        "--weight-decays", "0.1", "--seeds", "0"]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything starts training."""
    import nrc.cache

    def fail(*a, **k):
        pytest.fail("training started")

    monkeypatch.setattr(sys.modules["nrc.train"], "train", fail)
    monkeypatch.setattr(nrc.cache, "train", fail)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _left_behind(tmp_path, *names):
    return [n for n in names if (tmp_path / n).exists()]


@pytest.mark.parametrize("argv,needles", [
    (["--weight-decays", "inf,0.1"], ["--weight-decays", "inf", "finite numbers >= 0"]),
    (["--weight-decays", "-0.1"], ["--weight-decays", "-0.1", ">= 0"]),
    (["--lr", "inf"], ["--lr", "'inf'", "finite number > 0"]),
    (["--lr", "nan"], ["--lr", "'nan'", "finite number > 0"]),
    (["--epochs", "ten"], ["--epochs", "'ten'", "integer >= 0"]),
    (["--epochs", "-1"], ["--epochs", "integer >= 0"]),
    (["--widths", "64,0"], ["--widths", "integers >= 1"]),
    (["--widths", "8,8.5"], ["--widths", "8.5"]),
    (["--per-class", "0"], ["--per-class", "integer >= 1"]),
    (["--momentum", "1.5"], ["--momentum", "[0, 1)"]),
    (["--tol", "2"], ["--tol", "(0, 1)"]),
    (["--device", "tpu"], ["--device", "'tpu'", "'cuda:N'"]),
    (["--activation", "swish"], ["--activation", "'swish'"]),
    (["--loss", "hinge"], ["--loss", "'ce' or 'mse'"]),
    (["--seeds", ""], ["--seeds"]),
    (["--residual", "--widths", "8,16"], ["--widths", "residual network"]),
])
def test_bad_flag_is_one_line_exit_2_nothing_written(argv, needles, tmp_path, capsys, no_training):
    code = main(["sweep", *argv, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    assert code == 2
    line = _one_line_error(capsys)
    assert line.startswith("nrc sweep: error: ")
    for n in needles:
        assert n in line, line
    assert _left_behind(tmp_path, "cache", "out") == []


def test_device_cuda_without_cuda(tmp_path, capsys, no_training):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["sweep", "--device", "cuda", "--cache-dir", str(tmp_path / "cache")]) == 2
    line = _one_line_error(capsys)
    assert "--device = 'cuda'" in line and "CUDA is not available" in line and "--device cpu" in line
    assert _left_behind(tmp_path, "cache") == []


@pytest.mark.parametrize("text,needles", [
    ("epochs: ten\n", ["c.yaml: epochs", "'ten'", "integer >= 0"]),
    ("bias: maybe\n", ["c.yaml: bias", "'maybe'", "true or false"]),
    ("weight_decays: [0.1, .inf]\n", ["c.yaml: weight_decays", "inf", "finite"]),
    ("42\n", ["c.yaml", "expected a mapping", "int"]),
    ("- 1\n- 2\n", ["c.yaml", "expected a mapping", "list"]),
    ("epochs: [1, 2\n", ["c.yaml", "not valid YAML", "line"]),
    ("weight_decays: [0.01]\ndropout: 0.5\n", ["c.yaml", "unknown option 'dropout'"]),
])
def test_bad_config_file_is_one_line(text, needles, tmp_path, capsys, no_training):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["sweep", "--config", str(cfg), "--cache-dir", str(tmp_path / "cache")]) == 2
    line = _one_line_error(capsys)
    for n in needles:
        assert n in line, line
    assert _left_behind(tmp_path, "cache") == []


def test_config_values_are_coerced_not_truthy(tmp_path):
    """``bias: "no"`` means no biases (not ``bool("no")``); a scalar where a list is expected is a list."""
    from nrc_companion.config import sweep_options

    cfg = tmp_path / "c.yaml"
    cfg.write_text('bias: "no"\nresidual: "yes"\nweight_decays: 0.1\nseeds: 3\nepochs: "7"\nwidths: 8\n')
    o = sweep_options({}, cfg)
    assert o.bias is False and o.residual is True
    assert o.weight_decays == [0.1] and o.seeds == [3] and o.epochs == 7 and o.widths == [8]
    assert sweep_options({"bias": False}, cfg).bias is False  # flags override the file


def test_config_bias_no_trains_without_biases(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('bias: "no"\nweight_decays: 0.1\n')
    out = tmp_path / "out"
    assert main(["sweep", *TINY, "--config", str(cfg), "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["architecture"]["bias"] is False


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_unwritable_output_stops_before_training(flag, tmp_path, capsys, no_training):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["sweep", flag, str(blocker / "sub")]) == 2
    line = _one_line_error(capsys)
    assert f"{flag} = " in line and str(blocker) in line and "not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_folder(tmp_path, capsys, no_training):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["sweep", "--out", str(ro / "out")]) == 2
        assert "cannot write" in _one_line_error(capsys)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *TINY, "--cache-dir", "rel_cache", "--out", "rel_out"]) == 0
    assert (tmp_path / "rel_out" / "meta.json").is_file()
    assert (tmp_path / "rel_cache" / "members").is_dir()


def test_all_members_diverged_is_a_clean_error(tmp_path, capsys):
    code = main(["sweep", *TINY, "--lr", "1e30", "--no-cache", "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "all 1 members diverged" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_nrc_alone_prints_help_naming_the_sweep(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "nrc sweep" in out and "main job" in out


def test_version(capsys):
    import nrc

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"nrc {nrc.__version__}"


def test_sweep_flag_without_subcommand(capsys):
    assert main(["--epochs", "3"]) == 2
    line = _one_line_error(capsys)
    assert "nrc sweep --epochs 3" in line


def test_unknown_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--dropout", "3"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --dropout" in _one_line_error(capsys)


def test_reproduce_unwritable_out_stops_before_any_notebook(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["reproduce", "--profile", "smoke", "--notebooks", str(REPO / "notebooks"),
                 "--out", str(blocker / "out")]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("nrc reproduce: error: --out = ") and "not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_book_outside_the_repository(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["book"]) == 2
    line = _one_line_error(capsys)
    assert "not the nrc repository root" in line and "--root" in line
    assert list(tmp_path.iterdir()) == []


def test_unexpected_error_has_no_traceback_unless_debug(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("something broke")

    monkeypatch.setattr(sys.modules["nrc.analysis"], "analyze", boom)
    assert main(["sweep", *TINY, "--no-cache"]) == 1
    line = _one_line_error(capsys)
    assert "RuntimeError: something broke" in line and "--debug" in line
    with pytest.raises(RuntimeError):
        main(["--debug", "sweep", *TINY, "--no-cache"])


def test_missing_data_files_error_names_them(tmp_path, capsys):
    assert main(["sweep", "--dataset", "cifar10", "--data-root", str(tmp_path), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path) in err


def test_truncated_mnist_file_is_named_with_the_fix(tmp_path, capsys, need_data):
    import shutil

    raw = need_data("mnist") / "MNIST" / "raw"
    dest = tmp_path / "MNIST" / "raw"
    dest.mkdir(parents=True)
    for f in raw.glob("*.gz"):
        shutil.copyfile(f, dest / f.name)
    bad = dest / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:3000])
    assert main(["sweep", "--dataset", "mnist", "--data-root", str(tmp_path), "--per-class", "5",
                 "--no-cache"]) == 2
    line = _one_line_error(capsys)
    assert str(bad) in line and "truncated or corrupt" in line and "--download" in line


def test_small_sweep_prints_falling_ranks_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["sweep", "--quiet", "--epochs", "60", "--widths", "32,32", "--weight-decays", "1e-3,1e-1",
                 "--seeds", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Numerical rank" in text and "W2" in text
    import pandas as pd

    tidy = pd.read_csv(out / "tidy.csv")
    assert {"member", "site", "layer", "metric", "value", "weight_decay"} <= set(tidy.columns)
    r = tidy[(tidy.metric == "rank_1e-2") & (tidy.site == "W2")].set_index("weight_decay")["value"]
    assert r[0.1] < r[0.001]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["epochs"] == 60 and "commit" in meta and "device" in meta


# ------------------------------------------------------------------------------------------------
# Ctrl-C


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               NRC_PROGRESS="0", OMP_NUM_THREADS="1")
    return env


def _interruptible():
    """Popen's ``preexec_fn``: the child takes SIGINT as Ctrl-C, also when this test runs in a
    background job (``cmd &``), where the shell leaves SIGINT ignored and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(pred, timeout, proc):
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"the process ended early: {proc.communicate()}")
        if time.time() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting")
        time.sleep(0.1)


def test_ctrl_c_in_sweep_says_where_and_rerun_resumes(tmp_path):
    cache = tmp_path / "cache"
    argv = [sys.executable, "-m", "nrc_companion.cli", "sweep", "--quiet", "--epochs", "1500", "--widths", "4",
            "--classes", "2", "--dim", "3", "--per-class", "5", "--weight-decays", "0.1", "--seeds", "0",
            "--cache-dir", str(cache)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_interruptible)
    _wait_for(lambda: any((cache / "checkpoints").glob("*.pt")) if (cache / "checkpoints").is_dir() else False,
              120, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nrc sweep: interrupted during training, at epoch" in lines[0], err
    assert "of 1500" in lines[0] and "run the same command again to resume" in lines[0]
    ckpt = next((cache / "checkpoints").glob("*.pt"))
    epoch = torch.load(ckpt, weights_only=False)["epoch"]
    assert 0 < epoch < 1500
    done = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Numerical rank" in done.stdout
    assert not list((cache / "checkpoints").glob("*.pt"))  # finished: checkpoint removed
    assert len(list((cache / "members").glob("*.pt"))) == 1


def test_ctrl_c_in_reproduce_mid_notebook_then_rerun_completes(tmp_path):
    """SIGINT while the second of two notebooks runs: exit 130, one line naming it; a rerun completes."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_notebook(nbdir / "a_quick.ipynb", TINY_PARAMS, "import nrc_companion",
                   "import nrc_companion\nnrc_companion.record('a_quick', {'n': n})")
    marker = tmp_path / "b_started"
    write_notebook(nbdir / "b_slow.ipynb", TINY_PARAMS, "import nrc_companion",
                   "import os, time, nrc\n"
                   f"marker = {str(marker)!r}\n"
                   "if not os.path.exists(marker):\n"
                   "    open(marker, 'w').close()\n"
                   "    time.sleep(120)\n"
                   "nrc_companion.record('b_slow', {'n': n})")
    profile = tmp_path / "kill.yaml"
    profile.write_text("profile: kill\ndevice: cpu\nnotebooks:\n  a_quick: {n: 2}\n  b_slow: {n: 3}\n")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "nrc_companion.cli", "reproduce", "--profile", str(profile), "--notebooks", str(nbdir),
            "--only", "a_quick", "--only", "b_slow", "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_interruptible)
    _wait_for(marker.exists, 180, proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    nrc_lines = [ln for ln in err.splitlines() if ln.startswith("nrc")]
    assert nrc_lines == [nrc_lines[-1]] and "nrc reproduce: interrupted while running b_slow" in nrc_lines[-1], err
    assert "(1 of 2 notebooks finished" in nrc_lines[-1] and "run the same command again" in nrc_lines[-1]
    assert "Traceback" not in err and "Error" not in err.replace(nrc_lines[-1], ""), err  # no kernel noise
    status = json.loads((out / "status.json").read_text())
    assert [(e["name"], e["ok"]) for e in status["notebooks"]] == [("a_quick", True)]
    assert status["finished"] is None
    done = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    status = json.loads((out / "status.json").read_text())
    assert [(e["name"], e["ok"]) for e in status["notebooks"]] == [("a_quick", True), ("b_slow", True)]
    assert status["finished"]
    records = {p.stem: json.loads(p.read_text())["values"] for p in (out / "results").glob("*.json")}
    assert records == {"a_quick": {"n": 2}, "b_slow": {"n": 3}}


# ------------------------------------------------------------------------------------------------
# A new user's first hour (issue 19): help, the end of the main job, fail-fast reproduce


def test_dataset_and_activation_choices_are_the_library_s(capsys, no_training):
    """``--dataset`` and ``--activation`` allow the loaders' and the models' names (one line, exit 2)."""
    import typing

    from nrc.data import DATASETS
    from nrc.models import ACTIVATIONS
    from nrc_companion.config import SweepOptions, field_types

    types = field_types(SweepOptions)
    assert typing.get_args(types["dataset"]) == DATASETS
    assert set(typing.get_args(types["activation"])) == set(ACTIVATIONS)
    assert main(["sweep", "--dataset", "mnsit"]) == 2
    line = _one_line_error(capsys)
    assert "--dataset = 'mnsit' is not allowed" in line and all(repr(d) in line for d in DATASETS)


def test_sweep_options_come_from_the_model(capsys):
    """Every field of SweepOptions is an option whose help shows its allowed values and default."""
    import argparse
    import dataclasses

    from nrc_companion.cli import add_sweep_arguments
    from nrc_companion.config import SweepOptions, describe, field_types

    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(SweepOptions):
        action = actions[f.name]
        assert action.default is None  # unset flags leave the file's value or the model's default
        assert f.metadata["help"] in action.help
        if field_types(SweepOptions)[f.name] is not bool:
            assert describe(field_types(SweepOptions)[f.name]) in action.help, f.name


def test_sweep_defaults_that_differ_from_train_config_are_stated_in_the_help(capsys):
    """nrc sweep's loss/epochs/batch defaults differ from nrc.TrainConfig's; --help says so, truthfully."""
    import dataclasses

    from nrc.train import TrainConfig
    from nrc_companion.config import SweepOptions, field_defaults

    library, ours = TrainConfig(), field_defaults(SweepOptions)
    stated = {f.name: f.metadata["library_default"] for f in dataclasses.fields(SweepOptions)
              if "library_default" in f.metadata}
    differ = {k for k in ours if hasattr(library, k) and getattr(library, k) != ours[k]}
    assert set(stated) == differ == {"loss", "epochs", "batch_size"}
    assert all(stated[k] == getattr(library, k) for k in stated)
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "nrc.TrainConfig's default: ce" in text and "nrc.TrainConfig's default: 128" in text


def test_reproduce_bad_set_value_is_one_line_exit_2_before_any_notebook(tmp_path, capsys):
    code = main(["reproduce", "--profile", "smoke", "--notebooks", str(REPO / "notebooks"), "--out", str(tmp_path / "o"),
                 "--set", "rank_tol=0.05", "--only", "t8_rank_vs_weight_decay"])
    assert code == 2
    line = _one_line_error(capsys)
    assert ("t8_rank_vs_weight_decay: parameter 'rank_tol' = 0.05 is not allowed: expected 0.01 or 0.001" in line), line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["sweep", "reproduce", "book"])
def test_each_subcommand_help_has_a_description_and_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    usage, description = out.split("\n\n")[:2]
    assert usage.startswith(f"usage: nrc {command}") and len(description.split()) >= 10, out
    examples = out.split("examples:\n", 1)[1].splitlines()
    assert 2 <= sum(ln.startswith(f"  nrc {command}") for ln in examples) <= 3, out


def _best_of(argv, n=3) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(argv, env=_env(), capture_output=True, check=True, timeout=120)
        times.append(time.perf_counter() - start)
    return min(times)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["sweep", "--help"]], ids=" ".join)
def test_help_and_version_load_no_heavy_library_and_return_at_once(argv):
    """``nrc --help``, ``--version`` (and ``nrc sweep --help``) import no torch, pandas, matplotlib or
    pydantic (seconds of import time); timed against a bare ``python -c pass`` on the same machine,
    not in seconds, because the shared CPU's load changes both alike."""
    probe = ("import sys\nfrom nrc_companion.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'pydantic') if m in sys.modules),"
             " file=sys.stderr)" % (argv,))
    proc = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr
    bare = _best_of([sys.executable, "-c", "pass"])
    nrc_time = _best_of([sys.executable, "-m", "nrc_companion.cli", *argv])
    # measured here: 0.12 s against 0.10 s for `python -c pass`; importing torch alone is ~20x that.
    # The bound scales with the machine's load, which slows all three alike (a fixed 0.5 s failed
    # under load, at 0.54 s): a fraction of what importing torch takes at the same moment.
    # `import torch` (seconds) is timed only when the first bound fails
    assert nrc_time < 3 * bare or nrc_time < 0.25 * (heavy := _torch_import_seconds()), \
        f"nrc {' '.join(argv)}: {nrc_time:.2f} s, python -c pass: {bare:.2f} s, import torch: {heavy:.2f} s"


@functools.lru_cache(maxsize=1)
def _torch_import_seconds() -> float:
    return _best_of([sys.executable, "-c", "import torch"], n=2)


def test_sweep_ends_with_its_tables_and_the_next_command_and_a_rerun_says_cached(tmp_path, capsys):
    argv = ["sweep", *TINY, "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    first = capsys.readouterr().out.strip().splitlines()
    assert first[-3].startswith("trained 1 members in ") and f"cached in {tmp_path / 'cache'}" in first[-3]
    assert first[-2].startswith("tables: printed above only; add --out DIR")
    assert first[-1].startswith("next: the same command with --out runs/sweep")
    assert main(argv + ["--out", str(tmp_path / "out")]) == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert again[0] == f"all 1 members are in the cache {tmp_path / 'cache'}: loading them, no training" \
        or any(ln.startswith("all 1 members are in the cache") for ln in again), again
    loaded = next(ln for ln in again if ln.startswith("loaded all 1 members from the cache"))
    took = float(loaded.split(" in ", 1)[1].split(" s ")[0])  # this run's time, not the training's
    assert "(no training; they took" in loaded and took < 5
    assert again[-2] == f"tables: wrote tidy.csv, members.csv, spectra.csv and meta.json to {tmp_path / 'out'}"
    assert again[-1].startswith("next: the same sweep on MNIST") and "nrc sweep --dataset mnist" in again[-1]
    assert (tmp_path / "out" / "tidy.csv").is_file()


def test_reproduce_refuses_a_cuda_profile_without_cuda_before_any_notebook(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_notebook(nbdir / "a_quick.ipynb", TINY_PARAMS, "import nrc_companion",
                   "import nrc_companion\nnrc_companion.record('a_quick', {'n': n})")
    profile = tmp_path / "gpu.yaml"
    profile.write_text("profile: gpu\ndevice: cuda\nnotebooks:\n  a_quick: {n: 2}\n")
    assert main(["reproduce", "--profile", str(profile), "--notebooks", str(nbdir),
                 "--out", str(tmp_path / "out")]) == 2
    line = _one_line_error(capsys)
    assert line.startswith("nrc reproduce: profile 'gpu' needs CUDA") and "--profile full" in line
    assert not (tmp_path / "out").exists()


def test_paper_profile_is_refused_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["reproduce", "--profile", "paper", "--notebooks", str(REPO / "notebooks"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "profile 'paper' needs CUDA" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_reproduce_failed_line_carries_the_notebooks_reason(tmp_path, capsys):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_notebook(nbdir / "a_bad.ipynb", TINY_PARAMS, "import nrc_companion", "1 / 0")
    profile = tmp_path / "bad.yaml"
    profile.write_text("profile: bad\ndevice: cpu\nnotebooks:\n  a_bad: {n: 2}\n")
    assert main(["reproduce", "--profile", str(profile), "--notebooks", str(nbdir),
                 "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("a_bad "))
    assert line.endswith("FAILED: ZeroDivisionError: division by zero"), out


@pytest.mark.parametrize("state", ["absent", "unfinished"])
def test_book_from_your_own_run_never_suggests_overwriting_the_committed_one(state, tmp_path, capsys):
    run = tmp_path / "runs" / "smoke"
    if state == "unfinished":
        run.mkdir(parents=True)
        (run / "status.json").write_text(json.dumps({"profile": "smoke", "finished": None, "notebooks": []}))
    assert main(["book", "--root", str(REPO), "--executed", str(run)]) == 2
    err = capsys.readouterr().err
    assert "book/published" not in err.replace(str(REPO / "book" / "published"), "?"), err
    assert f"--out {run}" in err and "nrc reproduce --profile smoke" in err, err
