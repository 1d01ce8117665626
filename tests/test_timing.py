import json
import time

import pytest

from nrc import timing


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("NRC_TIMING_FILE", raising=False)
    timing.reset()
    yield
    timing.reset()


class _Clock:
    """A fake ``time.perf_counter`` for nrc.timing: the tests advance it, so they are exact under load."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(timing.time, "perf_counter", c)
    return c


def test_a_phase_accumulates_over_calls(clock):
    for _ in range(3):
        with timing.phase("training"):
            clock.advance(2.0)
        clock.advance(5.0)  # outside any phase: not credited
    assert timing.totals() == {"training": pytest.approx(6.0)}


def test_nested_phases_do_not_double_count(clock):
    with timing.phase("analysis"):
        clock.advance(3.0)
        with timing.phase("figures"):
            clock.advance(5.0)
        with timing.phase("analysis"):  # the same name nested: counted once
            clock.advance(2.0)
        clock.advance(1.0)
    assert timing.totals() == {"analysis": pytest.approx(6.0), "figures": pytest.approx(5.0)}


def test_decorator_and_exception_keep_the_books_balanced(clock):
    @timing.timed("data")
    def load():
        clock.advance(1.5)
        raise RuntimeError("boom")

    with timing.phase("analysis"):
        with pytest.raises(RuntimeError):
            load()
        clock.advance(0.5)
    assert timing.totals() == {"data": pytest.approx(1.5), "analysis": pytest.approx(0.5)}


def test_real_clock_credits_every_second_once():
    t0 = time.perf_counter()
    with timing.phase("analysis"):
        with timing.phase("figures"):
            sum(range(100000))
    wall = time.perf_counter() - t0
    assert sum(timing.totals().values()) == pytest.approx(wall, abs=1e-3)


def test_file_written_atomically_only_when_asked(tmp_path, monkeypatch):
    path = tmp_path / "nb.timing.json"
    with timing.phase("data"):
        pass
    assert not path.exists()
    monkeypatch.setenv("NRC_TIMING_FILE", str(path))
    with timing.phase("training"):
        with timing.phase("figures"):
            pass
        assert not path.exists()  # written when the outermost phase ends, not before
    got = json.loads(path.read_text())["phases"]
    assert set(got) == {"data", "training", "figures"}
    assert timing.read(path) == pytest.approx(timing.totals())
    assert not list(tmp_path.glob(".*.tmp"))
    assert timing.read(tmp_path / "missing.json") == {}


def test_library_entry_points_are_timed():
    import torch

    import nrc

    data = nrc.make_gaussian_mixture(num_classes=3, dim=4, per_class=5, seed=0)
    arch = nrc.Architecture((4, 6, 3))
    sweep = nrc.train(arch, data, [{"weight_decay": 1e-2}], nrc.TrainConfig(epochs=1, batch_size=5), progress=False)
    nrc.analyze(sweep, data)
    assert timing.totals()["analysis"] > 0
    assert "training" not in timing.totals()  # plain nrc.train is not ResultStore.train
    del torch


def test_matplotlib_rendering_is_credited_only_when_timing(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import FigureCanvasBase

    from nrc_companion import plots

    before = FigureCanvasBase.print_figure
    plots.instrument_matplotlib()  # no NRC_TIMING_FILE: nothing patched
    assert FigureCanvasBase.print_figure is before
    monkeypatch.setenv("NRC_TIMING_FILE", str(tmp_path / "t.json"))
    monkeypatch.setattr(FigureCanvasBase, "print_figure", before)  # undone after the test
    plots.instrument_matplotlib()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "f.png")
    plt.close(fig)
    assert timing.totals().get("figures", 0) > 0
    assert timing.read(tmp_path / "t.json")["figures"] > 0
