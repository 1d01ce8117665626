"""Every check a notebook records, its kind, and its criterion recomputed from the recorded numbers.

A notebook publishes ``values`` and ``checks`` (``nrc.record``). The tests do not ask that a
claim *passes*: for every recorded check they recompute the verdict from the recorded values by
the notebook's stated criterion and assert that the recorded verdict is that one, whichever way
it comes out. Only checks that hold **by construction** (identities, Theorem A and its lemmas
with every term measured, exact algebraic steps) must pass; an **empirical** check (a trend, a
convergence, a comparison) may come out "differs" and the tests stay green. Smoke settings are
never tuned to make a claim pass.

Criteria whose inputs the record does not carry in machine-readable form (per-layer Spearman
correlations are stored as text rounded to 2 decimals; maxima skip NaN layers) return ``None``
("undetermined") where the recorded numbers cannot decide; they still fail a verdict the
numbers contradict.

=====================  =====  =====  ============  ==================================================
notebook               check  claim  kind          criterion (recorded values; p = notebook parameter)
=====================  =====  =====  ============  ==================================================
derivation_theorem_a   0      4      construction  max_identity_err <= 1e-10
derivation_theorem_a   1      4      construction  max_rank_P <= p.num_classes and all_chains_hold
derivation_theorem_a   2      4      construction  max_diff_vs_nrc <= p.agree_tol
t1_stationarity        0      1      empirical     n_checked > 0 and max_residual_checked <= tolerance
t1_stationarity        1      1      empirical     improvement_factor >= 10 (only with a 0 budget)
t2_rank_tcv_bound      0      4      construction  n_violations == 0
t2_rank_tcv_bound      1      4      construction  n_violations_cs == 0 and n_cs_below_exact == 0
t2_rank_tcv_bound      2      14     empirical     spearman_dk_bound > 0
t3_lemma_a2_constant   0      4      construction  n_violations_a2 == 0
t3_lemma_a2_constant   1      4      construction  min_a2_over_cs, min_cs_over_exact >= 1 - 1e-9
t3_lemma_a2_constant   2      4      construction  max_step1, max_step2 <= 1 + 1e-9
t4_any_partition       0      6      construction  n_violations_kmeans == 0
t4_any_partition       1      6      construction  n_violations_random == 0
t4_any_partition       2      6      empirical     frac_kmeans_not_larger >= 0.5
t5_corollary_a1        0      5      construction  a_max_chain_ratio <= 1 + 1e-9
t5_corollary_a1        1      5      empirical     a_max_sK_rel <= p.zero_tol
t5_corollary_a1        2      5      construction  b_max_km1_ratio <= 1 + 1e-9
t5_corollary_a1        3      5      empirical     b_max_dKm1_rel_top <= p.near_tol and b_decreases
t5_corollary_a1        4      4      empirical     c_max_dK_rel_zero <= p.zero_tol and
                                                   c_max_bound_ratio_zero <= 1 + 1e-9 (bound part:
                                                   by construction, asserted separately)
t6_tcv_propagation     0      7      construction  max_a3_ratio <= 1 + 1e-9
t6_tcv_propagation     1      7      construction  max_chain_ratio <= 1 + 1e-9
t7_balanced_norms      0      8      construction  max(pair, identity exact ratios) <= 1 + 1e-9
t7_balanced_norms      1      8      empirical     max_rel_spread <= p.balance_tol
t7_balanced_norms      2      8      empirical     max_identity_rel_err <= p.balance_tol
t7_balanced_norms      3      9      empirical     gd_max_budget_ratio <= 1 and
                                                   gd_max_increase <= p.descent_tol (GD descends
                                                   only for a small enough step)
t8_rank_vs_weight_decay 0     2      empirical     every layer's Spearman < 0 (max_spearman_dK_rel)
t8_rank_vs_weight_decay 1     2      empirical     every layer's Spearman <= 0 (max_spearman_rank)
t9_rank_vs_tcv         0      3      empirical     every layer's Spearman > 0 (min_spearman_tcv)
t9_rank_vs_tcv         1      15     empirical     every layer's slope > 0 (min_slope)
e1_rank_vs_weight_decay 0-2   2      empirical     per-site Spearman (dK_rel, rank_1e-2, rank_1e-3) < 0
e1_rank_vs_weight_decay 3     4      construction  max_bound_ratio <= 1 + 1e-9
e1_rank_vs_weight_decay 4     10     empirical     n_nc1_below_input == n_members - n_diverged
e1_rank_vs_weight_decay 5     10     empirical     spearman_nc1_last < 0
e1_rank_vs_weight_decay 6     14     empirical     per-site Spearman(TCV ratio, dK_rel) > 0 (if any)
e2_proportional_to_tcv 0-1    3      empirical     per (K, layer) Spearman > 0 (W, stationary part)
e2_proportional_to_tcv 2-3    15     empirical     pooled slopes > 0 (W, stationary part)
e2_proportional_to_tcv 4      14     construction  max_bound_ratio <= 1 + 1e-9
e3_residual_networks   0-2    2      empirical     per-site Spearman (dK_rel, rank_1e-2, rank_1e-3) < 0
e3_residual_networks   3      4      construction  max_bound_ratio <= 1 + 1e-9
e3_residual_networks   4      10     empirical     n_nc1_below_input == n_members - n_diverged
e3_residual_networks   5      10     empirical     spearman_nc1_last < 0
e4_no_loss_barrier     0      12     empirical     n_cases > 0 and max_barrier_rel <= tolerance
e4_no_loss_barrier     1      12     construction  n_cases > 0 and max_tcv_ratio_end <= p.dnc1_tol
e4_no_loss_barrier     2      12     empirical     n_cases > 0 and max_line_rise_rel <= tolerance
e4_no_loss_barrier     3      12     empirical     n_cases > 0 and max_rise_rel <= tolerance
e4_no_loss_barrier     4      12     empirical     n_cases > 0 and max_price_of_collapse <= tolerance
e4b_dnc1_optimality    0      11     construction  fact_max_ratio <= 1 + p.rel_tol and
                                                   fact_identity_err < 1e-8
e4b_dnc1_optimality    1      11     construction  n_interpolating > 0 and
                                                   max_layerwise_ratio <= 1 + p.rel_tol
e4b_dnc1_optimality    2      11     empirical     n_interpolating > 0 and max_chain_ratio <= 1 + p.rel_tol
e4b_dnc1_optimality    3      11     construction  n_ridge_members > 0 and ridge_max_drop <= 1e-9
e5_singular_value_fc   0      13     empirical     n_cases > 0 and rank_match_global == 1
e5_singular_value_fc   1      13     empirical     n_cases > 0 and max_rel_error_global <= value_tol
e5_singular_value_fc   2      13     empirical     rank_match_nearest == 1 and
                                                   max_rel_error_nearest <= value_tol
e6_low_rank_compression 0     2      empirical     drop_rank_k_largest_lambda < drop_rank_k_smallest_lambda
e6_low_rank_compression 1     2      empirical     drop_rank_k_largest_lambda <= acc_tol
e7_any_model           0      4      construction  user_max_bound_ratio <= 1 + 1e-9
e7_any_model           1      4      construction  nrc_max_bound_ratio <= 1 + 1e-9 and
                                                   max_rel_diff_analyze <= 1e-9
=====================  =====  =====  ============  ==================================================
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-9


class Criterion(NamedTuple):
    claim: int
    kind: str  # "construction" or "empirical"
    verdict: Callable[[dict, dict], bool | None]  # (values, parameters) -> verdict, None if undetermined
    present: Callable[[dict, dict], bool] = lambda v, p: True


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _le(x, bound) -> bool:
    return _finite(x) and x <= bound


def _numbers(text: str) -> list[str]:
    """The per-item numbers of a text like ``'W1: -0.71, W2: nan (constant)'`` (decimals or nan)."""
    return re.findall(r"-?\d+\.\d+|nan", str(text))


def all_negative(text: str) -> bool | None:
    """All items < 0 (``'-0.00'`` is negative: rounded from a value in (-0.005, 0))."""
    items = _numbers(text)
    if not items or any(t == "nan" for t in items):
        return False
    return all(t.startswith("-") for t in items)


def all_positive(text: str) -> bool | None:
    """All items > 0; ``None`` when an item reads ``0.00`` (sign lost by rounding)."""
    items = _numbers(text)
    if not items or any(t == "nan" or t.startswith("-") for t in items):
        return False
    if any(float(t) == 0 for t in items):
        return None
    return True


def _extreme_says(x, ok: Callable[[float], bool]) -> bool | None:
    """Verdict "every layer satisfies ok" from the recorded NaN-skipping extreme ``x``.

    If the extreme fails (or is NaN: no finite layer), the verdict is False; if it holds, a NaN
    layer could still have failed the check, so the numbers cannot decide (None).
    """
    if not _finite(x) or not ok(x):
        return False
    return None


def _and(*parts):
    """Three-valued and: False if any part is False, None if any is None, else True."""
    if any(p is False for p in parts):
        return False
    if any(p is None for p in parts):
        return None
    return True


C, E = "construction", "empirical"

# The rank-against-weight-decay checks E1 and E3 both record (claims 2, 4 and 10).
_RANK_SWEEP = [
    Criterion(2, E, lambda v, p: all_negative(v["spearman_dk_rel_by_site"])),
    Criterion(2, E, lambda v, p: all_negative(v["spearman_rank2_by_site"])),
    Criterion(2, E, lambda v, p: all_negative(v["spearman_rank3_by_site"])),
    Criterion(4, C, lambda v, p: _le(v["max_bound_ratio"], 1 + RTOL)),
    Criterion(10, E, lambda v, p: v["n_nc1_below_input"] == v["n_members"] - v["n_diverged"]),
    Criterion(10, E, lambda v, p: _finite(v["spearman_nc1_last"]) and v["spearman_nc1_last"] < 0),
]

CRITERIA: dict[str, list[Criterion]] = {
    "derivation_theorem_a": [
        Criterion(4, C, lambda v, p: _le(v["max_identity_err"], 1e-10)),
        Criterion(4, C, lambda v, p: v["max_rank_P"] <= p["num_classes"] and v["all_chains_hold"] is True),
        Criterion(4, C, lambda v, p: _le(v["max_diff_vs_nrc"], p["agree_tol"])),
    ],
    "t1_stationarity": [
        Criterion(1, E, lambda v, p: v["n_checked"] > 0 and _le(v["max_residual_checked"], v["tolerance"])),
        Criterion(1, E, lambda v, p: _finite(v["improvement_factor"]) and v["improvement_factor"] >= 10,
                  present=lambda v, p: 0 in list(p["refine_steps"]) and v["final_budget"] > 0),
    ],
    "t2_rank_tcv_bound": [
        Criterion(4, C, lambda v, p: v["n_violations"] == 0),
        Criterion(4, C, lambda v, p: v["n_violations_cs"] == 0 and v["n_cs_below_exact"] == 0),
        Criterion(14, E, lambda v, p: _finite(v["spearman_dk_bound"]) and v["spearman_dk_bound"] > 0),
    ],
    "t3_lemma_a2_constant": [
        Criterion(4, C, lambda v, p: v["n_violations_a2"] == 0),
        Criterion(4, C, lambda v, p: v["min_a2_over_cs"] >= 1 - RTOL and v["min_cs_over_exact"] >= 1 - RTOL),
        Criterion(4, C, lambda v, p: _le(v["max_step1"], 1 + RTOL) and _le(v["max_step2"], 1 + RTOL)),
    ],
    "t4_any_partition": [
        Criterion(6, C, lambda v, p: v["n_violations_kmeans"] == 0),
        Criterion(6, C, lambda v, p: v["n_violations_random"] == 0),
        Criterion(6, E, lambda v, p: v["frac_kmeans_not_larger"] >= 0.5),
    ],
    "t5_corollary_a1_low_rank": [
        Criterion(5, C, lambda v, p: _le(v["a_max_chain_ratio"], 1 + RTOL)),
        Criterion(5, E, lambda v, p: _le(v["a_max_sK_rel"], p["zero_tol"])),
        Criterion(5, C, lambda v, p: _le(v["b_max_km1_ratio"], 1 + RTOL)),
        Criterion(5, E, lambda v, p: _le(v["b_max_dKm1_rel_top"], p["near_tol"]) and v["b_decreases"] is True),
        Criterion(4, E, lambda v, p: _le(v["c_max_dK_rel_zero"], p["zero_tol"])
                  and _le(v["c_max_bound_ratio_zero"], 1 + RTOL)),
    ],
    "t6_tcv_propagation": [
        Criterion(7, C, lambda v, p: _le(v["max_a3_ratio"], 1 + RTOL)),
        Criterion(7, C, lambda v, p: _le(v["max_chain_ratio"], 1 + RTOL)),
    ],
    "t7_balanced_norms": [
        Criterion(8, C, lambda v, p: _le(max(v["max_pair_exact_ratio"], v["max_identity_exact_ratio"]), 1 + RTOL)),
        Criterion(8, E, lambda v, p: _le(v["max_rel_spread"], p["balance_tol"])),
        Criterion(8, E, lambda v, p: _le(v["max_identity_rel_err"], p["balance_tol"])),
        Criterion(9, E, lambda v, p: _le(v["gd_max_budget_ratio"], 1) and _le(v["gd_max_increase"], p["descent_tol"])),
    ],
    "t8_rank_vs_weight_decay": [
        Criterion(2, E, lambda v, p: _extreme_says(v["max_spearman_dK_rel"], lambda x: x < 0)),
        Criterion(2, E, lambda v, p: _extreme_says(v["max_spearman_rank"], lambda x: x <= 0)),
    ],
    "t9_rank_vs_tcv": [
        Criterion(3, E, lambda v, p: _extreme_says(v["min_spearman_tcv"], lambda x: x > 0)),
        Criterion(15, E, lambda v, p: _extreme_says(v["min_slope"], lambda x: x > 0)),
    ],
    "e1_rank_vs_weight_decay": [
        *_RANK_SWEEP,
        Criterion(14, E, lambda v, p: all_positive(v["spearman_dk_tcv_by_site"]),
                  present=lambda v, p: bool(_numbers(v["spearman_dk_tcv_by_site"]))),
    ],
    "e2_proportional_to_tcv": [
        Criterion(3, E, lambda v, p: all_positive(v["spearman_by_k_layer"])),
        Criterion(3, E, lambda v, p: all_positive(v["spearman_stat_by_k_layer"])),
        Criterion(15, E, lambda v, p: _and(all_positive(v["pooled_slopes"]),
                                           _finite(v["min_pooled_slope"]) and v["min_pooled_slope"] > 0)),
        Criterion(15, E, lambda v, p: _and(all_positive(v["pooled_slopes_stat"]),
                                           _finite(v["min_pooled_slope_stat"]) and v["min_pooled_slope_stat"] > 0)),
        Criterion(14, C, lambda v, p: _le(v["max_bound_ratio"], 1 + RTOL)),
    ],
    "e3_residual_networks": [
        *_RANK_SWEEP,
    ],
    "e4_no_loss_barrier": [
        Criterion(12, E, lambda v, p: v["n_cases"] > 0 and _le(v["max_barrier_rel"], v["tolerance"])),
        Criterion(12, C, lambda v, p: v["n_cases"] > 0 and _le(v["max_tcv_ratio_end"], p["dnc1_tol"])),
        Criterion(12, E, lambda v, p: v["n_cases"] > 0 and _le(v["max_line_rise_rel"], v["tolerance"])),
        Criterion(12, E, lambda v, p: v["n_cases"] > 0 and _le(v["max_rise_rel"], v["tolerance"])),
        Criterion(12, E, lambda v, p: v["n_cases"] > 0 and _le(v["max_price_of_collapse"], v["tolerance"])),
    ],
    "e4b_dnc1_optimality": [
        Criterion(11, C, lambda v, p: _le(v["fact_max_ratio"], 1 + p["rel_tol"]) and v["fact_identity_err"] < 1e-8),
        Criterion(11, C, lambda v, p: v["n_interpolating"] > 0 and _le(v["max_layerwise_ratio"], 1 + p["rel_tol"])),
        Criterion(11, E, lambda v, p: v["n_interpolating"] > 0 and _le(v["max_chain_ratio"], 1 + p["rel_tol"])),
        Criterion(11, C, lambda v, p: v["n_ridge_members"] > 0 and _le(v["ridge_max_drop"], 1e-9)),
    ],
    "e5_singular_value_forecast": [
        Criterion(13, E, lambda v, p: v["n_cases"] > 0 and v["rank_match_global"] == 1.0),
        Criterion(13, E, lambda v, p: v["n_cases"] > 0 and _le(v["max_rel_error_global"], v["value_tol"])),
        Criterion(13, E, lambda v, p: v["n_cases"] > 0 and v["rank_match_nearest"] == 1.0
                  and _le(v["max_rel_error_nearest"], v["value_tol"])),
    ],
    "e6_low_rank_compression": [
        Criterion(2, E, lambda v, p: v["drop_rank_k_largest_lambda"] < v["drop_rank_k_smallest_lambda"]),
        Criterion(2, E, lambda v, p: v["drop_rank_k_largest_lambda"] <= v["acc_tol"]),
    ],
    "e7_any_model": [
        Criterion(4, C, lambda v, p: _le(v["user_max_bound_ratio"], 1 + RTOL)),
        Criterion(4, C, lambda v, p: _le(v["nrc_max_bound_ratio"], 1 + RTOL) and _le(v["max_rel_diff_analyze"], 1e-9)),
    ],
}


def _suffixed(crit: Criterion, suffix: str) -> Criterion:
    """``crit`` applied to the values of a further data set (keys ending in ``suffix``), present if recorded."""
    class strip(dict):  # reads "key" as "key" + suffix where the record has it
        def __init__(self, v):
            self.v = v

        def __getitem__(self, k):
            return self.v[k + suffix] if (k + suffix) in self.v else self.v[k]

    return Criterion(crit.claim, crit.kind, lambda v, p: crit.verdict(strip(v), p),
                     lambda v, p: any(k.endswith(suffix) for k in v) and crit.present(strip(v), p))


# E1 repeats its checks, in the same order, for Fashion-MNIST after MNIST (values suffixed "_fashion_mnist")
CRITERIA["e1_rank_vs_weight_decay"] += [_suffixed(c, "_fashion_mnist") for c in CRITERIA["e1_rank_vs_weight_decay"]]


@lru_cache(maxsize=None)
def _parameters(notebook: str, profile: str) -> dict:
    """The notebook's parameters in that run: its defaults, updated by the profile's values."""
    from nrc.profiles import load_profile, notebook_parameters

    params = {k: p.default for k, p in notebook_parameters(REPO / "notebooks" / f"{notebook}.ipynb").items()}
    if profile not in ("custom", None):
        prof = load_profile(profile, notebooks_dir=REPO / "notebooks")
        params.update(prof.notebooks.get(notebook) or {})
    return params


def recompute(record: dict, params: dict | None = None) -> list[tuple[dict, Criterion, bool | None]]:
    """``(check, criterion, recomputed verdict)`` for every check of a record, in order.

    Raises AssertionError if the notebook recorded a check this table does not know (every
    recorded check must be asserted) or left one out.
    """
    name = record["notebook"]
    assert name in CRITERIA, f"{name}: recorded checks with no criterion in tests/nb_verdicts.py"
    v = record["values"]
    p = _parameters(name, record.get("profile")) if params is None else params
    crits = [c for c in CRITERIA[name] if c.present(v, p)]
    checks = record["checks"]
    assert len(checks) == len(crits), (f"{name}: {len(checks)} checks recorded, {len(crits)} expected; "
                                       "add the new check's criterion to tests/nb_verdicts.py")
    out = []
    for i, (check, crit) in enumerate(zip(checks, crits)):
        assert check["claim"] == crit.claim, f"{name} check {i}: claim {check['claim']}, expected {crit.claim}"
        out.append((check, crit, crit.verdict(v, p)))
    return out


def assert_verdicts(record: dict, params: dict | None = None) -> dict:
    """Every recorded verdict equals the recomputed one; by-construction checks pass.

    Returns counts ``{"construction": n, "empirical": n, "undetermined": n, "differs": n}``.
    """
    counts = {"construction": 0, "empirical": 0, "undetermined": 0, "differs": 0}
    for i, (check, crit, verdict) in enumerate(recompute(record, params)):
        where = f"{record['notebook']} check {i} ({check['what'][:70]}...; measured {check['measured']})"
        assert isinstance(check["passed"], bool), where
        counts[crit.kind] += 1
        if verdict is None:
            counts["undetermined"] += 1
        else:
            assert check["passed"] == verdict, f"{where}: recorded {check['passed']}, criterion gives {verdict}"
        if crit.kind == C:
            assert check["passed"], f"{where}: holds by construction, yet recorded as failed"
        elif not check["passed"]:
            counts["differs"] += 1
    return counts
