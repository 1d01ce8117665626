"""The registry of checks and the one function that judges them.

Every check the companion makes of a claim is declared once, in ``REGISTRY``: which claim,
which quantity over which weight matrices (its *scope*), the statistic, the threshold, the kind,
and one sentence on why this reads the claim fairly. Notebooks record the structured numbers a
check needs (per-site, per-seed rows; never formatted strings) and call :func:`evaluate`; the
scorecard (:func:`claim_verdicts`), the page headlines (:func:`sentence`) and the tests use the
same function, so a criterion lives in exactly one place.

Verdicts:

* ``pass``: the evidence supports the claim, including its spread over seeds;
* ``differs``: the evidence contradicts it (the whole interval lies on the wrong side);
* ``inconclusive``: the evidence cannot decide (the interval straddles the threshold, the sign is
  not stable over seeds, a single seed gives no spread, or the optimiser, not the claim, is the
  limit);
* ``reported``: a number shown beside a claim that does not decide it (kind ``report``).

Kinds:

* ``construction``: an inequality or identity that holds at any parameter once its terms are
  measured (Theorem A with its gradient term, Lemma A3, ...); it tests the code, and the
  scorecard counts it apart;
* ``empirical``: could have come out otherwise (a trend, a comparison, a collapse);
* ``convergence``: the optimiser reached the point a claim is about; kept apart from the paper's
  claims: a shortfall makes the claim inconclusive, never "differs";
* ``method``: tests a method of our own (the singular-value forecast), not the paper's;
* ``report``: shown, never scored.

Conventions, declared once and used everywhere:

* A Spearman correlation over a constant quantity is 0 (no trend), never NaN.
* A non-finite number in a check's input is an error (:class:`CheckError`): the notebook must
  leave diverged members out explicitly and say so; NaN never decides a verdict.
* A trend or a difference is judged per seed; the interval is the 95 % percentile bootstrap
  interval of the mean over seeds (2 000 resamples, generator seed 0). With three seeds it is the
  range of the seeds' values, so "pass" means every seed agrees. One seed gives no spread: the
  verdict is then ``inconclusive``.
* Construction checks allow a relative rounding slack of ``1e-9``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Check", "CheckError", "REGISTRY", "CHANGES", "COLLAPSE_NC1", "PROPORTIONAL_SLOPE",
           "STATIONARITY_TOL", "BALANCE_TOL", "evaluate", "evaluate_one", "claim_verdicts", "sentence",
           "site_roles", "spearman0", "VERDICTS", "KINDS", "changed_criteria", "checks_of"]

VERDICTS = ("pass", "differs", "inconclusive", "reported")
KINDS = ("construction", "empirical", "convergence", "method", "report")

#: Rounding slack of by-construction inequalities (relative).
RTOL = 1e-9
#: NC1 at or below which a layer's features count as collapsed (claim 10). NC1 = 1 is the point
#: where the within-class variance equals the between-class variance along the class means;
#: collapse means NC1 -> 0, and we call a layer collapsed one decade below that point.
COLLAPSE_NC1 = 0.1
#: "Roughly proportional" (claim 15): the log-log slope of d_K against TCV lies within a factor
#: of two of 1, the slope of exact proportionality.
PROPORTIONAL_SLOPE = (0.5, 2.0)
#: "Relative residual about 0" (claims 1 and 5): at most 1e-4 of the quantity's own scale, the
#: tolerance the first run used (the float64 refinement reaches a median of ~1e-8).
STATIONARITY_TOL = 1e-4
#: "Equal norms" (claim 8): relative spread of the layers' squared norms at most 1e-3, the first
#: run's tolerance.
BALANCE_TOL = 1e-3
#: A refinement whose residual still halves between its last two budgets is still converging.
STILL_FALLING = 0.5

_BOOT = 2000
_LEVEL = 0.95


class CheckError(ValueError):
    """A check that cannot be evaluated (missing, malformed or non-finite input)."""


@dataclass(frozen=True)
class Check:
    """One declared check.

    Attributes
    ----------
    id : str
        ``"<notebook prefix>.<name>"``; a notebook's inputs are keyed by it (optionally
        ``id@variant``, e.g. ``e1.claim2@fashion-mnist``).
    notebook : str
        The notebook that records its input.
    claim : int
        Claim number of the restated paper's checklist (1..16).
    kind : str
        One of ``KINDS``.
    statistic : str
        How the input is judged: ``le``, ``ge``, ``bound``, ``trend``, ``slope_in``, ``difference``,
        ``collapse``, ``converges``, ``at_stationarity`` or ``report``.
    statement : str
        The claim as this check reads it (MyST markdown with math).
    quantity : str
        What is measured.
    scope : str
        Over which weight matrices and members.
    threshold : str
        The threshold, in words.
    reason : str
        Why this reads the claim fairly.
    params : dict
        The statistic's fixed arguments (direction, threshold, ...).
    optional : str
        Non-empty: the notebook may leave the check out, for this stated reason.
    """

    id: str
    notebook: str
    claim: int
    kind: str
    statistic: str
    statement: str
    quantity: str
    scope: str
    threshold: str
    reason: str
    params: Mapping = field(default_factory=dict)
    optional: str = ""


# ---------------------------------------------------------------------------------------------
# statistics: pure functions of a check's input -> (verdict, value, interval, measured, detail)
# ---------------------------------------------------------------------------------------------

def _finite_array(x, what: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise CheckError(f"{what}: not numbers ({exc})") from None
    if a.size == 0:
        raise CheckError(f"{what}: empty")
    if not np.isfinite(a).all():
        raise CheckError(f"{what}: non-finite value(s) {a[~np.isfinite(a)][:3].tolist()}; leave diverged "
                         "members out explicitly")
    return a


def spearman0(x, y) -> float:
    """Spearman rank correlation, 0 when either side is constant (the declared convention).

    Raises :class:`CheckError` on non-finite input or fewer than two points.
    """
    xa, ya = _finite_array(x, "x"), _finite_array(y, "y")
    if xa.shape != ya.shape or xa.size < 2:
        raise CheckError(f"spearman: need two equal-length series of >= 2 points, got {xa.shape}, {ya.shape}")
    rx, ry = _rank(xa), _rank(ya)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _rank(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as scipy.stats.rankdata."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size)
    ranks[order] = np.arange(1, a.size + 1)
    for v in np.unique(a):
        m = a == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return ranks


def bootstrap_mean(values, *, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and the 95 % percentile bootstrap interval of the mean.

    One value gives the degenerate interval ``(v, v)``.
    """
    v = _finite_array(values, "bootstrap values")
    if v.size == 1:
        return float(v[0]), float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(_BOOT, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - _LEVEL) / 2, 1 - (1 - _LEVEL) / 2], method="inverted_cdf")
    return float(v.mean()), float(lo), float(hi)


def _sign_verdict(lo: float, hi: float, n: int, *, direction: str, zero: float = 0.0) -> str:
    """pass / differs / inconclusive for "the mean lies above (below) ``zero``"."""
    if n < 2:
        return "inconclusive"
    if direction == "decreasing":
        return "pass" if hi < zero else "differs" if lo > zero else "inconclusive"
    return "pass" if lo > zero else "differs" if hi < zero else "inconclusive"


def _fmt(x: float, spec: str = ".3g") -> str:
    if x == 0:
        return "0"
    s = format(x, spec)
    if "e" in s:
        m, e = s.split("e")
        return f"{m}\\times10^{{{int(e)}}}"
    return s


def _interval_text(v, lo, hi, n, spec=".2f") -> str:
    if n < 2:
        return f"{format(v, spec)} (1 seed: no spread)"
    return f"{format(v, spec)} [{format(lo, spec)}, {format(hi, spec)}], {n} seeds"


def _rows(inp, keys: Sequence[str], what: str) -> list[dict]:
    rows = inp.get("rows") if isinstance(inp, Mapping) else None
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)) or not rows:
        raise CheckError(f"{what}: input needs a non-empty list 'rows'")
    for r in rows:
        missing = [k for k in keys if k not in r]
        if missing:
            raise CheckError(f"{what}: a row lacks {missing} (has {sorted(r)})")
    return list(rows)


def _stat_le(inp, params, what):
    """Largest value <= threshold (construction inequalities, tolerances)."""
    vals = _finite_array(inp["values"] if isinstance(inp, Mapping) and "values" in inp else
                         inp["value"] if isinstance(inp, Mapping) else inp, what)
    limit = float(inp["threshold"]) if isinstance(inp, Mapping) and "threshold" in inp else float(params["threshold"])
    limit_eff = limit * (1 + RTOL) if limit > 0 else limit + RTOL
    worst = float(vals.max())
    verdict = "pass" if worst <= limit_eff else "differs"
    n = vals.size
    measured = f"max ${_fmt(worst)}$ over {n} case{'s' * (n != 1)} (threshold ${_fmt(limit)}$)"
    return verdict, worst, None, measured, ""


