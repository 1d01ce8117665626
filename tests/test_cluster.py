"""Issue 18: sweeps sharded over Ray or SLURM (nrc.executors), tested without a cluster.

Ray runs as a local cluster (``ray.init(num_cpus=2)``); the SLURM path runs through submitit's
local executor (same code: ``AutoExecutor(cluster="local")``), and the sbatch script a real SLURM
would get is written by submitit's own ``SlurmExecutor`` and checked. Workers are killed for real
(``SIGKILL`` from a training callback, mid-shard) to show a killed shard is retried or named,
and that a rerun loses nothing. The Ray and submitit tests skip, with the reason, when the
``[cluster]`` extra is not installed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import nrc
from conftest import benchmark_script, mixture
from nrc.executors import (CLUSTER_KEYS, Executor, ExecutorError, ShardError, member_memory, parse_executor,
                           plan_shards, sbatch_script, start_shard_actors)

REPO = Path(__file__).resolve().parents[1]

try:
    import ray
except ImportError:
    ray = None
try:
    import submitit
except ImportError:
    submitit = None
needs_ray = pytest.mark.skipif(ray is None, reason='ray not installed (pip install "nrc[cluster]")')
needs_submitit = pytest.mark.skipif(submitit is None, reason='submitit not installed (pip install "nrc[cluster]")')
#: Tests that start engines (a Ray cluster, worker processes, submitit jobs, notebook kernels): the
#: slow part of this file; ``-m "not cluster"`` leaves them out.
cluster = pytest.mark.cluster

#: A member trained in a shard equals the same member trained in one stack to this tolerance
#: (absolute, on parameters of size ~0.1-1). On this CPU build it is bitwise equal (asserted
#: separately below): each member's matmuls are the same GEMMs whatever the stack size. On GPUs
#: a different batch count can pick another cuBLAS kernel (another summation order), hence the
#: stated tolerance rather than bitwise.
TOL = 1e-6


def _setup(epochs=3, every=10):
    data = mixture(dim=5, per_class=10)
    arch = nrc.Architecture((5, 8, 8, 3))
    config = nrc.TrainConfig(epochs=epochs, batch_size=10, checkpoint_every=every)
    members = nrc.grid(weight_decay=[1e-3, 1e-2, 3e-2], seed=[0, 1])
    return data, arch, config, members


def _same(a, b, bitwise=False):
    for k in a.params:
        if bitwise:
            assert torch.equal(a.params[k], b.params[k]), k
        else:
            assert float((a.params[k] - b.params[k]).abs().max()) <= TOL, k


def _trained(log: Path) -> int:
    return sum(json.loads(line)["trained"] for line in log.read_text().splitlines() if line.strip())


# ----------------------------------------------------------------------------------------------
# options, shard sizes, the sbatch script (no engine needed to run)


def test_parse_executor_names_json_env_and_errors(monkeypatch):
    monkeypatch.delenv("NRC_EXECUTOR", raising=False)
    assert parse_executor().kind == "local"
    monkeypatch.setenv("NRC_EXECUTOR", "ray")
    assert parse_executor() == Executor(kind="ray")
    spec = Executor(kind="slurm", partition="gpu", gpus_per_shard=1, setup=("module load cuda",))
    monkeypatch.setenv("NRC_EXECUTOR", spec.to_env())
    assert parse_executor() == spec  # what the runner sets for kernels reads back the same
    assert parse_executor({"executor": "ray", "workers": 3}).workers == 3  # a profile's cluster: section
    with pytest.raises(ExecutorError, match=r"unknown executor option\(s\) 'gpus'; allowed: kind, address"):
        parse_executor({"kind": "ray", "gpus": 1})
    with pytest.raises(ExecutorError, match="'kind' must be one of local, ray, slurm, got 'dask'"):
        parse_executor("dask")
    with pytest.raises(ExecutorError, match="'gpus_per_shard' must be 0 or 1"):
        parse_executor({"kind": "slurm", "gpus_per_shard": 2})
    with pytest.raises(ExecutorError, match="'time_limit_min' must be an integer >= 1"):
        Executor(kind="slurm", time_limit_min=0)
    # the shard workers of a reproduce run reach its kernels through the environment, and nowhere else
    spec = Executor(kind="ray", address="10.0.0.1:6379", actors=("nrc-shards-ab-0", "nrc-shards-ab-1"))
    monkeypatch.setenv("NRC_EXECUTOR", spec.to_env())
    assert parse_executor() == spec
    assert "actors" not in CLUSTER_KEYS  # not a profile's cluster: option
    with pytest.raises(ExecutorError, match="'actors' must be empty unless kind is 'ray'"):
        Executor(kind="slurm", actors=("a",))
    with pytest.raises(ExecutorError, match="'actors' must be a list of Ray actor names"):
        Executor(kind="ray", actors="nrc-shards-ab-0")


def test_shard_sizes_follow_the_memory_estimate():
    data, arch, config, members = _setup()
    per, shared = member_memory(arch, config, data.n_train, per_member_data=False)
    P = sum(p[0].numel() for p in nrc.init_params(arch, [0]).values())
    assert per >= 4 * 3 * P and shared == 4 * data.n_train * 5
    # 10 members, 4 slots, a device that fits 3 members per shard -> 4 shards of sizes 3,3,2,2
    gb = (3.5 * per + shared) / 0.5 / 2**30
    sizes, why = plan_shards(10, per, shared, Executor(kind="ray", device_memory_gb=gb, memory_fraction=0.5), slots=4)
    assert sizes == [3, 3, 2, 2] and "3 member(s) fit a shard" in why
    # one slot but only 3 fit: ceil(10 / 3) = 4 shards; a big device and 2 slots: 2 shards of 5
    assert plan_shards(10, per, shared, Executor(kind="ray", device_memory_gb=gb, memory_fraction=0.5), 1)[0] == [3, 3, 2, 2]
    assert plan_shards(10, per, shared, Executor(kind="ray", device_memory_gb=64), 2)[0] == [5, 5]
    assert plan_shards(10, per, shared, Executor(kind="ray", members_per_shard=4), 8)[0] == [4, 3, 3]
    assert plan_shards(10, per, shared, Executor(kind="ray", device_memory_gb=64, max_members_per_shard=2), 1)[0] == [2] * 5
    with pytest.raises(ExecutorError, match="one member needs"):
        plan_shards(10, per, shared, Executor(kind="ray", device_memory_gb=1e-9), 1)
    # a float64 gd refinement over the full batch costs far more per member than SGD alone
    refine = nrc.TrainConfig(epochs=1, batch_size=10, refine="gd", refine_steps=5)
    assert member_memory(arch, refine, data.n_train, False)[0] > per


@needs_submitit
def test_sbatch_script_is_what_slurm_expects(tmp_path):
    spec = Executor(kind="slurm", partition="gpu", gpus_per_shard=1, cpus_per_shard=8, time_limit_min=240,
                    workers=4, mem_gb=64, account="proj", setup=("module load cuda/12",))
    text = sbatch_script(spec, n_shards=10, folder=tmp_path)
    lines = set(text.splitlines())
    for flag in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=240",
                 "--array=0-9%4", "--mem=64GB", "--account=proj", "--job-name=nrc-shard"):
        assert f"#SBATCH {flag}" in lines, (flag, text)
    assert text.startswith("#!/bin/bash") and "module load cuda/12" in lines
    assert f"#SBATCH --output={tmp_path}/%A_%a_0_log.out" in lines  # array logs: <job id>_<array index>
    assert "-m submitit.core._submit" in text and "srun" in text
    # no GPU asked: no GPU flag; an array of one shard has no throttle beyond itself
    text = sbatch_script(Executor(kind="slurm", partition="cpu"), n_shards=1, folder=tmp_path)
    assert "--gpus-per-node" not in text and "#SBATCH --array=0-0%1" in text.splitlines()


def test_missing_engine_says_how_to_install(monkeypatch, capsys):
    from nrc_companion import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli.main(["sweep", "--executor", "ray", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['nrc sweep: error: --executor ray needs ray, which is not installed; install it with: '
                   'pip install "nrc[cluster]" (or: pip install "ray>=2")']
    assert cli.main(["sweep", "--executor", "slurm", "--partition", "gpu", "--time-limit", "soon"]) == 2
    assert capsys.readouterr().err.strip() == "nrc sweep: error: --time-limit must be an integer, got 'soon'"


# ----------------------------------------------------------------------------------------------
# the cache: atomic writes, one trainer per member


def test_two_processes_writing_one_entry_never_damage_it(tmp_path):
    """Two writers replace the same entry 15 times each while this process reads it: every read
    sees one writer's whole entry (unique temporary files, atomic rename)."""
    path = tmp_path / "members" / "k.pt"
    code = textwrap.dedent(f"""
        import sys, torch
        from pathlib import Path
        from nrc.cache import atomic_write
        w = int(sys.argv[1])
        for i in range(15):
            atomic_write({{"w": w, "x": torch.full((20000 * (1 + w),), float(w))}}, Path({str(path)!r}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)]) for w in (0, 1)]
    reads = 0
    while any(p.poll() is None for p in procs):
        if path.exists():
            e = torch.load(path, weights_only=False)
            assert e["x"].numel() == 20000 * (1 + e["w"]) and bool((e["x"] == e["w"]).all())
            reads += 1
        time.sleep(0.002)  # leave the CPU to the writers
    assert [p.returncode for p in procs] == [0, 0] and reads > 0
    assert not list(tmp_path.glob("**/*.tmp"))


def test_two_processes_sharing_a_sweep_train_each_member_once(tmp_path):
    """Two processes ask for the same sweep at once: the member locks let one train, the other
    waits and loads; both get the same numbers."""
    code = textwrap.dedent("""
        import os, sys, torch, nrc
        data = nrc.make_gaussian_mixture(num_classes=3, dim=5, per_class=10, spread=0.5, seed=0)
        arch = nrc.Architecture((5, 8, 8, 3))
        config = nrc.TrainConfig(epochs=30, batch_size=10)
        sweep = nrc.ResultStore(sys.argv[1]).train(arch, data, nrc.grid(weight_decay=[1e-3, 1e-2], seed=[0, 1]),
                                                   config, progress=False, executor="local")
        torch.save(sweep.params, sys.argv[2])
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for i in (0, 1):
        env_i = dict(env, NRC_TRAIN_LOG=str(tmp_path / f"log{i}.jsonl"))
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cache"), str(tmp_path / f"p{i}.pt")],
                                      env=env_i))
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert _trained(tmp_path / "log0.jsonl") + _trained(tmp_path / "log1.jsonl") == 4  # each member once
    p0, p1 = (torch.load(tmp_path / f"p{i}.pt") for i in (0, 1))
    assert all(torch.equal(p0[k], p1[k]) for k in p0)
    assert len(list((tmp_path / "cache" / "members").glob("*.pt"))) == 4


