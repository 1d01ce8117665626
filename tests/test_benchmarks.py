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


def _fake_run(root: Path, commit: str, dK: list[float], verdict: str) -> Path:
    (root / "results" / "nb").mkdir(parents=True)
    (root / "status.json").write_text(json.dumps({"commit": commit}))
    (root / "results" / "nb.json").write_text(json.dumps({
        "values": {"slope": dK[0] * 2, "zero": 0.0},
        "checks": [{"id": "nb.a", "verdict": verdict, "measured": f"slope {dK[0]}"},
                   {"id": "nb.b", "verdict": "pass", "measured": "x"}]}))
    rows = "member,weight_decay,dK\n" + "".join(f"{i},0.1,{v}\n" for i, v in enumerate(dK))
    (root / "results" / "nb" / "sites.csv").write_text(rows)
    return root


def test_compare_runs_finds_the_largest_relative_change_and_every_moved_verdict(tmp_path, capsys):
    """Rows matched on their identifiers; the largest |new - old| / |old| over the table (here the
    second row's 0.5 -> 0.6, 0.2) and over the values (slope 2 -> 2.2, 0.1); the check whose verdict
    moved, and only it, listed with both measurements. A folder that is no run is one line, exit 2."""
    cmp = _script("compare_runs")
    old = _fake_run(tmp_path / "old", "a" * 40, [1.0, 0.5], "inconclusive")
    new = _fake_run(tmp_path / "new", "b" * 40, [1.1, 0.6], "pass")
    row = cmp.compare_runs(old, new).iloc[0]
    assert row["rows_matched"] == 2 and row["where"] == "sites.dK"
    assert row["max_rel_change_tables"] == pytest.approx(0.2) and row["value"] == "slope"
    assert row["max_rel_change_values"] == pytest.approx(0.1)
    moved = cmp.moved_verdicts(old, new)
    assert moved[["check", "old verdict", "new verdict"]].values.tolist() == [["`nb.a`", "inconclusive", "pass"]]
    assert "1 of the 2 verdicts differ" in cmp.report(old, new, "old", "new")
    assert "All 2 verdicts are the same" in cmp.report(old, old, "old", "old")
    assert cmp.main([str(tmp_path), str(new)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]


def test_committed_run_changes_compare_the_committed_run_with_the_one_before():
    """``benchmarks/run_changes.md`` is what ``compare_runs`` gives for the committed run against the
    run it names (extracted from git), and the performance page includes it. Every verdict that
    moved was inconclusive in one of the two runs -- the page says so, and a verdict moving between
    two clear outcomes would be a bug to explain."""
    import re
    import tempfile

    cmp = _script("compare_runs")
    text = (BENCH / "run_changes.md").read_text()
    old_spec = re.search(r"against `(git:[0-9a-f]+)`", text).group(1)
    import subprocess
    if subprocess.run(["git", "cat-file", "-e", old_spec[4:]], cwd=REPO, capture_output=True).returncode:
        pytest.skip(f"commit {old_spec[4:]} is not in this clone (shallow?): git fetch --unshallow")
    with tempfile.TemporaryDirectory() as tmp:
        old = cmp._run_dir(old_spec, Path(tmp))
        published = REPO / "book" / "published"
        assert text == cmp.report(old, published, old_spec, "book/published")
        moved = cmp.moved_verdicts(old, published)
    assert ((moved["old verdict"] == "inconclusive") | (moved["new verdict"] == "inconclusive")).all()
    assert "```{include} ../benchmarks/run_changes.md" in (REPO / "book" / "performance.md").read_text()


def test_committed_compile_benchmark_is_complete_and_the_page_reads_it_right(capsys):
    """``benchmarks/bench_compile.py``: every form timed once per repeat at one and two threads, at
    a clean commit; the table is the record's; the sweep it projects onto is E1's (epochs x steps per
    epoch, recomputed here); the page's conclusion ("does not pay") holds only while the compiled
    step is the slower one. A bad option is one line and exit code 2."""
    bench = _script("bench_compile")
    rec = json.loads((BENCH / "compile.json").read_text())
    assert [r["threads"] for r in rec["rows"]] == [1, 2]
    for r in rec["rows"]:
        assert all(len(r[f"{f}_ms"]) == rec["repeats"] and min(r[f"{f}_ms"]) > 0 for f in bench.FORMS)
        assert r["first_compiled_call_s"] > 0
    assert rec["environment"]["dirty"] is False
    e1 = yaml.safe_load((REPO / "profiles" / "full.yaml").read_text())["notebooks"]["e1_rank_vs_weight_decay"]
    assert rec["sweep_steps"] == e1["epochs"] * (e1["per_class"] * 10 // e1["batch_size"])
    assert (BENCH / "compile.md").read_text() == bench.table(rec)
    page = (REPO / "book" / "performance.md").read_text()
    assert "```{include} ../benchmarks/compile.md" in page
    import statistics
    slower = all(statistics.median(r["compiled_ms"]) > statistics.median(r["eager_ms"]) for r in rec["rows"])
    assert ("it does not pay" in page) == slower
    assert bench.main(["--threads", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0]


def test_kernel_paths_match_members_by_their_sweep_and_the_committed_tables_are_their_records():
    """``benchmarks/kernel_paths.py``: rows are matched on everything that identifies a member (E2
    repeats member indices across its sweeps, one per K), so a run compared with itself changes by 0
    and a changed number is found; each committed record's table is what the script prints for it,
    its flips are the paths' verdicts against the reference, a rerun on the reference's own path
    ("again") is bitwise equal, and the reproducibility page includes every table."""
    import pandas as pd

    kp = _script("kernel_paths")
    ref = pd.DataFrame({"member": [0, 1, 0, 1], "K": [3, 3, 5, 5], "weight_decay": 0.1, "seed": [0, 1, 0, 1],
                        "site": "W1", "dK": [1.0, 2.0, 3.0, 4.0]})
    worst, _, bitwise = kp._changes(ref.copy(), ref, ["dK"], kp.KEYS + ["site"])
    assert worst == {"dK": 0.0} and bitwise
    moved = ref.assign(dK=[1.0, 2.0, 3.0, 5.0])
    worst, _, bitwise = kp._changes(moved, ref, ["dK"], kp.KEYS + ["site"])
    assert worst["dK"] == pytest.approx(0.25) and not bitwise
    page = (REPO / "book" / "reproducibility.md").read_text()
    records = sorted((BENCH / "kernel_paths").glob("*.json"))
    assert {p.stem for p in records} >= {"t2_rank_tcv_bound", "e2_proportional_to_tcv"}
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["notebook"] == path.stem
        assert path.with_suffix(".md").read_text() == kp.table(rec)
        flips = sorted(i for i, v in rec["reference_verdicts"].items()
                       if any(p["verdicts"].get(i) != v for p in rec["paths"].values()))
        assert rec["verdicts_that_flip"] == flips
        if "again" in rec["paths"]:
            assert rec["paths"]["again"]["bitwise_equal"], path.stem
        assert f"```{{include}} /benchmarks/kernel_paths/{path.stem}.md" in page


def test_the_parallel_full_run_is_set_beside_the_published_run_at_its_commit():
    """``full_run_parallel``: the committed record pairs the published run (its own status.json, to
    the hundredth of a second) with a run of the documented parallel command at the same commit;
    the table the book includes is the one the record gives, and the README quotes its minutes."""
    import re

    bench = _script("full_run_parallel")
    res = json.loads((BENCH / "full_run_parallel.json").read_text())
    status = json.loads((REPO / "book" / "published" / "status.json").read_text())
    published, parallel = res["runs"]["published"], res["runs"]["parallel"]
    assert published["commit"] == parallel["commit"] == status["commit"]
    assert published["run_seconds"] == status["run_seconds"] and published["threads"] == status["threads"]
    assert published["executor"] == "local" and parallel["executor"] == "ray" and parallel["threads"] == 1
    assert [(r["notebook"], r["published_s"]) for r in res["notebooks"]] == \
        [(e["name"], e["seconds"]) for e in status["notebooks"]]
    assert (BENCH / "full_run_parallel.md").read_text() == bench.table(res)
    page = (REPO / "book" / "performance.md").read_text()
    assert res["command"] in page
    if "no verdict moves" in page:
        assert res["moved_verdicts"] == [], "performance.md says no verdict moves between the two runs"
    readme = (REPO / "README.md").read_text()
    quoted = re.search(r"two at a time[^*]*took \*\*([0-9]+) min\*\*", readme)
    assert quoted and int(quoted.group(1)) == round(parallel["run_seconds"] / 60), "README lost or misquotes it"


def test_the_parallel_comparison_refuses_runs_of_two_commits(tmp_path):
    """Side by side means one commit: two runs of different commits are refused in one line."""
    bench = _script("full_run_parallel")
    for name, commit in (("a", "1" * 40), ("b", "2" * 40)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_text(json.dumps(
            {"profile": "full", "finished": "x", "dirty": False, "commit": commit,
             "notebooks": [{"name": "t1", "ok": True, "seconds": 1.0}]}))
    with pytest.raises(ValueError, match="different commits .*side by side means one commit"):
        bench.summarize(tmp_path / "a", tmp_path / "b")
    assert bench.main([str(tmp_path / "a"), "--published", str(tmp_path / "b")]) == 2