def _stat_ge(inp, params, what):
    """Smallest value >= threshold."""
    vals = _finite_array(inp["values"] if isinstance(inp, Mapping) and "values" in inp else
                         inp["value"] if isinstance(inp, Mapping) else inp, what)
    limit = float(inp["threshold"]) if isinstance(inp, Mapping) and "threshold" in inp else float(params["threshold"])
    worst = float(vals.min())
    verdict = "pass" if worst >= limit * (1 - RTOL) else "differs"
    measured = f"min ${_fmt(worst)}$ over {vals.size} case{'s' * (vals.size != 1)} (threshold ${_fmt(limit)}$)"
    return verdict, worst, None, measured, ""


def _stat_bound(inp, params, what):
    """Theorem A style: d <= bound on every row; reports how many rows are informative.

    Rows: ``{"d": measured distance, "bound": the bound, "norm": ||W||_F}`` (plus any labels).
    A row is *informative* when bound < ||W||_F: d_K^F(W) <= ||W||_F holds trivially, so a bound
    at or above ||W||_F says nothing (vacuous). The inequality is checked on every row; when
    ``inp["scored"]`` lists sites, the informative count is over the rows of those sites only
    (the output layer, at rank <= K by shape, would count as informative for free).
    """
    rows = _rows(inp, ("d", "bound", "norm"), what)
    scored = inp.get("scored")
    d = _finite_array([r["d"] for r in rows], f"{what}: d")
    b = _finite_array([r["bound"] for r in rows], f"{what}: bound")
    w = _finite_array([r["norm"] for r in rows], f"{what}: norm")
    ratio = d / np.where(b > 0, b, np.inf)
    ratio[(b == 0) & (d > 0)] = np.inf
    worst = float(ratio.max())
    verdict = "pass" if worst <= 1 + RTOL else "differs"
    counted = np.array([scored is None or r.get("site") in scored for r in rows])
    if not counted.any():
        raise CheckError(f"{what}: no row lies in the scored sites {scored}")
    rel = (b / w)[counted]
    informative = int((rel < 1).sum())
    where = "" if scored is None else f" {', '.join(map(str, scored))}"
    measured = (f"max $d/\\text{{bound}}={_fmt(worst)}$ over {len(rows)} rows; bound $<\\|W\\|_F$ "
                f"(informative) on {informative} of {rel.size}{where} rows")
    detail = (f"bound/‖W‖_F{where}: min {_fmt(float(rel.min()))}, median {_fmt(float(np.median(rel)))}, "
              f"max {_fmt(float(rel.max()))}; {rel.size - informative} vacuous rows (bound ≥ ‖W‖_F)")
    return verdict, worst, None, measured, detail, {"informative": informative, "rows": int(rel.size)}


def _per_seed(rows, fn, what, group_key="site"):
    """{group: {seed: fn(sub-rows)}} over the rows."""
    out: dict = {}
    for r in rows:
        out.setdefault(str(r.get(group_key, "all")), {}).setdefault(r["seed"], []).append(r)
    return {g: {s: fn(sub, f"{what} [{g}, seed {s}]") for s, sub in seeds.items()} for g, seeds in out.items()}


def _trend_like(per_group: dict, direction: str, zero: float, what: str, label: str):
    """Judge {group: {seed: value}}: per group the seed-mean interval; the check takes the worst group."""
    verdicts, lines, worst = [], [], None
    for g, by_seed in per_group.items():
        vals = list(by_seed.values())
        m, lo, hi = bootstrap_mean(vals)
        v = _sign_verdict(lo, hi, len(vals), direction=direction, zero=zero)
        verdicts.append(v)
        lines.append(f"{g}: {_interval_text(m, lo, hi, len(vals))}")
        # the worst group is the one nearest the wrong side
        key = hi if direction == "decreasing" else -lo
        if worst is None or key > worst[0]:
            worst = (key, g, m, lo, hi, len(vals))
    verdict = "differs" if "differs" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
    _, g, m, lo, hi, n = worst
    measured = f"${label}{m:.2f}$ " + (f"[{lo:.2f}, {hi:.2f}], {n} seeds" if n >= 2 else "(1 seed: no spread)") \
        + f" (worst of {len(per_group)}: {g})"
    return verdict, m, [lo, hi], measured, "; ".join(lines)


def _stat_trend(inp, params, what):
    """Per group (site) and seed: Spearman(x, y); the sign of the seed mean, with its interval.

    Rows: ``{"site": ..., "seed": ..., "x": ..., "y": ...}``; ``params["direction"]`` is
    ``"decreasing"`` or ``"increasing"`` (y against x). Only rows whose site is in
    ``inp["scored"]`` decide (when given); the others are listed in the detail as reported.
    """
    rows = _rows(inp, ("seed", "x", "y"), what)
    scored = inp.get("scored")
    per = _per_seed(rows, lambda sub, w: spearman0([r["x"] for r in sub], [r["y"] for r in sub]), what)
    deciding = {g: v for g, v in per.items() if scored is None or g in scored}
    if not deciding:
        raise CheckError(f"{what}: no row lies in the scored sites {scored}")
    verdict, m, iv, measured, detail = _trend_like(deciding, params["direction"], 0.0, what, "\\rho=")
    others = {g: v for g, v in per.items() if g not in deciding}
    if others:
        rep = [f"{g}: {_interval_text(*bootstrap_mean(list(v.values())), len(v))}" for g, v in others.items()]
        detail += "; reported, not scored: " + "; ".join(rep)
    return verdict, m, iv, measured, detail


def _slope(sub, what):
    """Least-squares slope of log y on log x; rows pooled over layers (each row has ``"layer"``)
    share one slope with an intercept per layer, since Theorem A's constant differs by layer."""
    x = np.log(_finite_array([r["x"] for r in sub], f"{what}: x"))
    y = np.log(_finite_array([r["y"] for r in sub], f"{what}: y"))
    if all("layer" in r for r in sub):
        layer = np.array([str(r["layer"]) for r in sub])
        for name in np.unique(layer):
            m = layer == name
            x[m] -= x[m].mean()
            y[m] -= y[m].mean()
        if not float(x @ x) > 0:
            raise CheckError(f"{what}: a slope needs >= 2 distinct x values within a layer")
        return float((x @ y) / (x @ x))
    if x.size < 2 or np.ptp(x) == 0:
        raise CheckError(f"{what}: a slope needs >= 2 distinct x values")
    return float(np.polyfit(x, y, 1)[0])


def _stat_slope_in(inp, params, what):
    """Per group and seed, the least-squares slope of log y on log x; the seed-mean interval
    must lie inside ``params["range"]`` (pass), outside it (differs), else inconclusive."""
    rows = _rows(inp, ("seed", "x", "y"), what)
    for r in rows:
        if not (r["x"] > 0 and r["y"] > 0):
            raise CheckError(f"{what}: log-log slope needs positive x and y, got {r['x']}, {r['y']}")
    per = _per_seed(rows, _slope, what, group_key=inp.get("group", "site"))
    lo_t, hi_t = params["range"]
    verdicts, lines, worst = [], [], None
    for g, by_seed in per.items():
        vals = list(by_seed.values())
        m, lo, hi = bootstrap_mean(vals)
        if len(vals) < 2:
            v = "inconclusive"
        elif lo >= lo_t and hi <= hi_t:
            v = "pass"
        elif hi < lo_t or lo > hi_t:
            v = "differs"
        else:
            v = "inconclusive"
        verdicts.append(v)
        lines.append(f"{g}: {_interval_text(m, lo, hi, len(vals))} ({v})")
        dist = max(lo_t - lo, hi - hi_t)
        if worst is None or dist > worst[0]:
            worst = (dist, g, m, lo, hi, len(vals))
    verdict = "differs" if "differs" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
    _, g, m, lo, hi, n = worst
    measured = f"slope {_interval_text(m, lo, hi, n)} (worst of {len(per)}: {g}; range {lo_t:g} to {hi_t:g})"
    return verdict, m, [lo, hi], measured, "; ".join(lines)


def _stat_difference(inp, params, what):
    """Paired per seed: ``a - b``; the seed-mean interval below 0 (``direction`` "decreasing":
    a smaller than b) passes, above 0 differs, straddling 0 is inconclusive.

    Rows: ``{"seed": ..., "a": ..., "b": ...}``.
    """
    rows = _rows(inp, ("seed", "a", "b"), what)
    diffs = [float(r["a"]) - float(r["b"]) for r in rows]
    m, lo, hi = bootstrap_mean(diffs)
    verdict = _sign_verdict(lo, hi, len(diffs), direction=params.get("direction", "decreasing"))
    a, b = _finite_array([r["a"] for r in rows], what), _finite_array([r["b"] for r in rows], what)
    measured = (f"difference {_interval_text(m, lo, hi, len(diffs), '.3f')} "
                f"({_fmt(float(a.mean()))} against {_fmt(float(b.mean()))})")
    detail = f"a: {', '.join(_fmt(x) for x in a)}; b: {', '.join(_fmt(x) for x in b)}"
    return verdict, m, [lo, hi], measured, detail


