"""The performance page's measured part: where a run's time goes, and the trainer against its matrix products.

The only page drawn with matplotlib (two SVG figures), imported only when the pages are generated.
"""
from __future__ import annotations

from pathlib import Path

from .markup import code, fmt_seconds, md, page_link, short_name
from .run import commit_text, provenance, read_json

__all__ = ["performance_page"]

_PHASES = ("startup", "data", "training", "analysis", "figures", "other")
_PHASE_TEXT = {"startup": "kernel start-up", "data": "data", "training": "training", "analysis": "analysis",
               "figures": "figures", "other": "other",
               "rest": "everything else (kernel start-up, data, analysis, figures)"}


def _svg_figure(fig, path: Path) -> None:
    """Save ``fig`` as SVG with text kept as text and no timestamp (so the file changes only with the data)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def _perf_rc() -> dict:
    from ..report import FONT_SIZE

    # svg.hashsalt: fixed element ids (matplotlib draws them at random), so a figure's file changes
    # only when its data do
    return {"svg.fonttype": "none", "svg.hashsalt": "nrc", "font.size": FONT_SIZE, "axes.labelsize": FONT_SIZE,
            "xtick.labelsize": FONT_SIZE, "ytick.labelsize": FONT_SIZE, "legend.fontsize": FONT_SIZE,
            "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100}


def _time_phases(entry: dict) -> dict[str, float]:
    """Seconds per phase of one notebook of ``status.json``: its ``phases`` when recorded, else
    training and the rest of its wall time."""
    phases = entry.get("phases")
    if isinstance(phases, dict) and phases:
        return {k: float(phases.get(k) or 0.0) for k in _PHASES}
    total = float(entry.get("seconds") or 0.0)
    train = min(float(entry.get("train_seconds") or 0.0), total)
    return {"training": train, "rest": total - train}


def performance_page(status: dict | None, names: list[str], executed_dir: Path, root: Path,
                     gen: Path) -> str:
    """The performance page's measured part: where the run's time goes, and the trainer's speed.

    Every number comes from ``status.json`` of the run and ``benchmarks/matmul_ceiling.json``;
    the two figures are drawn here, as SVG, into ``gen``.
    """
    import matplotlib
    import matplotlib.pyplot as plt

    out: list[str] = []
    st = status or {}
    rows = {r.get("name"): r for r in st.get("notebooks", []) if isinstance(r, dict)}
    order = [n for n in names if n in rows]
    prov = provenance(status)
    # ---- where the time goes
    out += ["## Where the full run's time goes", ""]
    if not order:
        out += ["No `status.json` with per-notebook times was found for this build.", ""]
    else:
        phases = {n: _time_phases(rows[n]) for n in order}
        keys = [k for k in (_PHASES + ("rest",)) if any(p.get(k, 0) > 0 for p in phases.values())]
        total = sum(sum(p.values()) for p in phases.values())
        by_phase = {k: sum(p.get(k, 0.0) for p in phases.values()) for k in keys}
        longest = sorted(order, key=lambda n: -sum(phases[n].values()))[:3]
        with matplotlib.rc_context(_perf_rc()):
            fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(order) + 1.4), layout="constrained")
            colours = dict(zip(keys, plt.get_cmap("tab10").colors if len(keys) > 2 else ["#1f6f8b", "#b9c6cf"]))
            left = [0.0] * len(order)
            labels = [short_name(n) for n in order]
            for k in keys:
                vals = [phases[n].get(k, 0.0) for n in order]
                ax.barh(labels, vals, left=left, color=colours[k], label=_PHASE_TEXT[k], height=0.7)
                left = [a + b for a, b in zip(left, vals)]
            ax.invert_yaxis()
            ax.set_xlabel("seconds (wall time of the notebook's papermill run)")
            ax.grid(axis="x", alpha=0.3)
            fig.legend(loc="outside lower center", ncols=min(3, len(keys)), frameon=False)
            _svg_figure(fig, gen / "performance_time.svg")
        shares = ", ".join(f"{_PHASE_TEXT[k]} {100 * v / total:.0f} %" for k, v in by_phase.items()) if total else ""
        out += [f"The run of this build (profile **{md(prov['profile'])}** on {md(prov['device'])}, "
                f"{st.get('threads', '?')} threads, commit {code(commit_text(prov))}) spent "
                f"{fmt_seconds(total)} in its {len(order)} notebooks: {shares}. The longest are "
                + ", ".join(f"{page_link(n, names)} ({fmt_seconds(sum(phases[n].values()))})" for n in longest)
                + ".", "",
                "```{figure} /book/generated/performance_time.svg",
                ":name: fig-performance-time",
                f":alt: Horizontal bars, one per notebook, of its wall time split into {', '.join(_PHASE_TEXT[k] for k in keys)}; "
                f"the longest is {short_name(longest[0])}.",
                "",
                "Wall time of each notebook of the run, split by phase"
                + ("" if "rest" not in keys else " (this run recorded only the time spent training)") + ".",
                "```", ""]
        if "rest" in keys:
            out += ["Training is the time inside `ResultStore.train`; the rest is kernel start-up, data "
                    "loading, the analysis and the figures, which this run did not time separately. "
                    "Members that another notebook had trained already come from the cache.", ""]
    # ---- the trainer against the bare matrix products
    bench = read_json(root / "benchmarks" / "matmul_ceiling.json")
    out += ["## The stacked trainer against its matrix products alone", ""]
    if not isinstance(bench, dict) or not bench.get("rows"):
        out += ["No benchmark (`benchmarks/matmul_ceiling.json`) was found.", ""]
        return "\n".join(out) + "\n"
    env = bench.get("environment", {}) or {}
    rws = bench["rows"]
    threads = sorted({int(r["threads"]) for r in rws})
    summ = bench.get("summary", {}) or {}
    with matplotlib.rc_context(_perf_rc()):
        fig, ax = plt.subplots(figsize=(7.5, 3.4), layout="constrained")
        ax.scatter([r["threads"] for r in rws], [r["ratio"] for r in rws], color="#1f6f8b", s=36,
                   alpha=0.7, label="one timing")
        med = [summ.get(str(t), {}).get("median_ratio") for t in threads]
        if all(m is not None for m in med):
            ax.plot(threads, med, color="#1f6f8b", marker="D", lw=1.6, label="median")
        ax.axhline(1.0, color="0.3", ls="--", lw=1.2)
        ax.annotate("the bare products' speed", (threads[0], 1.0), va="bottom", color="0.3")
        ax.set_xticks(threads)
        ax.set_xlabel("intra-op threads")
        ax.set_ylabel("trainer / matrix products")
        ax.set_ylim(0, 1.1)
        ax.grid(axis="y", alpha=0.3)
        fig.legend(loc="outside right center", frameon=False)
        _svg_figure(fig, gen / "performance_ratio.svg")
    widths = "-".join(str(w) for w in bench.get("widths", []))
    per_t = "; ".join(
        f"{t} thread{'s' if t > 1 else ''}: {summ[str(t)]['median_ratio']:.2f} "
        f"(range {summ[str(t)]['min_ratio']:.2f} to {summ[str(t)]['max_ratio']:.2f})"
        for t in threads if str(t) in summ)
    out += [f"`nrc.train` trains all {bench.get('members', '?')} members of a weight-decay × seed grid as "
            f"one stacked model (widths {widths}, batch {bench.get('batch', '?')}): each layer is one batched "
            "matrix product over the members. `benchmarks/bench_matmul_ceiling.py` times the trainer "
            "against exactly those products alone (no autograd, optimizer or data movement), "
            "interleaved, and credits both with the same FLOP count: the ratio is the fraction of the "
            f"bare products' speed the trainer reaches. Median ratio: {per_t}.", "",
            "```{figure} /book/generated/performance_ratio.svg",
            ":name: fig-performance-ratio",
            f":alt: Ratio of the trainer's speed to that of its matrix products alone, against the number of "
            f"threads ({', '.join(map(str, threads))}); every timing and the median.",
            "",
            "The trainer's speed as a fraction of its matrix products alone, per number of threads; "
            "the dashed line is the products' own speed.",
            "```", ""]
    bcommit = str(env.get("commit") or "unknown")
    same = bcommit[:12] == str(prov["commit"])[:12]
    where = (f"Measured {md(env.get('time', ''))} on {md(env.get('device', 'unknown device'))}, "
             f"commit {code(bcommit[:12])}, with `{' '.join(str(bench.get('command', '')).split())}`.")
    if same:
        out += [where, ""]
    else:
        out += ["```{admonition} Measured at another commit", ":class: warning", "",
                where + f" The run of this book is at commit {code(commit_text(prov))}; the benchmark "
                "has not been repeated there.", "```", ""]
    table = root / "benchmarks" / "matmul_ceiling.md"
    if table.is_file():
        out += ["```{include} /benchmarks/matmul_ceiling.md", "```", ""]
    note = st.get("note")
    if note:  # status.json's note is MyST already (code spans)
        out += [" ".join(str(note).split()), ""]
    return "\n".join(out) + "\n"