# ----------------------------------------------------------------------------------------------
# Ray (a local cluster of 2 CPUs)


@pytest.fixture(scope="module")
def local_ray():
    if ray is None:
        pytest.skip('ray not installed (pip install "nrc[cluster]")')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # the killing callbacks live in this test module, which Ray's workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _cpus_free(n: int, within: float = 30.0) -> bool:
    """Whether the local Ray cluster has ``n`` CPUs free within ``within`` seconds (``ray.kill`` of an
    actor returns before its CPUs do)."""
    deadline = time.time() + within
    while ray.available_resources().get("CPU", 0) < n and time.time() < deadline:
        time.sleep(0.2)
    return ray.available_resources().get("CPU", 0) == n


class KillOnce:
    """A training callback that SIGKILLs its own process (the worker) after epoch ``at`` of the first
    shard that gets there; a marker file (O_EXCL) makes it fire once across workers and retries."""

    def __init__(self, marker: Path, at: int = 1):
        self.marker, self.at = str(marker), at

    def __call__(self, epoch, params, diverged):
        if epoch == self.at:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)


@cluster
def test_ray_shards_land_in_the_cache_with_the_same_numbers(local_ray, tmp_path):
    data, arch, config, members = _setup()
    ref = nrc.train(arch, data, members, config, progress=False)
    # no shared filesystem: checkpoints in the workers' temp folders, entries written by this driver
    spec = Executor(kind="ray", workers=2, shared_fs=False)
    store = nrc.ResultStore(tmp_path)
    sweep = store.train(arch, data, members, config, executor=spec, progress=False)
    _same(sweep, ref)
    _same(sweep, ref, bitwise=True)  # on this CPU: see TOL
    entries = [torch.load(p, weights_only=False) for p in (tmp_path / "members").glob("*.pt")]
    assert len(entries) == 6 and {e["meta"]["where"]["executor"] for e in entries} == {"ray"}
    assert len({e["meta"]["where"]["pid"] for e in entries}) == 2  # two shards, two worker processes
    assert not list(tmp_path.glob("checkpoints/*.pt"))
    # a shard no node can take is refused in one line instead of waiting for ever
    from nrc.executors import ray_init

    with pytest.raises(ExecutorError, match=r"^--gpus-per-shard = 1 but the Ray cluster has 0 GPU\(s\)"):
        ray_init(Executor(kind="ray", gpus_per_shard=1))
    with pytest.raises(ExecutorError, match=r"^--cpus-per-shard = 8 but the Ray cluster has 2 CPU\(s\)"):
        store.train(arch, data, [{"weight_decay": 0.5}], config, executor=Executor(kind="ray", cpus_per_shard=8))