def _stat_collapse(inp, params, what):
    """Neural collapse as defined: per member, NC1 at the end below NC1 at the start, and at most
    ``params["threshold"]``. Every member: pass; no member below the threshold: differs; else
    inconclusive.

    Rows: ``{"member": ..., "start": NC1 at initialisation, "end": NC1 after training}``.
    """
    rows = _rows(inp, ("start", "end"), what)
    start = _finite_array([r["start"] for r in rows], f"{what}: start")
    end = _finite_array([r["end"] for r in rows], f"{what}: end")
    thr = float(params["threshold"])
    fell = end < start
    below = end <= thr
    if fell.all() and below.all():
        verdict = "pass"
    elif not below.any() or not fell.any():
        verdict = "differs"
    else:
        verdict = "inconclusive"
    measured = (f"NC1 fell in {int(fell.sum())} of {len(rows)} members; ends at {_fmt(float(end.min()))} to "
                f"{_fmt(float(end.max()))} (collapsed: $\\le{_fmt(thr)}$ in {int(below.sum())})")
    detail = f"NC1 at initialisation {_fmt(float(start.min()))} to {_fmt(float(start.max()))}"
    return verdict, float(end.max()), [float(end.min()), float(end.max())], measured, detail


def _stat_converges(inp, params, what):
    """A residual driven to ``params["tol"]`` by a growing optimiser budget.

    Rows: ``{"member": ..., "budget": ..., "residual": ...}`` (the largest residual over the
    member's weights at each budget). Per member at the largest budget: residual <= tol passes;
    above tol and still falling (last/previous < 0.5): the optimiser is the limit, inconclusive;
    above tol and no longer falling: differs.
    """
    rows = _rows(inp, ("member", "budget", "residual"), what)
    tol = float(params["tol"])
    by: dict = {}
    for r in rows:
        by.setdefault(str(r["member"]), []).append((float(r["budget"]), float(r["residual"])))
    states, finals = [], []
    for m, pts in by.items():
        pts.sort()
        res = _finite_array([p[1] for p in pts], f"{what}: residual of {m}")
        final = float(res[-1])
        finals.append(final)
        if final <= tol:
            states.append("pass")
        elif res.size >= 2 and res[-2] > 0 and final / res[-2] < STILL_FALLING:
            states.append("inconclusive")
        else:
            states.append("differs")
    verdict = "differs" if "differs" in states else "inconclusive" if "inconclusive" in states else "pass"
    budget = max(b for pts in by.values() for b, _ in pts)
    measured = (f"max residual ${_fmt(max(finals))}$ at budget {budget:g} over {len(by)} members "
                f"(tolerance ${_fmt(tol)}$); {states.count('pass')} below, {states.count('inconclusive')} "
                f"still falling, {states.count('differs')} stalled above")
    return verdict, max(finals), None, measured, ""


def _stat_at_stationarity(inp, params, what):
    """A quantity that is 0 at a stationary point, with the bound the measured residual allows.

    Rows: ``{"value": X, "allowed": f(residual)}``, where ``|X| <= f(residual)`` holds at any
    parameter (a construction inequality). Per row: X <= tol passes; X > tol but X <= allowed:
    the optimiser, not the claim, is the limit (inconclusive); X above both: differs.
    """
    rows = _rows(inp, ("value", "allowed"), what)
    x = np.abs(_finite_array([r["value"] for r in rows], f"{what}: value"))
    f = _finite_array([r["allowed"] for r in rows], f"{what}: allowed")
    tol = float(params["tol"])
    states = np.where(x <= tol, "pass", np.where(x <= f * (1 + RTOL), "inconclusive", "differs"))
    verdict = "differs" if (states == "differs").any() else "inconclusive" if (states == "inconclusive").any() else "pass"
    measured = (f"max ${_fmt(float(x.max()))}$ over {len(rows)} cases (tolerance ${_fmt(tol)}$; the measured "
                f"residual allows up to ${_fmt(float(f.max()))}$)")
    return verdict, float(x.max()), None, measured, ""


def _stat_report(inp, params, what):
    """A reported number: shown, never scored. Input: ``{"value": x, "text": "..."}``."""
    if not isinstance(inp, Mapping) or "text" not in inp:
        raise CheckError(f"{what}: a report needs 'text' (and optionally 'value')")
    value = inp.get("value")
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise CheckError(f"{what}: reported value {value!r} is not a finite number")
    return "reported", value, inp.get("interval"), str(inp["text"]), str(inp.get("detail", ""))


_STATISTICS = {
    "le": _stat_le, "ge": _stat_ge, "bound": _stat_bound, "trend": _stat_trend, "slope_in": _stat_slope_in,
    "difference": _stat_difference, "collapse": _stat_collapse, "converges": _stat_converges,
    "at_stationarity": _stat_at_stationarity, "report": _stat_report,
}


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------

_HIDDEN_FED = ("the weight matrices fed by hidden features: $W_\\ell$ for $2\\le\\ell\\le L-1$, and every "
               "residual block's $W_\\ell$ and $V_\\ell$; $W_1$ (fed by the pixels) is reported, not scored; "
               "the output layer ($K$ rows) is at rank $\\le K$ trivially")
_R_CLAIM2 = ("Theorem A bounds $d_K^F(W_\\ell)$ by the within-class spread of the features that feed $W_\\ell$; "
             "only hidden features can collapse, so the claim is about the matrices they feed (the v1 abstract "
             "speaks of the hidden-space embeddings of the previous layers). $d_K^F/\\|W\\|_F$ is the scale-free "
             "quantity the theorem controls; thresholded ranks saturate at the width and are reported.")
_R_BOUND = ("Theorem A holds at any parameter once its gradient term is measured, so a violation would be a "
            "bug; the informative count says where the bound says more than the trivial $d_K^F(W)\\le\\|W\\|_F$.")
_R_TREND_SEEDS = ("Judged per seed so that the spread over seeds is the uncertainty; a sign that changes "
                  "between seeds is inconclusive.")


def _rank_sweep(prefix: str, notebook: str, *, variants: str = "") -> list[Check]:
    """Claims 2, 4, 10 and 14 on a rank-against-weight-decay sweep (T8, E1, E3 share them)."""
    return [
        Check(f"{prefix}.claim2", notebook, 2, "empirical", "trend",
           "$d_K^F(W_\\ell)/\\|W_\\ell\\|_F$ falls as $\\lambda$ grows",
           "Spearman correlation of $\\lambda$ and $d_K^F(W_\\ell)/\\|W_\\ell\\|_F$, per seed, over the $\\lambda$ grid",
           _HIDDEN_FED, "the seed-mean interval of $\\rho$ below 0 in every scored matrix",
           _R_CLAIM2 + " " + _R_TREND_SEEDS, {"direction": "decreasing"}),
        Check(f"{prefix}.rank", notebook, 2, "report", "report",
           "numerical ranks $\\mathrm{rank}_{10^{-2}}$ and $\\mathrm{rank}_{10^{-3}}$ against $\\lambda$",
           "Spearman correlation of $\\lambda$ and $\\mathrm{rank}_\\tau(W_\\ell)$ per seed",
           "every hidden weight matrix", "none (reported)",
           "A threshold rank changes only when a singular value crosses $\\tau s_1$ and saturates at the width; "
           "it illustrates claim 2 but does not decide it."),
    ]


