"""The benchmark scripts' arithmetic, and their committed outputs against their inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import benchmark_script as _script

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def test_sweep_flops_counts_the_products_the_ceiling_benchmark_times():
    """A plain MLP: the floor's count equals the ceiling benchmark's per-step count times the steps;
    a residual one adds a forward, weight- and input-gradient product for each V."""
    floor = _script("full_run_floor")
    ceiling = _script("bench_matmul_ceiling")
    p = {"hidden": [256, 256, 256], "per_class": 1000, "batch_size": 128, "epochs": 50}
    steps = 50 * (10_000 // 128)
    assert floor.sweep_flops(p, 18) == ceiling.step_flops(18, [784, 256, 256, 256, 10], 128) * steps
    res = dict(p, widths=[784, 256, 256, 256, 10])
    extra = 2 * (2 * 256 * 256 * 3) * 128 * steps * 18  # V2, V3: 256 x 256 each, three products
    assert floor.sweep_flops(res, 18, residual=True) == pytest.approx(floor.sweep_flops(p, 18) + extra, rel=0, abs=0)


def test_committed_floor_table_is_what_the_committed_run_and_ceiling_give():
    floor = _script("full_run_floor")
    status = json.loads((REPO / "book" / "published" / "status.json").read_text())
    profile = yaml.safe_load((REPO / "profiles" / "full.yaml").read_text())
    bench = json.loads((BENCH / "matmul_ceiling.json").read_text())
    res = floor.floor(status, profile, bench["summary"]["2"]["best_matmul_gflops"])
    assert json.loads((BENCH / "full_run_floor.json").read_text()) == json.loads(json.dumps(res))
    assert (BENCH / "full_run_floor.md").read_text() == floor.table(res, status, bench)
    # the sweeps counted are the ones that trained large networks, and the run's time is all there
    assert {r["notebook"] for r in res["rows"]} >= {"t2_rank_tcv_bound", "e1_rank_vs_weight_decay",
                                                     "e3_residual_networks"}
    assert res["run_s"] == pytest.approx(sum(e["seconds"] for e in status["notebooks"]))


def test_committed_paper_cpu_run_is_complete_and_quoted_as_measured():
    """The committed CPU run of the paper profile: every notebook of the profile ran, the table the
    book includes is the one its record gives, only E4b failed -- for want of an interpolating
    network, which the probe shows one epoch cannot give -- and the README quotes its numbers."""
    import re

    bench = _script("paper_cpu_run")
    res = json.loads((BENCH / "paper_cpu_run.json").read_text())
    from nrc_companion.profiles import load_profile

    assert [n["name"] for n in res["notebooks"]] == list(load_profile("paper", REPO / "notebooks").notebooks)
    assert res["notebooks_not_run"] == [] and res["dirty"] is False and res["profile"] == "paper"
    assert res["command"] == " ".join(bench.documented_command())
    assert (BENCH / "paper_cpu_run.md").read_text() == bench.table(res)
    failed = {n["name"]: n["error"] for n in res["notebooks"] if not n["ok"]}
    assert set(failed) <= {"e4b_dnc1_optimality"}
    if failed:
        assert "interpolates" in failed["e4b_dnc1_optimality"]
        assert all(r["train_acc"] < 1.0 for r in res["e4b_interpolation_probe"])
    readme = (REPO / "README.md").read_text()
    m = re.search(r"it ran end to end in \*\*(\d+) min\*\*, \*\*(\d+) of (\d+)\*\*", readme)
    assert m, "README lost its sentence on the paper profile's CPU run"
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (
        round(res["wall_seconds"] / 60), res["notebooks_ok"], res["notebooks_total"])


def test_the_paper_runs_sampler_sees_a_child_process_memory():
    """The sampler of ``paper_cpu_run.py`` sums the memory of a process tree: a child holding
    ~200 MB of its own pages shows at least that much, in PSS and in RSS."""
    import subprocess
    import sys

    bench = _script("paper_cpu_run")
    code = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    sampler = bench.Sampler(proc.pid, every=0.2)
    sampler.start()
    proc.wait()
    sampler.stop.set()
    sampler.join()
    got = sampler.summary()
    assert got["samples"] >= 2
    assert got["peak_rss_bytes"] >= got["peak_pss_bytes"] >= 200 * 2**20
    assert got["load_average_1min"]["max"] >= got["load_average_1min"]["min"] >= 0


def test_committed_ray_smoke_run_is_complete_and_its_table_is_its_record():
    """``benchmarks/ray_smoke.py``: the smoke profile three ways, every notebook ok each time and the
    same members trained; with the run's shard workers every member was trained by one of the
    2 workers, with shard tasks by more processes (new workers per kernel). The book includes the
    table, which is what the record gives."""
    bench = _script("ray_smoke")
    res = json.loads((BENCH / "ray_smoke.json").read_text())
    rows = {r["way"]: r for r in res["rows"]}
    assert list(rows) == list(bench.WAYS)
    assert all(r["notebooks_ok"] == r["notebooks"] > 0 for r in rows.values())
    assert len({r["members"] for r in rows.values()}) == 1
    assert rows["ray, shard workers"]["training_processes"] <= 2 < rows["ray, shard tasks"]["training_processes"]
    assert res["environment"]["dirty"] is False
    assert (BENCH / "ray_smoke.md").read_text() == bench.table(res)
    assert "```{include} ../benchmarks/ray_smoke.md" in (REPO / "book" / "cluster.md").read_text()


def test_product_layouts_bench_times_every_product_of_a_step_three_ways(capsys):
    """Each layer: forward and weight gradient in the trainer's, the former and the ceiling's form, and
    the input gradient except for the first layer (its input needs none); a bad option is one line
    and exit code 2."""
    bench = _script("bench_product_layouts")
    assert bench.main(["--members", "2", "--widths", "6,5,3", "--batch", "4", "--threads", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.count(" ms") for ln in out] == [6, 9, 3]  # layer 1, layer 2, the step's three totals
    assert bench.main(["--threads", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0]