@cluster
def test_ray_killed_worker_is_retried_and_resumes(local_ray, tmp_path):
    data, arch, config, members = _setup(epochs=4, every=1)
    ref = nrc.train(arch, data, members, config, progress=False)
    spec = Executor(kind="ray", workers=2, retries=1)
    sweep = nrc.ResultStore(tmp_path).train(arch, data, members, config, executor=spec, progress=False,
                                            callback=KillOnce(tmp_path / "killed"))
    assert (tmp_path / "killed").exists()  # a worker really died mid-shard
    _same(sweep, ref)  # the retry resumed from the epoch-2 checkpoint and ended where one stack ends


@cluster
def test_ray_killed_shard_is_named_and_a_rerun_trains_only_it(local_ray, tmp_path, monkeypatch):
    data, arch, config, members = _setup(epochs=4, every=1)
    ref = nrc.train(arch, data, members, config, progress=False)
    store = nrc.ResultStore(tmp_path / "cache")
    spec = Executor(kind="ray", workers=2, retries=0)
    with pytest.raises(ShardError, match=r"1 of 2 shard\(s\) failed \(shard [12]/2 \[wd=") as err:
        store.train(arch, data, members, config, executor=spec, progress=False, callback=KillOnce(tmp_path / "k"))
    assert "running the same command again trains only the missing members" in str(err.value)
    cached = store.cached(arch, config, data, members)
    assert sum(cached) == 3  # the other shard landed
    monkeypatch.setenv("NRC_TRAIN_LOG", str(tmp_path / "log.jsonl"))
    sweep = store.train(arch, data, members, config, executor=spec, progress=False)
    assert _trained(tmp_path / "log.jsonl") == 3  # only the killed shard's members
    _same(sweep, ref)