def _build() -> tuple[Check, ...]:
    R = []
    # ---- the derivation: the proof of Theorem A, step by step (construction)
    R += [
        Check("deriv.identity", "derivation_theorem_a", 4, "construction", "le",
           "the gradient identity $\\lambda W_\\ell = G_\\ell-\\frac1N\\Delta_\\ell Z_{\\ell-1}^\\top$",
           "largest relative error of the identity", "every layer", "$10^{-10}$ (float64 rounding)",
           "An algebraic identity: only rounding can separate its sides.", {"threshold": 1e-10}),
        Check("deriv.chain", "derivation_theorem_a", 4, "construction", "le",
           "$d_K^F(W)\\le\\|W-P\\|_F\\le$ bound $\\le$ Cauchy–Schwarz bound $\\le$ Lemma A2 bound, with "
           "$\\mathrm{rank}\\,P\\le K$, and the per-sample, $\\mathrm{TCV}_1$ and Lemma A2 steps of the proof",
           "largest ratio of each link of the chain (left over right)", "every layer", "1",
           "Each link is a step of the proof; a ratio above 1 is a bug.", {"threshold": 1.0}),
        Check("deriv.agree", "derivation_theorem_a", 4, "construction", "le",
           "`nrc.site_quantities` computes the derivation's numbers",
           "largest relative difference between the two computations (the gradient's norm and the residual "
           "on the scale $\\lambda\\|W_\\ell\\|_F$ of the two terms that cancel in $G_\\ell$)", "every layer and quantity",
           "the notebook's `agree_tol`", "Two independent computations of the same float64 numbers."),
    ]
    # ---- T1: stationarity (claim 1), the optimiser apart
    R += [
        Check("t1.stationarity", "t1_stationarity", 1, "empirical", "converges",
           "$\\lambda W_\\ell=-\\nabla_{W_\\ell}\\mathcal L_0$ at the points a float64 refinement converges to",
           "largest relative residual $\\|\\lambda W_\\ell+\\nabla_{W_\\ell}\\mathcal L_0\\|_F/(\\lambda\\|W_\\ell\\|_F)$ "
           "over a member's weights, at each refinement budget",
           "every member with a smooth activation (loss, $\\lambda$, seed) and weight; ReLU members are reported "
           "on the page (the loss is not differentiable at their kinks, so the equation holds only in a "
           "subgradient sense)",
           f"${STATIONARITY_TOL:g}$ at the largest budget; still halving between the last two budgets: inconclusive",
           "The equation is the definition of a stationary point of $\\mathcal L_\\lambda$; what can fail is that "
           "training reaches one. A residual still falling is the optimiser's limit, not the claim's.",
           {"tol": STATIONARITY_TOL}),
        Check("t1.sgd_vs_refined", "t1_stationarity", 1, "convergence", "report",
           "SGD alone leaves the network far from stationarity; the refinement closes the gap",
           "median residual after SGD and after refinement", "every member", "none (reported)",
           "Shows why the theory notebooks refine before checking stationarity."),
    ]
    # ---- T2: Theorem A on the trained sweep
    R += [
        Check("t2.bound", "t2_rank_tcv_bound", 4, "construction", "bound",
           "Theorem A, exact form: $d_K^F(W_\\ell)\\le\\|G_\\ell\\|_F/\\lambda+\\|\\Delta_\\ell R_{\\ell-1}^\\top\\|_F/(\\lambda N)$",
           "$d_K^F(W_\\ell)$/bound, and bound$/\\|W_\\ell\\|_F$ on every row", "every layer, $\\lambda>0$, seed, loss",
           "1 (with $10^{-9}$ rounding slack)", _R_BOUND),
        Check("t2.bound_cs", "t2_rank_tcv_bound", 4, "construction", "bound",
           "Theorem A, Cauchy–Schwarz form (looser than the exact form)",
           "$d_K^F(W_\\ell)$/CS bound", "every layer, $\\lambda>0$, seed, loss", "1", _R_BOUND),
        Check("t2.scale_free", "t2_rank_tcv_bound", 14, "empirical", "trend",
           "the distance to rank $K$ follows the bound, scale-free: $d_K^F/\\|W\\|_F$ grows with bound$/\\|W\\|_F$",
           "Spearman correlation of bound$/\\|W_\\ell\\|_F$ and $d_K^F(W_\\ell)/\\|W_\\ell\\|_F$ per seed, over the "
           "scored matrices and $\\lambda>0$", _HIDDEN_FED, "the seed-mean interval of $\\rho$ above 0",
           "Both sides scale with $\\|W\\|$, which alone makes raw $d_K$ and bound correlate; dividing by "
           "$\\|W_\\ell\\|_F$ tests the relation the theory predicts, not the common scale. " + _R_TREND_SEEDS,
           {"direction": "increasing"}),
    ]
    # ---- T3: Lemma A2 (construction)
    R += [
        Check("t3.a2", "t3_lemma_a2_constant", 4, "construction", "bound",
           "Lemma A2: $d_K^F(W_\\ell)\\le\\|G_\\ell\\|/\\lambda+\\rho_\\ell\\sqrt{2\\mathcal L_0}\\sqrt{\\mathrm{TCV}_2/N}/\\lambda$",
           "$d_K^F$/Lemma A2 bound, and bound$/\\|W_\\ell\\|_F$", "every layer, $\\lambda>0$, seed", "1", _R_BOUND),
        Check("t3.order", "t3_lemma_a2_constant", 4, "construction", "ge",
           "Lemma A2 is looser than Theorem A: bound $\\le$ CS bound $\\le$ A2 bound",
           "smallest ratio of the looser bound to the tighter", "every row", "1",
           "The chain of inequalities in the proof of Lemma A2.", {"threshold": 1.0}),
        Check("t3.steps", "t3_lemma_a2_constant", 4, "construction", "le",
           "the proof steps of Lemma A2 ($\\|\\Delta_\\ell\\|_F\\le\\rho_\\ell\\|\\Delta_L\\|_F$, $\\|\\Delta_L\\|_F\\le\\sqrt{2N\\mathcal L_0}$)",
           "largest ratio of each step", "every row", "1", "Each step is an inequality of the proof.",
           {"threshold": 1.0}),
    ]
    # ---- T4: any partition
    R += [
        Check("t4.kmeans", "t4_any_partition", 6, "construction", "bound",
           "Theorem A with the $k$-means clusters of $Z_{\\ell-1}$ as the partition",
           "$d_K^F$/bound with the $k$-means partition", "every layer, $\\lambda>0$, seed", "1", _R_BOUND),
        Check("t4.random", "t4_any_partition", 6, "construction", "bound",
           "Theorem A with a random balanced partition", "$d_K^F$/bound with a random partition",
           "every layer, $\\lambda>0$, seed", "1", _R_BOUND),
        Check("t4.smaller", "t4_any_partition", 6, "report", "report",
           "the $k$-means partition often gives a smaller bound than the labels",
           "share of weights where the $k$-means bound is not larger", "non-trivial weights with $\\lambda>0$, every seed",
           "none (reported)", "Our restatement's table of theory checks expects it; the claim does not state it."),
    ]
    # ---- T5: Corollary A1
    R += [
        Check("t5.ce_chain", "t5_corollary_a1_low_rank", 5, "construction", "le",
           "cross-entropy: $s_K(W_L)\\le\\|\\mathbf 1^\\top W_L\\|/\\sqrt K\\le\\|G_L\\|_F/\\lambda$",
           "largest ratio of each link", "every member", "1", "The corollary's proof, at any parameter.",
           {"threshold": 1.0}),
        Check("t5.ce_rank", "t5_corollary_a1_low_rank", 5, "empirical", "at_stationarity",
           "cross-entropy at stationarity: $s_K(W_L)=0$ (rank $W_L\\le K-1$)",
           "$s_K(W_L)/s_1(W_L)$, with the value $\\|G_L\\|_F/(\\lambda s_1)$ the measured residual allows",
           "every member", f"${STATIONARITY_TOL:g}$",
           "The corollary holds exactly at a stationary point; between the tolerance and what the measured "
           "residual allows, the optimiser is the limit.", {"tol": STATIONARITY_TOL}),
        Check("t5.bias_chain", "t5_corollary_a1_low_rank", 5, "construction", "bound",
           "unregularised biases: $d_{K-1}^F(W_\\ell)\\le$ the $K-1$ bound",
           "$d_{K-1}^F$/bound", "every layer, $\\lambda>0$, seed", "1", _R_BOUND),
        Check("t5.bias_trend", "t5_corollary_a1_low_rank", 5, "empirical", "trend",
           "unregularised biases: $d_{K-1}^F(W_\\ell)/\\|W_\\ell\\|_F$ falls as $\\lambda$ grows",
           "Spearman correlation of $\\lambda$ and $d_{K-1}^F/\\|W\\|_F$ per seed", _HIDDEN_FED,
           "the seed-mean interval of $\\rho$ below 0",
           "The $K-1$ form is claim 2 with free biases. " + _R_TREND_SEEDS, {"direction": "decreasing"}),
        Check("t5.dnc1_exact", "t5_corollary_a1_low_rank", 5, "empirical", "at_stationarity",
           "exact DNC1 (within-class spread 0): $W_\\ell$ of rank $\\le K$ for $\\ell\\ge2$",
           "$d_K^F(W_\\ell)/\\|W_\\ell\\|_F$ at spread 0, with the value the measured gradient term allows",
           "hidden-fed matrices, every $\\lambda$ and seed", f"${STATIONARITY_TOL:g}$",
           "With zero TCV the bound is the gradient term alone; see `t5.ce_rank`.", {"tol": STATIONARITY_TOL}),
    ]
    # ---- T6: Lemma A3 (construction)
    R += [
        Check("t6.a3", "t6_tcv_propagation", 7, "construction", "le",
           "Lemma A3: $\\mathrm{TCV}_2(Z_\\ell)\\le\\mathrm{Lip}(\\sigma)^2\\|W_\\ell\\|_2^2\\,\\mathrm{TCV}_2(Z_{\\ell-1})$",
           "largest ratio of the left side to the right", "every hidden layer, activation, stage", "1",
           "An inequality at any parameter.", {"threshold": 1.0}),
        Check("t6.chain", "t6_tcv_propagation", 7, "construction", "le",
           "Lemma A3 chained from the input", "largest ratio", "every hidden layer", "1",
           "An inequality at any parameter.", {"threshold": 1.0}),
    ]
    # ---- T7: Lemma A4
    R += [
        Check("t7.identity", "t7_balanced_norms", 8, "construction", "le",
           "ReLU, no biases, any parameter: $\\lambda\\,|\\|W_\\ell\\|_F^2-\\|W_m\\|_F^2|\\le\\|G_\\ell\\|_F\\|W_\\ell\\|_F"
           "+\\|G_m\\|_F\\|W_m\\|_F$ and $|\\lambda\\|W_\\ell\\|_F^2+\\frac1N\\sum_i\\langle\\nabla_f\\ell_i,f(x_i)\\rangle|"
           "\\le\\|G_\\ell\\|_F\\|W_\\ell\\|_F$",
           "largest ratio of the left side to the right", "every pair of layers and every layer, member", "1",
           "Positive homogeneity gives the identity at any parameter.", {"threshold": 1.0}),
        Check("t7.balance", "t7_balanced_norms", 8, "empirical", "at_stationarity",
           "at stationarity $\\|W_1\\|_F=\\dots=\\|W_L\\|_F$",
           "relative spread of the layers' $\\|W_\\ell\\|_F^2$, with the spread the measured gradients allow: "
           "$(\\|G_{hi}\\|_F\\|W_{hi}\\|_F+\\|G_{lo}\\|_F\\|W_{lo}\\|_F)/(\\lambda\\,\\mathrm{mean}_\\ell\\|W_\\ell\\|_F^2)$ for the "
           "layers of largest and smallest norm", "every member", f"${BALANCE_TOL:g}$",
           "Lemma A4 is exact at a stationary point; the identity bounds the imbalance by the measured gradient, "
           "so the tolerance is tied to the residual.", {"tol": BALANCE_TOL}),
        Check("t7.descent_bound", "t7_balanced_norms", 9, "construction", "le",
           "along a descent run: $\\sum_\\ell\\|W_\\ell\\|_F^2\\le2\\mathcal L_\\lambda(\\theta_0)/\\lambda$",
           "largest ratio of the left side to the right along the run", "every step of every member", "1",
           "Follows from $\\mathcal L_\\lambda$ not increasing; `t7.descends` checks that premise.",
           {"threshold": 1.0}),
        Check("t7.descends", "t7_balanced_norms", 9, "convergence", "le",
           "the full-batch GD run descends ($\\mathcal L_\\lambda$ non-increasing)",
           "largest relative increase of $\\mathcal L_\\lambda$ between steps", "every step of every member",
           "the notebook's `descent_tol`", "The premise of the descent bound: a property of the step size."),
    ]
    # ---- T8: claim 2 on the shared MNIST sweep
    R += _rank_sweep("t8", "t8_rank_vs_weight_decay")
    # ---- T9: claims 3 and 15 on synthetic data
    R += [
        Check("t9.claim3", "t9_rank_vs_tcv", 3, "empirical", "trend",
           "at fixed $\\lambda$, $d_K^F(W_\\ell)$ grows with $\\mathrm{TCV}(Z_{\\ell-1})$",
           "Spearman correlation of $\\mathrm{TCV}_1(Z_{\\ell-1})$ and $d_K^F(W_\\ell)$, per seed, over the spreads",
           "every weight matrix but the output layer (here the input's spread is the knob, so $W_1$ counts)",
           "the seed-mean interval of $\\rho$ above 0",
           "Claim 3 relates each matrix to the TCV of the features feeding it, whatever they are. " + _R_TREND_SEEDS,
           {"direction": "increasing"}),
        Check("t9.claim15", "t9_rank_vs_tcv", 15, "empirical", "slope_in",
           "$d_K^F(W_\\ell)$ roughly proportional to $\\mathrm{TCV}(Z_{\\ell-1})$",
           "least-squares slope of $\\log d_K^F(W_\\ell)$ on $\\log\\mathrm{TCV}_1(Z_{\\ell-1})$, per seed",
           "every weight matrix but the output layer",
           f"the seed-mean interval inside [{PROPORTIONAL_SLOPE[0]:g}, {PROPORTIONAL_SLOPE[1]:g}]",
           "Proportional means slope 1 on log-log axes; we read 'roughly' as an exponent within a factor of two "
           "of 1. A positive slope alone would accept any monotone relation.",
           {"range": PROPORTIONAL_SLOPE}),
    ]
    # ---- E1 / E3: the image sweeps
    for prefix, nb in (("e1", "e1_rank_vs_weight_decay"), ("e3", "e3_residual_networks")):
        R += _rank_sweep(prefix, nb)
        R += [
            Check(f"{prefix}.bound", nb, 4, "construction", "bound",
               "Theorem A, exact form, on every weight matrix", "$d_K^F$/bound, and bound$/\\|W_\\ell\\|_F$",
               "every weight matrix, $\\lambda>0$, seed", "1", _R_BOUND),
            Check(f"{prefix}.claim10", nb, 10, "empirical", "collapse",
               "DNC1 emerges: NC1 of the last hidden features falls during training and ends collapsed",
               "NC1 of the last hidden features at initialisation and after training, per member",
               "every member with $\\lambda>0$ (diverged members left out and counted)",
               f"NC1 $\\le{COLLAPSE_NC1:g}$ at the end",
               "Neural collapse as defined is NC1 $\\to0$; NC1 = 1 is within-class variance equal to between-class "
               "variance, and we call features collapsed one decade below. How NC1 varies with $\\lambda$ is "
               "reported (`.nc1_lambda`), since no abstract states a direction.",
               {"threshold": COLLAPSE_NC1}),
            Check(f"{prefix}.nc1_lambda", nb, 10, "report", "report",
               "NC1 of the last hidden features against $\\lambda$", "Spearman correlation per seed",
               "every member", "none (reported)", "No abstract states how collapse varies with $\\lambda$."),
        ]
    R += [
        Check("e1.scale_free", "e1_rank_vs_weight_decay", 14, "empirical", "trend",
           "the distance to rank $K$ follows the bound, scale-free", "as `t2.scale_free`", _HIDDEN_FED,
           "the seed-mean interval of $\\rho$ above 0",
           "As `t2.scale_free`: dividing by $\\|W_\\ell\\|_F$ removes the common scale. " + _R_TREND_SEEDS,
           {"direction": "increasing"}),
    ]
    # ---- E2: claims 3, 15 and the bound on Gaussian mixtures
    R += [
        Check("e2.claim3", "e2_proportional_to_tcv", 3, "empirical", "trend",
           "at fixed $\\lambda$, $d_K^F(W_\\ell)$ grows with $\\mathrm{TCV}_1(Z_{\\ell-1})$, for each $K$",
           "Spearman correlation per ($K$, layer) and seed over the spreads",
           "every weight matrix but the output layer, every $K$", "the seed-mean interval of $\\rho$ above 0",
           "As `t9.claim3`. " + _R_TREND_SEEDS, {"direction": "increasing"}),
        Check("e2.claim15", "e2_proportional_to_tcv", 15, "empirical", "slope_in",
           "$d_K^F(W_\\ell)$ roughly proportional to $\\mathrm{TCV}_1(Z_{\\ell-1})$, for each $K$",
           "log-log slope per $K$ and seed, pooled over layers", "every weight matrix but the output layer",
           f"the seed-mean interval inside [{PROPORTIONAL_SLOPE[0]:g}, {PROPORTIONAL_SLOPE[1]:g}]",
           "As `t9.claim15`.", {"range": PROPORTIONAL_SLOPE}),
        Check("e2.stationary_part", "e2_proportional_to_tcv", 15, "report", "report",
           "the same slope for the stationary part $d_K^F(\\Delta_\\ell Z_{\\ell-1}^\\top)/(\\lambda N)$",
           "log-log slope per $K$", "as `e2.claim15`", "none (reported)",
           "Removes the gradient term; shown to separate the optimiser from the relation."),
        Check("e2.bound", "e2_proportional_to_tcv", 4, "construction", "bound",
           "Theorem A on every $K$, spread, seed and layer", "$d_K^F$/bound, and bound$/\\|W_\\ell\\|_F$",
           "every weight matrix", "1", _R_BOUND),
    ]
    # ---- E4: no loss barrier (claim 12); the price of collapse under claim 11
    R += [
        Check("e4.no_barrier", "e4_no_loss_barrier", 12, "empirical", "le",
           "from every interpolating start there is a path to a DNC1 configuration along which $\\mathcal L_\\lambda$ "
           "does not increase",
           "per case, the smallest largest rise of $\\mathcal L_\\lambda$ (relative to its start) over the paths "
           "we build (straight line, constructed path)", "every (start, $\\lambda$) case", "the notebook's `tolerance`",
           "The claim is that such a path exists, so the best path found decides; a path of ours that rises "
           "shows only that that path is not the one.", ),
        Check("e4.endpoints", "e4_no_loss_barrier", 12, "construction", "le",
           "the endpoints are DNC1 (within/total variance ratio of every hidden layer about 0)",
           "largest ratio", "every case", "the notebook's `dnc1_tol`", "The construction collapses by design."),
        Check("e4.paths", "e4_no_loss_barrier", 12, "report", "report",
           "the largest rise along each path", "max rise per path kind", "every case", "none (reported)",
           "Shows which path attains the best."),
        Check("e4.price", "e4_no_loss_barrier", 11, "report", "report",
           "price of collapse: the DNC1 endpoint against the local minimum reached by training",
           "$(\\mathcal L_\\lambda^{\\rm DNC1}-\\mathcal L_\\lambda^{\\rm local})/\\mathcal L_\\lambda^{\\rm local}$",
           "every case", "none (reported)",
           "Global optimality (claim 11) is about the constrained representation cost, not this comparison."),
    ]
    # ---- E4b: DNC1 optimality (claim 11)
    R += [
        Check("e4b.fact", "e4b_dnc1_optimality", 11, "construction", "le",
           "the minimum-norm cost with collapsed inputs is at most the cost with spread inputs (random instances)",
           "largest ratio collapsed / spread", "every instance", "$1+$`rel_tol`", "An elementary inequality."),
        Check("e4b.layerwise", "e4b_dnc1_optimality", 11, "construction", "le",
           "trained interpolating nets, layer-wise: collapsing a layer's input does not raise its cost",
           "largest ratio", "every (net, layer) case", "$1+$`rel_tol`", "The same inequality per layer."),
        Check("e4b.chain", "e4b_dnc1_optimality", 11, "empirical", "le",
           "trained interpolating nets: the forward-consistent collapsed network costs no more",
           "largest ratio chain / before", "every (net, $\\ell_0$) case", "$1+$`rel_tol`",
           "Optimality of DNC1 under our reading of the constrained representation cost."),
        Check("e4b.ridge", "e4b_dnc1_optimality", 11, "construction", "le",
           "MSE read-out with weight decay: the optimal regularised loss falls as features collapse",
           "largest relative increase along the collapse", "every net", "$10^{-9}$", "A closed form.",
           {"threshold": 1e-9}),
    ]
    # ---- E5: our forecast method (claim 13)
    R += [
        Check("e5.rank", "e5_singular_value_forecast", 13, "method", "ge",
           "our forecast (the class-level reduced problem, global minimum) predicts the number of non-zero "
           "singular values", "share of (net, weight) cases whose rank matches", "every case", "1 (every case)",
           "Tests our forecast method: the paper's was not available.", {"threshold": 1.0}),
        Check("e5.values", "e5_singular_value_forecast", 13, "method", "le",
           "our forecast predicts the non-zero singular values", "largest relative error", "every case",
           "the notebook's `value_tol`", "Tests our forecast method: the paper's was not available."),
        Check("e5.nearest", "e5_singular_value_forecast", 13, "method", "le",
           "the trained spectra are among the reduced problem's minima (nearest minimum)",
           "largest relative error to the nearest minimum", "every case", "the notebook's `value_tol`",
           "Tests our forecast method: the paper's was not available."),
    ]
    # ---- E6: compression (our addition, claim 2's practical side)
    R += [
        Check("e6.compress", "e6_low_rank_compression", 2, "empirical", "difference",
           "truncating the scored matrices to rank $K$ costs less test accuracy at the largest $\\lambda$ than at "
           "the smallest", "paired per seed: accuracy drop at the largest $\\lambda$ minus the drop at the smallest",
           _HIDDEN_FED + " (only they are truncated)", "the seed-mean interval below 0",
           "If weight decay pushes those matrices towards rank $K$, truncation should cost less; a difference "
           "inside the seed spread decides nothing.", {"direction": "decreasing"}),
        Check("e6.drops", "e6_low_rank_compression", 2, "report", "report",
           "accuracy after rank-$K$ truncation, per $\\lambda$", "test accuracy drop per $\\lambda$",
           "every member", "none (reported)", "Context for `e6.compress`."),
    ]
    # ---- E7: any model (construction)
    R += [
        Check("e7.user", "e7_any_model", 4, "construction", "bound",
           "Theorem A on a network trained outside nrc", "$d_K^F$/bound, and bound$/\\|W_\\ell\\|_F$",
           "every layer", "1", _R_BOUND),
        Check("e7.nrc", "e7_any_model", 4, "construction", "bound",
           "Theorem A on an nrc-trained network read back as `nn.Module`", "$d_K^F$/bound", "every layer", "1",
           _R_BOUND),
        Check("e7.agree", "e7_any_model", 4, "construction", "le",
           "`analyze_model` agrees with `analyze`", "largest relative difference", "every number", "$10^{-9}$",
           "Two computations of the same float64 numbers.", {"threshold": 1e-9}),
    ]
    # ---- E8: Theorem A where it bites (terminal phase on MNIST)
    R += [
        Check("e8.bound", "e8_theorem_a_bites", 4, "construction", "bound",
           "Theorem A in the terminal phase", "$d_K^F$/bound, and bound$/\\|W_\\ell\\|_F$",
           "every layer, $\\lambda$, checkpoint", "1", _R_BOUND),
        Check("e8.informative", "e8_theorem_a_bites", 4, "report", "report",
           "where the bound becomes informative (bound $<\\|W\\|_F$) and how tight it gets",
           "bound$/\\|W_\\ell\\|_F$ and $d_K^F$/bound against NC1 of $Z_{\\ell-1}$", "hidden-fed matrices",
           "none (reported)", "The bound can only bite near collapse; this shows where."),
        Check("e8.claim10", "e8_theorem_a_bites", 10, "empirical", "collapse",
           "DNC1 emerges in the terminal phase: NC1 of the last hidden features falls and ends collapsed",
           "NC1 of the last hidden features at initialisation and at the end, per member", "every member",
           f"NC1 $\\le{COLLAPSE_NC1:g}$ at the end", "As `e1.claim10`.", {"threshold": COLLAPSE_NC1}),
    ]
    return tuple(R)