@cluster
def test_a_runs_shard_workers_serve_every_sweep_and_a_killed_one_restarts_and_resumes(local_ray, tmp_path):
    """``nrc reproduce --executor ray`` starts long-lived shard workers (``Executor.actors``) for its
    kernels: two sweeps trained through them run in the same two processes (no new worker, no new
    torch import per kernel); a worker killed mid-shard is restarted, its shard resumes from its
    checkpoint and ends where one stack ends; once killed by the run, they give their CPUs back."""
    data, arch, config, members = _setup(epochs=4, every=1)
    ref = nrc.train(arch, data, members, config, progress=False)
    names = [f"test-shards-{os.getpid()}-{i}" for i in range(2)]
    spec = Executor(kind="ray", workers=2, retries=1)
    actors = start_shard_actors(spec, names)
    through = spec.replace(actors=tuple(names))  # what a kernel of the run gets
    try:
        pids = []
        for run in ("a", "b"):
            store = nrc.ResultStore(tmp_path / run)
            _same(store.train(arch, data, members, config, executor=through,
                              progress=False), ref, bitwise=True)
            entries = [torch.load(p, weights_only=False) for p in (tmp_path / run / "members").glob("*.pt")]
            assert len(entries) == 6 and {e["meta"]["where"]["executor"] for e in entries} == {"ray"}
            pids.append({e["meta"]["where"]["pid"] for e in entries})
        assert len(pids[0]) == 2 and pids[1] == pids[0]  # the same two processes served both sweeps
        sweep = nrc.ResultStore(tmp_path / "killed").train(arch, data, members, config, progress=False,
                                                           executor=through,
                                                           callback=KillOnce(tmp_path / "marker"))
        assert (tmp_path / "marker").exists()  # a shard worker really died mid-shard
        _same(sweep, ref)
    finally:
        for actor in actors:
            ray.kill(actor)
    assert _cpus_free(2)
    with pytest.raises(ExecutorError, match=r"^executor option 'actors': .*nrc reproduce run that started them"):
        nrc.ResultStore(tmp_path / "gone").train(arch, data, members, config, progress=False, executor=through)


# ----------------------------------------------------------------------------------------------
# SLURM through submitit's local executor


@cluster
@needs_submitit
def test_submitit_local_jobs_retry_a_killed_job_and_match_one_stack(tmp_path):
    submitit_cloudpickle = pytest.importorskip("cloudpickle")
    submitit_cloudpickle.register_pickle_by_value(sys.modules[__name__])
    data, arch, config, members = _setup(epochs=4, every=1)
    ref = nrc.train(arch, data, members, config, progress=False)
    spec = Executor(kind="slurm", slurm_cluster="local", workers=2, retries=1, log_folder=str(tmp_path / "logs"))
    sweep = nrc.ResultStore(tmp_path / "cache").train(arch, data, members, config, executor=spec, progress=False,
                                                      callback=KillOnce(tmp_path / "killed"))
    assert (tmp_path / "killed").exists()
    _same(sweep, ref)
    entries = [torch.load(p, weights_only=False) for p in (tmp_path / "cache" / "members").glob("*.pt")]
    assert {e["meta"]["where"]["executor"] for e in entries} == {"slurm"}
    assert list((tmp_path / "logs").glob("*_result.pkl"))  # results came back through submitit's pickles


# ----------------------------------------------------------------------------------------------
# profiles and nrc reproduce


def test_paper_profile_validates_and_has_a_cluster_section():
    from nrc_companion.profiles import load_profile, validate_profile

    profile = load_profile(REPO / "profiles" / "paper.yaml", REPO / "notebooks")
    validate_profile(profile, REPO / "notebooks")
    spec = parse_executor({"kind": "slurm", **profile.raw["cluster"]})
    assert spec.gpus_per_shard == 1 and spec.partition
    text = (REPO / "profiles" / "paper.yaml").read_text()
    assert "SPEC section 4.5" not in text and "SPEC" not in profile.description


def test_set_overrides_every_notebook_that_declares_the_parameter(tmp_path, capsys):
    from nrc_companion.profiles import load_profile, validate_profile
    from nrc_companion.cli import main
    from nrc_companion.runner import apply_overrides

    profile = load_profile(REPO / "profiles" / "paper.yaml", REPO / "notebooks")
    # the overrides of the CPU run of book/cluster.md: budgets tied to epochs follow them down
    notes = apply_overrides(profile, {"epochs": 1, "refine_steps": 0, "t1_stationarity.refine_steps": [0],
                                       "early_epochs": 1, "e8_theorem_a_bites.checkpoints": [0]},
                             REPO / "notebooks")
    with_epochs = [n for n, v in profile.notebooks.items() if "epochs" in v]
    assert len(with_epochs) >= 15 and all(profile.notebooks[n]["epochs"] == 1 for n in with_epochs)
    assert profile.notebooks["t2_rank_tcv_bound"]["refine_steps"] == 0
    assert profile.notebooks["t1_stationarity"]["refine_steps"] == [0]  # its list type: set by name
    assert notes == ["--set refine_steps: t1_stationarity declares refine_steps: list; left as is "
                     "(use --set t1_stationarity.refine_steps=VALUE)"]
    validate_profile(profile, REPO / "notebooks")
    code = main(["reproduce", "--profile", str(REPO / "profiles" / "paper.yaml"), "--notebooks", str(REPO / "notebooks"),
                 "--out", str(tmp_path), "--set", "epoch=1"])
    assert code == 2
    assert "no notebook of profile 'paper' declares a parameter 'epoch'" in capsys.readouterr().err


def test_the_documented_paper_cpu_command_is_what_the_benchmark_runs_and_it_validates(capsys):
    """``benchmarks/paper_cpu_run.py`` runs the command of book/cluster.md as written there; that
    command, with ``--list``, validates the paper profile with its overrides and lists the values
    the run uses: one epoch wherever a notebook trains by epochs, E4's 200 kept."""
    from nrc_companion.cli import main

    argv = benchmark_script("paper_cpu_run").documented_command()
    assert argv[:4] == ["nrc", "reproduce", "--profile", "paper"] and "--executor" in argv
    assert main(argv[1:] + ["--notebooks", str(REPO / "notebooks"), "--list"]) == 0
    listed = capsys.readouterr().out
    epochs = dict(re.findall(r"^(\w+)\n(?:    .*\n)*?    epochs +: int = (\d+)", listed, re.M))
    assert len(epochs) >= 15, listed[:2000]
    assert {n: int(e) for n, e in epochs.items() if e != "1"} == {"e4_no_loss_barrier": 200}
    # a value the overrides leave out of range fails the listing too, as it would fail the run
    assert main(["reproduce", "--profile", "paper", "--notebooks", str(REPO / "notebooks"), "--set", "epochs=1",
                 "--list"]) == 2
    assert "early_epochs" in capsys.readouterr().err