REGISTRY: tuple[Check, ...] = _build()
_BY_ID = {c.id: c for c in REGISTRY}
assert len(_BY_ID) == len(REGISTRY), "duplicate check ids"
for _chk in REGISTRY:
    assert _chk.kind in KINDS and _chk.statistic in _STATISTICS, _chk.id


def checks_of(notebook: str) -> list[Check]:
    """The declared checks of a notebook, in registry order."""
    return [c for c in REGISTRY if c.notebook == notebook]


def site_roles(arch) -> dict[str, str]:
    """``{site: "input" | "hidden" | "output"}``: what feeds each weight matrix of ``arch``.

    ``W1`` is fed by the input; the output layer ``W_L`` is at rank <= K trivially; every other
    matrix (and, in a residual network, every block's ``W_l`` and ``V_l``) is fed by hidden features.
    """
    names = [name for name, _, _ in arch.sites()]
    return {n: "input" if i == 0 else "output" if i == len(names) - 1 else "hidden" for i, n in enumerate(names)}


def evaluate_one(check: Check | str, inp, *, variant: str = "") -> dict:
    """Judge one check on its input; returns the record dict a notebook stores and pages show.

    Raises
    ------
    CheckError
        When the input cannot be evaluated (missing fields, non-finite numbers, ...).
    """
    chk = _BY_ID[check] if isinstance(check, str) else check
    what = chk.id + (f"@{variant}" if variant else "")
    verdict, value, interval, measured, detail, *extra = _STATISTICS[chk.statistic](inp, chk.params, what)
    if chk.kind == "report":
        verdict = "reported"
    return {"id": what, "check": chk.id, "variant": variant, "claim": chk.claim, "kind": chk.kind,
            "statement": chk.statement, "quantity": chk.quantity, "scope": chk.scope,
            "threshold": chk.threshold, "reason": chk.reason, "verdict": verdict,
            "value": None if value is None else float(value),
            "interval": None if interval is None else [float(x) for x in interval],
            "measured": measured, "detail": detail, **(extra[0] if extra else {})}