NOTEBOOK = '''\
import nrc
import nrc_companion
data = nrc.make_gaussian_mixture(num_classes=3, dim=5, per_class=10, spread=0.5, seed=0)
arch = nrc.Architecture((5, 8, 3))
sweep = nrc.ResultStore().train(arch, data, nrc.grid(weight_decay=[1e-3, 1e-2], seed=[0, 1]),
                                nrc.TrainConfig(epochs=epochs, batch_size=10), progress=False)
nrc_companion.record(NAME, {"loss": float(sweep.history["loss"][-1].mean())}, glue=False)
'''


@cluster
def test_reproduce_on_ray_runs_notebooks_in_parallel_and_trains_a_shared_sweep_once(local_ray, tmp_path,
                                                                                   monkeypatch):
    import nbformat

    from nrc_companion.runner import reproduce

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in ("a", "b"):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell("epochs: int = 3  # epochs", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(f"NAME = {name!r}\n" + NOTEBOOK)]
        nbformat.write(nb, str(nbdir / f"{name}.ipynb"))
    (tmp_path / "p.yaml").write_text("profile: p\ndevice: cpu\nnotebooks:\n  a: {}\n  b: {}\n")
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))
    report = reproduce(str(tmp_path / "p.yaml"), notebooks_dir=nbdir, out_dir=tmp_path / "out", threads=1,
                       executor=Executor(kind="ray", workers=2), overrides={"epochs": 2}, log=lambda s: None)
    assert report.ok, report.failures
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    entries = {e["name"]: e for e in status["notebooks"]}
    assert {e["where"]["executor"] for e in entries.values()} == {"ray"}
    assert all(e["parameters"]["epochs"] == 2 for e in entries.values())
    assert sum(e["members_trained"] for e in entries.values()) == 4  # the shared sweep trained once
    assert sum(e["members_loaded"] for e in entries.values()) == 4
    assert _cpus_free(2)  # the run's shard workers ended with it


@cluster
def test_reproduce_smoke_profile_on_ray_runs_every_notebook_and_trains_each_member_once(smoke_run):
    """``nrc reproduce --profile smoke --executor ray`` on a local Ray cluster of 2 CPUs: every notebook
    ok, run on Ray, and no cache member trained twice although notebooks share sweeps (T2, T3 and
    T4 read one): the members trained, summed over every notebook's training log, equal the
    entries in the (fresh) cache, and the entries say they were trained in Ray shards.

    This is the session's one smoke run (``tests/conftest.py``, :func:`conftest.smoke_executor`),
    whose records the notebook tests read too."""
    from nrc_companion.profiles import load_profile

    if smoke_run.executor != "ray":
        pytest.skip("the session's smoke run ran locally (Ray not installed, or NRC_SMOKE_EXECUTOR=local)")
    assert not smoke_run.failures and not smoke_run.left_out, (smoke_run.failures, smoke_run.left_out)
    entries = json.loads((smoke_run.out / "status.json").read_text())["notebooks"]
    assert [e["name"] for e in entries] == list(load_profile("smoke", REPO / "notebooks").notebooks)
    assert all(e["ok"] and e["where"]["executor"] == "ray" for e in entries)
    files = list((smoke_run.out / "cache" / "members").glob("*.pt"))
    trained = sum(e["members_trained"] for e in entries)
    assert trained == len(files) > 0  # a member trained twice would count twice but lie once on disk
    where = [torch.load(p, weights_only=False)["meta"]["where"] for p in files]
    assert {w["executor"] for w in where} == {"ray"}
    # every kernel's shards went to the run's 2 shard workers: 2 processes, not new ones per kernel
    assert len({w["pid"] for w in where}) <= 2
    readers = [e["name"] for e in entries if e["members_trained"] == 0 and e["members_loaded"] > 0]
    assert readers  # notebooks whose sweep another notebook trained: loaded, not trained again