def evaluate(notebook: str, inputs: Mapping[str, object]) -> list[dict]:
    """Judge every declared check of ``notebook`` from its recorded inputs.

    Parameters
    ----------
    notebook : str
        The notebook's name (file stem).
    inputs : mapping
        Check id (``"e1.claim2"``, or ``"e1.claim2@fashion-mnist"`` for a variant) -> the input its
        statistic reads.

    Returns
    -------
    list of dict
        One record per evaluated check (registry order, variants in input order).

    Raises
    ------
    CheckError
        An input for an undeclared check, a declared check without input (unless optional), or an
        input that cannot be evaluated.
    """
    declared = checks_of(notebook)
    if not declared:
        raise CheckError(f"{notebook}: no checks declared in nrc_companion.verdicts.REGISTRY")
    ids = {c.id for c in declared}
    unknown = sorted(k for k in inputs if k.split("@", 1)[0] not in ids)
    if unknown:
        raise CheckError(f"{notebook}: inputs for undeclared checks {unknown}")
    out = []
    for chk in declared:
        keys = [k for k in inputs if k.split("@", 1)[0] == chk.id]
        if not keys:
            if chk.optional:
                continue
            raise CheckError(f"{notebook}: check {chk.id} has no input (every declared check must be evaluated)")
        for k in keys:
            out.append(evaluate_one(chk, inputs[k], variant=k.split("@", 1)[1] if "@" in k else ""))
    return out


_ORDER = {"differs": 0, "inconclusive": 1, "pass": 2}


def claim_verdicts(records: Mapping[str, Mapping], claims: Sequence[Mapping]) -> list[dict]:
    """One row per claim, from the notebooks' evaluated checks.

    A claim's verdict comes from its deciding checks (kinds ``empirical`` and ``construction``):
    ``differs`` if any differs, else ``inconclusive`` if any is, else ``pass``. Convergence checks
    are listed apart and never decide; a claim whose checks are all ``method`` gets the verdict
    of those, labelled as a test of our method. ``context`` claims are never tested; a claim with
    no check is ``not checked``.

    Parameters
    ----------
    records : mapping
        notebook name -> its record (``{"checks": [...]}``).
    claims : sequence of mapping
        The claim list (``book/claims.yaml``): ``claim``, ``kind``, ``context_only``.
    """
    by_claim: dict[int, list[tuple[str, dict]]] = {}
    for nb, rec in records.items():
        for c in rec.get("checks", []) or []:
            if "verdict" in c:
                by_claim.setdefault(int(c["claim"]), []).append((nb, c))
    rows = []
    for cl in claims:
        n = int(cl["claim"])
        found = by_claim.get(n, [])
        deciding = [(nb, c) for nb, c in found if c["kind"] in ("empirical", "construction")]
        method = [(nb, c) for nb, c in found if c["kind"] == "method"]
        basis = deciding or method
        if cl.get("context_only"):
            verdict, decider = "context", None
        elif not basis:
            verdict, decider = "not checked", None
        else:
            decider = min(basis, key=lambda x: _ORDER[x[1]["verdict"]])
            verdict = decider[1]["verdict"]
        rows.append({"claim": n, "verdict": verdict, "deciding": decider, "checks": found,
                     "by_method": bool(method) and not deciding,
                     "convergence": [(nb, c) for nb, c in found if c["kind"] == "convergence"],
                     "construction_only": bool(deciding) and all(c["kind"] == "construction" for _, c in deciding)})
    return rows


def sentence(check: Mapping) -> str:
    """A page headline for an evaluated check: ``'pass: <statement>; <measured>.'``."""
    word = {"pass": "holds", "differs": "differs", "inconclusive": "inconclusive",
            "reported": "reported"}[check["verdict"]]
    return f"**{word}**: {check['statement']} ({check['measured']})."


# ---------------------------------------------------------------------------------------------
# criteria changed since the first full run (commit 13136b7): old rule -> new rule, and why
# ---------------------------------------------------------------------------------------------

#: Each entry: the old check(s) by (notebook, index in the old record), the new check ids, the
#: old rule, the new rule and the reason from the theory. The old verdicts are read from the
#: committed record of that commit (``book/criteria_baseline.json``, made by
#: ``python -m nrc_companion.verdicts --baseline 13136b7``), never typed here.
CHANGES: tuple[dict, ...] = (
    {"claim": 2, "old": [("e1_rank_vs_weight_decay", i) for i in (0, 1, 2, 7, 8, 9)], "new": ["e1.claim2", "e1.rank"],
     "old_rule": "Spearman($\\lambda$, measure) < 0 over all members, in every hidden layer including $W_1$, for "
                 "$d_K/\\|W\\|$, rank$_{0.01}$ and rank$_{0.001}$; a constant rank counted as a failure (NaN)",
     "new_rule": "per-seed Spearman of $d_K^F/\\|W\\|_F$, seed-mean interval below 0, in the hidden-fed matrices; "
                 "ranks reported; a constant quantity has $\\rho=0$",
     "reason": _R_CLAIM2},
    {"claim": 2, "old": [("e3_residual_networks", 0), ("e3_residual_networks", 1), ("e3_residual_networks", 2)],
     "new": ["e3.claim2", "e3.rank"], "old_rule": "as E1, including $W_1$",
     "new_rule": "as E1: the residual blocks' $W_\\ell$, $V_\\ell$", "reason": _R_CLAIM2},
    {"claim": 2, "old": [("t8_rank_vs_weight_decay", 0), ("t8_rank_vs_weight_decay", 1)],
     "new": ["t8.claim2", "t8.rank"],
     "old_rule": "largest Spearman over the layers < 0 (every layer including $W_1$); a constant rank counted as 0",
     "new_rule": "the same rule as E1, on the same members", "reason": "T8 and E1 read the same members and "
     "must apply one rule; the constant convention is now the same everywhere."},
    {"claim": 2, "old": [("e6_low_rank_compression", 0), ("e6_low_rank_compression", 1)], "new": ["e6.compress", "e6.drops"],
     "old_rule": "mean accuracy drop at the largest $\\lambda$ < at the smallest (every hidden matrix truncated, $W_1$ "
                 "included); and the drop at the largest $\\lambda$ <= acc_tol",
     "new_rule": "paired per-seed difference with its interval, truncating only the hidden-fed matrices; the "
                 "absolute drop is reported",
     "reason": "A difference inside the seed spread decides nothing; $W_1$ is outside the claim's scope."},
    {"claim": 14, "old": [("t2_rank_tcv_bound", 2)], "new": ["t2.scale_free"],
     "old_rule": "Spearman($d_K$, bound) > 0 over all rows",
     "new_rule": "per-seed Spearman of $d_K/\\|W\\|$ and bound$/\\|W\\|$ over the hidden-fed matrices, interval above 0",
     "reason": "Both sides scale with $\\|W\\|$ ($\\rho(d_K,\\|W\\|_F)=0.99$ in the first run), so the raw "
               "correlation measured the common scale, not the relation."},
    {"claim": 14, "old": [("e1_rank_vs_weight_decay", 6), ("e1_rank_vs_weight_decay", 13)], "new": ["e1.scale_free"],
     "old_rule": "Spearman(TCV ratio, $d_K/\\|W\\|$) > 0 per layer $\\ell\\ge2$ over all members",
     "new_rule": "as `t2.scale_free`", "reason": "One reading of claim 14 across notebooks, judged per seed."},
    {"claim": 15, "old": [("t9_rank_vs_tcv", 1), ("e2_proportional_to_tcv", 2), ("e2_proportional_to_tcv", 3)],
     "new": ["t9.claim15", "e2.claim15", "e2.stationary_part"],
     "old_rule": "log-log slope > 0", "new_rule": "per-seed slope, interval inside [0.5, 2]",
     "reason": "'Roughly proportional' means a slope near 1; a positive slope accepts any monotone relation "
               "(the first run passed slopes from 0.81 to 3.11)."},
    {"claim": 1, "old": [("t1_stationarity", 0), ("t1_stationarity", 1)], "new": ["t1.stationarity", "t1.sgd_vs_refined"],
     "old_rule": "largest residual after 1000 L-BFGS steps <= 1e-4; SGD-to-refined factor >= 10",
     "new_rule": "residual <= 1e-4 at the largest budget; still halving between the last two budgets: "
                 "inconclusive (the optimiser's limit); the SGD factor reported",
     "reason": "Claim 1 defines a stationary point; how far an optimiser gets is convergence, kept apart."},
    {"claim": 8, "old": [("t7_balanced_norms", 1), ("t7_balanced_norms", 2)], "new": ["t7.balance"],
     "old_rule": "relative spread and identity error <= balance_tol = 1e-3",
     "new_rule": "relative spread <= 1e-3; above it but within what the measured residual allows (then inconclusive)",
     "reason": "Lemma A4's identity bounds the imbalance by the measured gradient; the tolerance is tied to it."},
    {"claim": 10, "old": [("e1_rank_vs_weight_decay", 4), ("e1_rank_vs_weight_decay", 5),
                          ("e1_rank_vs_weight_decay", 11), ("e1_rank_vs_weight_decay", 12),
                          ("e3_residual_networks", 4), ("e3_residual_networks", 5)],
     "new": ["e1.claim10", "e1.nc1_lambda", "e3.claim10", "e3.nc1_lambda"],
     "old_rule": "NC1 of the last hidden layer below the input's in every member; NC1 falls with $\\lambda$",
     "new_rule": f"NC1 falls during training and ends at or below {COLLAPSE_NC1:g} in every member; "
                 "the $\\lambda$ trend reported",
     "reason": "Neural collapse is NC1 $\\to0$, not 'below the input'; no abstract says NC1 falls with $\\lambda$."},
    {"claim": 12, "old": [("e4_no_loss_barrier", 0), ("e4_no_loss_barrier", 2), ("e4_no_loss_barrier", 3),
                          ("e4_no_loss_barrier", 4)], "new": ["e4.no_barrier", "e4.paths", "e4.price"],
     "old_rule": "every path of ours (constructed, its collapse segment, straight line) rises by <= tolerance, "
                 "and the DNC1 endpoint is no worse than the local minimum",
     "new_rule": "the best path found rises by <= tolerance; the price of collapse reported under claim 11",
     "reason": "The claim asserts that a non-increasing path exists; the comparison of minima is claim 11's "
               "question."},
    {"claim": 13, "old": [("e5_singular_value_forecast", 0), ("e5_singular_value_forecast", 1),
                          ("e5_singular_value_forecast", 2)], "new": ["e5.rank", "e5.values", "e5.nearest"],
     "old_rule": "scored as the paper's claim 13", "new_rule": "labelled a test of our forecast method",
     "reason": "The paper's forecast method was not available; ours may fail where theirs would not."},
    {"claim": 3, "old": [("t9_rank_vs_tcv", 0), ("e2_proportional_to_tcv", 0), ("e2_proportional_to_tcv", 1)],
     "new": ["t9.claim3", "e2.claim3"],
     "old_rule": "Spearman(TCV, $d_K$) > 0 per layer (per $K$ in E2) over all members pooled across seeds; E2 also "
                 "scored the stationary part",
     "new_rule": "per-seed Spearman, seed-mean interval above 0; the stationary part reported",
     "reason": "A trend is judged with its spread over seeds; the stationary part removes the optimiser's term and "
               "shows it, but the claim is about $W_\\ell$ itself."},
    {"claim": 6, "old": [("t4_any_partition", 2)], "new": ["t4.smaller"],
     "old_rule": "the $k$-means bound is not larger than the labels' on at least half the weights (scored)",
     "new_rule": "reported", "reason": "Claim 6 says the bound holds for any partition; that $k$-means often "
     "gives a smaller one is an expectation of ours, not a claim."},
    {"claim": 5, "old": [("t5_corollary_a1_low_rank", 1), ("t5_corollary_a1_low_rank", 3),
                         ("t5_corollary_a1_low_rank", 4)], "new": ["t5.ce_rank", "t5.bias_trend", "t5.dnc1_exact"],
     "old_rule": "$s_K/s_1\\le$ zero_tol; $d_{K-1}/\\|W\\|$ at the largest $\\lambda$ <= near_tol and below the smallest "
                 "$\\lambda$'s; exact DNC1: $d_K/\\|W\\|\\le$ zero_tol (counted under claim 4)",
     "new_rule": "the same tolerances, with what the measured residual allows (above the tolerance but within it: "
                 "inconclusive); the $K-1$ trend per seed with its interval; exact DNC1 under claim 5",
     "reason": "The corollary is exact at stationary points; the optimiser's distance from one is kept apart. Exact "
               "DNC1 implying rank $\\le K$ is Corollary A1, claim 5."},
    {"claim": 9, "old": [("t7_balanced_norms", 3)], "new": ["t7.descent_bound", "t7.descends"],
     "old_rule": "budget ratio <= 1 and largest increase of $\\mathcal L_\\lambda$ <= descent_tol, one check",
     "new_rule": "the bound (construction) and the descent of the run (convergence), apart",
     "reason": "The bound follows from descent; whether a step size descends is the optimiser's property."},
    {"claim": 4, "old": [("e7_any_model", 1)], "new": ["e7.nrc", "e7.agree"],
     "old_rule": "the bound on an nrc-trained network and agreement of `analyze_model` with `analyze`, one check",
     "new_rule": "two checks", "reason": "Two different statements, each with its own threshold."},
    {"claim": 4, "old": [("derivation_theorem_a", 2)], "new": ["deriv.agree"],
     "old_rule": "every quantity's relative difference to `nrc.site_quantities` <= agree_tol, each on its own scale",
     "new_rule": "the same, with $\\|G_\\ell\\|_F$ and the residual on the scale $\\lambda\\|W_\\ell\\|_F$ of the terms "
                 "that cancel in $G_\\ell=\\lambda W_\\ell+\\nabla_{W_\\ell}\\mathcal L_0$",
     "reason": "Near stationarity $\\|G\\|$ is a difference of two terms about $10^7$ times larger, so two exact "
               "float64 computations of it differ by $10^{-9}$ of itself (measured in a trial run after the analysis "
               "was rewritten); the rounding of that difference is set by the terms, not by the result."},
    {"claim": 4, "old": [("e2_proportional_to_tcv", 4)], "new": ["e2.bound"],
     "old_rule": "the bound check counted under claim 14", "new_rule": "counted under claim 4 (construction)",
     "reason": "It is Theorem A's inequality, which claim 4 states."},
)


#: Old checks whose rule did not change, with the check that now carries it (so that every
#: check of the first run is accounted for: changed in ``CHANGES`` or listed here).
UNCHANGED: dict[tuple[str, int], str] = {
    ("derivation_theorem_a", 0): "deriv.identity", ("derivation_theorem_a", 1): "deriv.chain",
    ("e1_rank_vs_weight_decay", 3): "e1.bound", ("e1_rank_vs_weight_decay", 10): "e1.bound",
    ("e3_residual_networks", 3): "e3.bound", ("e4_no_loss_barrier", 1): "e4.endpoints",
    ("e4b_dnc1_optimality", 0): "e4b.fact", ("e4b_dnc1_optimality", 1): "e4b.layerwise",
    ("e4b_dnc1_optimality", 2): "e4b.chain", ("e4b_dnc1_optimality", 3): "e4b.ridge",
    ("e7_any_model", 0): "e7.user", ("t2_rank_tcv_bound", 0): "t2.bound", ("t2_rank_tcv_bound", 1): "t2.bound_cs",
    ("t3_lemma_a2_constant", 0): "t3.a2", ("t3_lemma_a2_constant", 1): "t3.order", ("t3_lemma_a2_constant", 2): "t3.steps",
    ("t4_any_partition", 0): "t4.kmeans", ("t4_any_partition", 1): "t4.random",
    ("t5_corollary_a1_low_rank", 0): "t5.ce_chain", ("t5_corollary_a1_low_rank", 2): "t5.bias_chain",
    ("t6_tcv_propagation", 0): "t6.a3", ("t6_tcv_propagation", 1): "t6.chain", ("t7_balanced_norms", 0): "t7.identity",
}


def changed_criteria(records: Mapping[str, Mapping], baseline: Mapping) -> list[dict]:
    """The scorecard's list of changed criteria: old rule and verdict, new rule and verdict, why.

    Parameters
    ----------
    records : mapping
        notebook name -> its current record (``{"checks": [...]}``, evaluated by this module).
    baseline : mapping
        ``book/criteria_baseline.json``: the old records' checks at the old commit.

    Returns
    -------
    list of dict
        One row per entry of ``CHANGES``: ``claim``, ``old`` (list of ``{"notebook", "what",
        "measured", "verdict"}``), ``old_rule``, ``new_rule``, ``new`` (list of ``{"notebook", "id",
        "verdict", "measured"}``; ids not recorded by this run are listed with verdict ``"not run"``),
        ``reason``, ``commit``.
    """
    rows = []
    for ch in CHANGES:
        old = []
        for nb, i in ch["old"]:
            c = baseline["checks"][nb][i]
            old.append({"notebook": nb, "what": c["what"], "measured": c["measured"],
                        "verdict": "pass" if c["passed"] else "differs"})
        new = []
        for cid in ch["new"]:
            nb = _BY_ID[cid].notebook
            found = [c for c in (records.get(nb, {}).get("checks") or []) if c.get("check") == cid]
            new += [{"notebook": nb, "id": c["id"], "verdict": c["verdict"], "measured": c["measured"]} for c in found] \
                or [{"notebook": nb, "id": cid, "verdict": "not run", "measured": ""}]
        rows.append({"claim": ch["claim"], "old": old, "old_rule": ch["old_rule"], "new_rule": ch["new_rule"],
                     "new": new, "reason": ch["reason"], "commit": baseline.get("commit", "")})
    return rows


def _baseline(commit: str, out: str) -> None:
    """Write the old records' checks at ``commit`` (for the changed-criteria table)."""
    import json
    import subprocess
    from pathlib import Path

    listing = subprocess.run(["git", "ls-tree", "--name-only", f"{commit}:book/published/results"], check=True,
                             capture_output=True, text=True).stdout.split()
    names = sorted(Path(f).stem for f in listing if f.endswith(".json"))
    data = {"commit": commit, "checks": {}}
    for nb in names:
        text = subprocess.run(["git", "show", f"{commit}:book/published/results/{nb}.json"], check=True,
                              capture_output=True, text=True).stdout
        data["checks"][nb] = [{k: c[k] for k in ("claim", "what", "measured", "passed")}
                              for c in json.loads(text)["checks"]]
    Path(out).write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":  # python -m nrc_companion.verdicts --baseline COMMIT [--out FILE]
    import argparse

    ap = argparse.ArgumentParser(prog="python -m nrc_companion.verdicts", description="Write the old verdicts at a commit.")
    ap.add_argument("--baseline", required=True, help="commit of the old run, e.g. 13136b7")
    ap.add_argument("--out", default="book/criteria_baseline.json")
    a = ap.parse_args()
    _baseline(a.baseline, a.out)
