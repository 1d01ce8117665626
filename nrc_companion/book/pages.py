"""The generated pages of the book: build information, execution status, parameters, claim scorecard,
claim list, headline and performance, written into ``book/generated/`` by :func:`generate_pages`."""
from __future__ import annotations

import json
from pathlib import Path

from ..profiles import notebook_parameters
from .markup import VERDICT_BADGE, badge, code, doc_link, fmt_seconds, list_table, md, page_link, short_name
from .performance import performance_page
from .run import EXECUTED, GENERATED, commit_text, load_results, load_status, provenance, read_json, toc_notebooks
from .stage import glue_value, notebook_title, plain_text, same_value, scale_html

__all__ = ["HEADLINE_NOTEBOOK", "changed_criteria_section", "generate_pages", "score_claims", "verdict_counts"]


def _papermill_parameters(nb_path: Path) -> dict:
    try:
        nb = json.loads(Path(nb_path).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return {}
    return nb.get("metadata", {}).get("papermill", {}).get("parameters", {}) or {}


def _build_info_page(status: dict | None, names: list[str]) -> str:
    if status is None:
        return ("```{warning}\nNo `status.json`: this book was built without a recorded "
                "run. Run `nrc reproduce` and `nrc book`.\n```\n")
    prov = provenance(status)
    rows = {r.get("name"): r for r in status.get("notebooks", [])}
    ok = sum(1 for n in names if rows.get(n, {}).get("ok"))
    desc = status.get("description")
    lines = [
        "```{admonition} This build",
        ":class: note",
        "",
        f"* Profile: **{md(prov['profile'])}**" + (f" ({md(desc)})" if desc else ""),
        f"* Device: {md(prov['device'])}",
        f"* Commit: {code(commit_text(prov))}",
        f"* Run started: {md(status.get('started', 'unknown'))}; "
        f"{ok} of {len(names)} notebooks ran without error, in {fmt_seconds(status.get('total_seconds'))}",
    ]
    others = sorted({str(r.get("profile")) for r in rows.values()
                     if r.get("profile") and r.get("profile") != prov["profile"]})
    if others:
        lines.append(f"* Some notebooks come from an earlier run with profile {md(', '.join(others))}: "
                     "each notebook page's banner says which")
    lines += [
        "",
        f"Details: {{doc}}`execution status </book/generated/status>`, "
        f"{{doc}}`parameters </book/generated/parameters>`, "
        f"{{doc}}`claim scorecard </book/generated/scorecard>`.",
        "```",
        "",
    ]
    return "\n".join(lines)


def _status_page(status: dict | None, names: list[str], executed_dir: Path) -> str:
    out = ["# Execution status", "",
           "How the notebooks of this book were run: one papermill execution per notebook, "
           "recorded by `nrc reproduce` in the run folder's `status.json`. The book shows those "
           "outputs as they are; it executes nothing itself.", ""]
    if status is None:
        out.append("No `status.json` was found.")
        return "\n".join(out) + "\n"
    prov = provenance(status)
    out += [
        f"* Profile: **{md(prov['profile'])}**" + (f": {md(status['description'])}" if status.get("description") else ""),
        f"* Device: {md(prov['device'])}",
        f"* Commit: {code(commit_text(prov))}",
        f"* Python: {md(status.get('python', 'unknown'))}",
        f"* Started: {md(status.get('started', 'unknown'))}",
        f"* Total time: {fmt_seconds(status.get('total_seconds'))}"
        + (f", with {status['threads']} threads" if status.get("threads") else "")
        + (f" (load average {status['load_average']:.2f} at the start)"
           if isinstance(status.get("load_average"), (int, float)) else ""),
        "",
        "## Notebooks",
        "",
    ]
    rows_by_name = {r.get("name"): r for r in status.get("notebooks", [])}
    rows = []
    for name in names + [n for n in rows_by_name if n not in names]:
        r = rows_by_name.get(name)
        # the notebook's own title (its first heading), not its file name
        link = doc_link(name, plain_text(notebook_title(executed_dir / f"{name}.ipynb") or name)) if name in names else md(name)
        if r is None:
            rows.append([link, "", "", "", "", "not recorded", "not in status.json (kept from an earlier run?)"])
            continue
        err = str(r.get("error") or "").strip().splitlines()
        train = fmt_seconds(r["train_seconds"]) if r.get("train_seconds") is not None else ""
        loaded, trained = r.get("members_loaded"), r.get("members_trained")
        cache = f"{loaded} of {loaded + (trained or 0)}" if isinstance(loaded, int) else ""
        ok = ("yes" if r.get("ok") else "**no**") + (" (reused)" if r.get("skipped") else "")
        rows.append([link, md(r.get("profile", prov["profile"])), fmt_seconds(r.get("seconds")), train,
                     cache, ok, md(err[-1]) if err else ""])
    out.append(list_table(["Notebook", "Profile", "Wall time", "Training", "Members from cache", "OK", "Error"],
                          rows, name="status-table"))
    versions = status.get("versions") or {}
    if versions:
        out += ["", "## Package versions", "",
                list_table(["Package", "Version"], [[md(k), code(v)] for k, v in versions.items()],
                           name="versions-table")]
    return "\n".join(out) + "\n"


def _parameters_page(names: list[str], executed_dir: Path, notebooks_dir: Path, status: dict | None) -> str:
    profile = md((status or {}).get("profile", "unknown"))
    out = ["# Notebook parameters", "",
           "Every notebook has one `parameters` cell; papermill (and `nrc reproduce`) can replace any "
           "of these values. Each table below is read from the notebook itself; the column "
           f"*this build* shows the values this build's run (profile **{profile}**) passed, "
           "from the executed notebook's papermill metadata. Values in bold differ from the default. "
           "See {doc}`/book/rerun` for how to change them.", ""]
    for name in names:
        src = notebooks_dir / f"{name}.ipynb"
        exe = executed_dir / f"{name}.ipynb"
        params = {}
        origin = None
        for candidate in (src, exe):
            if candidate.exists():
                try:
                    params = notebook_parameters(candidate)
                    origin = candidate
                    break
                except Exception as e:  # a broken parameters cell is reported, not fatal
                    params, origin = {}, f"unreadable parameters cell: {e}"
        used = _papermill_parameters(exe)
        out += [f"## {name}", "", f"Notebook: {doc_link(name)}.", ""]
        if not params:
            out += ["No `parameters` cell found." if not isinstance(origin, str) else md(origin), ""]
            continue
        rows = []
        for pname, p in params.items():
            default = getattr(p, "default", None)
            if pname in used:
                shown = code(repr(used[pname]))
                if not same_value(used[pname], default):
                    shown = f"**{shown}**"
            else:
                shown = "(default)"
            ptype = getattr(p, "type", "")
            ptype = getattr(ptype, "__name__", ptype)
            rows.append([code(pname), code(ptype), code(repr(default)), shown, md(getattr(p, "help", ""))])
        extra = [k for k in used if k not in params]
        for k in extra:
            rows.append([code(k), "", "", code(repr(used[k])), "injected but not declared"])
        out += [list_table(["Name", "Type", "Default", "This build", "Help"], rows,
                           name=f"params-{name.replace('_', '-')}"), ""]
    return "\n".join(out) + "\n"


def _load_claims(book_dir: Path) -> list[dict]:
    import yaml

    data = yaml.safe_load((book_dir / "claims.yaml").read_text(encoding="utf8"))
    return data["claims"]


def _norm_check(c: dict) -> dict:
    """A recorded check in the current format, statement and measured as MyST (old records escaped)."""
    from ..report import normalise_check

    return normalise_check(c)
_KIND_TEXT = {"empirical": "empirical", "construction": "by construction", "method": "our method",
              "context": "context"}


def _claim_kind(cl: dict) -> str:
    if cl.get("context_only"):
        return "context"
    kind = str(cl.get("kind", "empirical"))
    if kind not in _KIND_TEXT:
        raise ValueError(f"book/claims.yaml: claim {cl.get('claim')}: kind must be one of "
                         f"{sorted(_KIND_TEXT)}, got {kind!r}")
    return kind


def score_claims(claims: list[dict], results: dict[str, dict], names: list[str]) -> list[dict]:
    """One row per claim: its verdict and the check that decides it.

    The aggregation is :func:`nrc_companion.verdicts.claim_verdicts`, the one the tests prove: a claim's
    verdict comes from its deciding checks (empirical and construction): ``differs`` if any
    differs, else ``inconclusive`` if any is, else ``pass``; convergence checks are listed apart
    and never decide; a claim tested only by a method of ours (``method`` checks) takes their
    verdict, labelled as such; ``context`` claims are never tested; a claim with no check is
    ``not checked``. Old records (``passed``) count as empirical checks.
    """
    from .. import verdicts

    order = {n: i for i, n in enumerate(names)}
    normalised = {}
    for nb in sorted(results, key=lambda n: order.get(n, len(order))):
        checks = []
        for c in results[nb].get("checks", []) or []:
            try:
                int(c.get("claim"))
            except (TypeError, ValueError):
                continue
            c = _norm_check(c)
            c["kind"] = c.get("kind") or "empirical"
            checks.append(c)
        normalised[nb] = {"checks": checks}
    for cl in claims:
        _claim_kind(cl)  # refuses a typo before anything is scored
    rows = []
    for cl, agg in zip(claims, verdicts.claim_verdicts(normalised, claims)):
        kind = "method" if agg["by_method"] else _claim_kind(cl)
        found = agg["checks"]
        pages = list(dict.fromkeys(nb for nb, _ in found)) or [
            nb for nb in (cl.get("notebooks") or []) if nb in names]
        rows.append({"claim": agg["claim"], "claim_def": cl, "kind": kind, "verdict": agg["verdict"],
                     "deciding": agg["deciding"], "checks": found, "pages": pages,
                     "convergence": agg["convergence"]})
    return rows


def changed_criteria_section(results: dict[str, dict], names: list[str], root: Path) -> list[str]:
    """The scorecard's list of criteria changed since the first full run, from
    :func:`nrc_companion.verdicts.changed_criteria` and ``book/criteria_baseline.json``."""
    from .. import verdicts

    base = read_json(root / "book" / "criteria_baseline.json")
    if not base:
        return []
    rows = verdicts.changed_criteria(results, base)
    out = ["## Changed criteria", "",
           f"Every criterion that changed since the first full run (commit `{base['commit']}`), with its old rule "
           "and verdict, the new rule and verdict, and the reason from the theory. Checks whose rule did not "
           "change are carried over under their new names; none of the first run's checks was dropped.", ""]
    for r in rows:
        old = "; ".join(f"{badge(o['verdict'])} {md(o['what'])} ({md(o['measured'])}, "
                        f"{page_link(o['notebook'], names)})" for o in r["old"])
        new = "; ".join(f"{badge(n['verdict']) if n['verdict'] in VERDICT_BADGE else n['verdict']} "
                        f"`{n['id']}`" + (f" ({n['measured']})" if n["measured"] else "") for n in r["new"])
        out += [f"````{{admonition}} Claim {r['claim']}: " + ", ".join(sorted({short_name(o['notebook'])
                                                                             for o in r['old']})),
                ":class: dropdown", "",
                f"* **Old rule:** {r['old_rule']}", f"* **Old verdicts:** {old}",
                f"* **New rule:** {r['new_rule']}", f"* **New verdicts:** {new}",
                f"* **Why:** {r['reason']}", "````", ""]
    return out


def verdict_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """``{"empirical": {"pass": n, ...}, "construction": {...}, "context": {...}}``."""
    out: dict[str, dict[str, int]] = {k: {} for k in _KIND_TEXT}
    for r in rows:
        out[r["kind"]][r["verdict"]] = out[r["kind"]].get(r["verdict"], 0) + 1
    return out


def _counts_sentence(counts: dict[str, dict[str, int]]) -> str:
    """The verdict counts as three short lines of badges (MyST with inline HTML)."""
    def badges(d: dict[str, int]) -> str:
        keys = [k for k in ("pass", "differs", "inconclusive", "reported", "not checked") if d.get(k)]
        return " ".join(badge(k, f"{d[k]} {k}") for k in keys) or "none"
    emp, con, met = counts["empirical"], counts["construction"], counts.get("method", {})
    n_emp, n_con, n_ctx = sum(emp.values()), sum(con.values()), sum(counts["context"].values())
    lines = [
        f"* **Empirical claims** ({n_emp}, could have come out otherwise): {badges(emp)}",
        f"* **Hold by construction** ({n_con}, identities and bounds with every term measured; "
        f"a check tests the code): {badges(con)}",
    ]
    if met:
        lines.append(f"* **Tested with a method of ours** ({sum(met.values())}, the paper's method was not "
                     f"available): {badges(met)}")
    return "\n".join(lines + [f"* **Context only** ({n_ctx}): not tested"])


def _scorecard_page(claims: list[dict], results: dict[str, dict], names: list[str],
                    status: dict | None, root: Path | None = None) -> str:
    rows = score_claims(claims, results, names)
    counts = verdict_counts(rows)
    prov = provenance(status)
    table = []
    for r in rows:
        cl = r["claim_def"]
        if r["deciding"] is not None:
            deciding = " ".join(str(r["deciding"][1].get("measured", "")).split())
            if len(r["pages"]) > 1:
                deciding += f" ({short_name(r['deciding'][0])})"
            # Theorem A's exact form on trained networks (T2, E1-E3, E8): a bound weaker than the trivial
            # d_K <= ||W||_F says nothing, so count where it says more
            bounds = [(nb, c) for nb, c in r["checks"] if "informative" in c and str(c.get("check", "")).endswith(".bound")]
            if bounds:
                inf, tot = sum(c["informative"] for _, c in bounds), sum(c["rows"] for _, c in bounds)
                deciding += (f"; the bound is informative (below $\\|W\\|_F$) on {inf} of {tot} rows, "
                             f"vacuous on the rest")
        elif r["verdict"] == "context":
            deciding = "not one of the paper's experiments"
        else:
            deciding = "no notebook recorded a check"
        table.append([
            f"[{r['claim']}](#scorecard-claim-{r['claim']})",
            " ".join(str(cl.get("short") or cl["statement"]).split()),
            md(cl["grade"]),
            f'<span class="nrc-kind">{_KIND_TEXT[r["kind"]]}</span>',
            badge(r["verdict"]),
            deciding,
            ", ".join(page_link(nb, names) for nb in r["pages"]) or "none",
        ])
    details = []
    for r in rows:
        cl = r["claim_def"]
        n = r["claim"]
        body = [f"{' '.join(str(cl['statement']).split())}", "",
                f"Grade: **{md(cl['grade'])}**. In the paper: {' '.join(str(cl.get('paper', '')).split())} "
                f"Kind: {_KIND_TEXT[r['kind']]}. Restated in [the claim list](#paper-claim-{n}).", ""]
        if r["checks"]:
            body += [f"Checks recorded by this build ({len(r['checks'])}):", ""]
            for nb, c in r["checks"]:
                mark = badge(c["verdict"])
                body.append(f"* {mark} {page_link(nb, names)}: {' '.join(str(c.get('statement', '')).split())}. "
                            f"Measured: {' '.join(str(c.get('measured', '')).split())}")
        elif r["verdict"] == "not checked":
            planned = ", ".join(cl.get("notebooks") or []) or "no notebook"
            body.append(f"No notebook of this build recorded a check for it (planned in: {md(planned)}).")
        else:
            body.append("Listed for context only; not reproduced.")
        details += [f"(scorecard-claim-{n})=",
                    f"````{{admonition}} Claim {n}: {' '.join(str(cl.get('short') or cl['statement']).split())}",
                    ":class: dropdown", ""] + body + ["````", ""]
    out = ["# Claim scorecard", "",
           "One row per claim of {ref}`our restatement of the paper <paper-claims>`. The verdicts "
           "and measured numbers are **ours**, from the notebooks of this build (our design, not the "
           "paper's settings, which were not available); they are never the paper's numbers. "
           "*Grade* says where a claim comes from ({ref}`grades <paper-grades>`).", "",
           "```{admonition} This build",
           ":class: note nrc-counts", "",
           f"Profile **{md(prov['profile'])}**, commit {code(commit_text(prov))}.", "",
           _counts_sentence(counts),
           "```", "",
           list_table(["No.", "Claim", "Grade", "Kind", "Verdict", "Deciding number", "Page"], table,
                      name="scorecard-table", widths="4 25 12 11 9 27 12", css_class="nrc-scorecard"),
           "",
           "## Details", "",
           "Every check of every claim, folded; open one to read what was measured and where.", ""]
    out += details
    conv = [(r["claim"], nb, c) for r in rows for nb, c in r.get("convergence", [])]
    if conv:
        out += ["## Optimiser convergence", "",
                "Whether training reached the points a claim is about. These checks never decide a claim: "
                "where the optimiser falls short, the claim's own check says *inconclusive*.", ""]
        out += [f"* {badge(c['verdict'])} Claim {n}, {page_link(nb, names)}: "
                f"{' '.join(str(c.get('statement', '')).split())}. Measured: {' '.join(str(c.get('measured', '')).split())}"
                for n, nb, c in conv]
        out.append("")
    if root is not None:
        out += changed_criteria_section(results, names, Path(root))
    return "\n".join(out) + "\n"


def _claims_list_page(claims: list[dict], names: list[str]) -> str:
    """The claim list of the paper chapter (included by ``book/paper/claims.md``)."""
    out = []
    for cl in claims:
        n = int(cl["claim"])
        kind = _claim_kind(cl)
        where = [nb for nb in (cl.get("notebooks") or []) if nb in names]
        where_text = ", ".join(page_link(nb, names) for nb in where) if where else "not tested"
        out += [f"(paper-claim-{n})=",
                f"**Claim {n}** ({md(cl['grade'])}; {_KIND_TEXT[kind]}). "
                f"{' '.join(str(cl['statement']).split())} "
                f"*In the paper:* {' '.join(str(cl.get('paper', '')).split())} "
                f"*Tested in:* {where_text}; [verdict](#scorecard-claim-{n}).", ""]
    return "\n".join(out)


def _glued_names(nb_path: Path) -> set[str]:
    """Names glued (``myst_nb.glue``) in an executed notebook."""
    try:
        nb = json.loads(Path(nb_path).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return set()
    found = set()
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            sb = (out.get("metadata") or {}).get("scrapbook")
            if isinstance(sb, dict) and sb.get("name"):
                found.add(str(sb["name"]))
    return found


HEADLINE_NOTEBOOK = "e1_rank_vs_weight_decay"


def _headline_page(claims: list[dict], results: dict[str, dict], names: list[str],
                   status: dict | None, executed_dir: Path) -> str:
    """The landing page's result block: E1's headline figure and the scorecard's counts."""
    e1 = executed_dir / f"{HEADLINE_NOTEBOOK}.ipynb"
    glued = _glued_names(e1)
    src = f"/{EXECUTED}/{HEADLINE_NOTEBOOK}.ipynb"
    out = []
    scored = score_claims(claims, results, names)
    counts = verdict_counts(scored)
    prov = provenance(status)
    verdicts = [f"**Verdicts of this build** (profile **{md(prov['profile'])}**; one row per claim in the "
                "{doc}`/book/generated/scorecard`):", "", _counts_sentence(counts), ""]
    open_rows = [r for r in scored if r["verdict"] in ("differs", "inconclusive")]
    if open_rows:
        verdicts += ["Where the evidence differs from the claim or cannot decide:", ""]
        for r in open_rows:
            nb, c = r["deciding"]
            short = " ".join(str(r["claim_def"].get("short") or r["claim_def"]["statement"]).split())
            label = " (our method)" if r["kind"] == "method" else ""
            verdicts.append(f"* {badge(r['verdict'])} [Claim {r['claim']}](#scorecard-claim-{r['claim']}){label}, "
                            f"{short}: {' '.join(str(c.get('measured', '')).split())} ({page_link(nb, names)}).")
        verdicts.append("")
    if "e1_headline" in glued:
        out += ["```{glue} e1_headline", f":doc: {src}", "```", ""]
        caption = (f"{{glue:text}}`{src}::e1_headline_caption:s`" if "e1_headline_caption" in glued else
                   "Distance to rank $K$ and numerical rank of each hidden layer against the weight "
                   "decay $\\lambda$, MNIST")
        out += [f"*{caption}* (from {doc_link(HEADLINE_NOTEBOOK, 'E1')}).", ""]
        out += verdicts
        if "e1_headline_result" in glued:
            out += [f"{{glue:text}}`{src}::e1_headline_result:s`", ""]
        if "e1_scale" in glued:
            try:
                scale = glue_value(json.loads(e1.read_text(encoding="utf8")), "e1_scale")
            except (OSError, ValueError):
                scale = None
            if isinstance(scale, str):  # a short definition list, not a run-on sentence
                out += [scale_html(scale, "Scale of the E1 run"), ""]
    else:
        out += ["```{warning}",
                f"The headline figure is missing: the executed {HEADLINE_NOTEBOOK} notebook of this "
                "build glued no `e1_headline` figure.", "```", ""] + verdicts
    return "\n".join(out)


def generate_pages(executed_dir=EXECUTED, book_dir="book", root=None) -> list[Path]:
    """Write the generated pages into ``book/generated/``; return their paths.

    ``build_info``, ``status``, ``parameters`` and ``scorecard`` are pages or parts of pages;
    ``claims_list`` is included by the paper chapter (``book/paper/claims.md``), ``headline``
    by the landing page (``book/intro.md``) and ``performance`` (with its two SVG figures) by
    ``book/performance.md``.

    Parameters
    ----------
    executed_dir : path
        Where ``nrc reproduce`` wrote the executed notebooks, ``status.json`` and ``results/``.
    book_dir : path
        The book's page directory (holds ``claims.yaml``; pages go to its ``generated/``).
    root : path, optional
        Repository root (with ``_toc.yml`` and ``notebooks/``); default: the parent of ``book_dir``.
    """
    book_dir = Path(book_dir)
    root = Path(root) if root is not None else book_dir.resolve().parent
    executed_dir = Path(executed_dir)
    names = toc_notebooks(root)
    status = load_status(executed_dir)
    results = load_results(executed_dir)
    claims = _load_claims(book_dir)
    gen = book_dir / GENERATED
    gen.mkdir(parents=True, exist_ok=True)
    pages = {
        "build_info.md": _build_info_page(status, names),
        "status.md": _status_page(status, names, executed_dir),
        "parameters.md": _parameters_page(names, executed_dir, root / "notebooks", status),
        "scorecard.md": _scorecard_page(claims, results, names, status, root),
        "claims_list.md": _claims_list_page(claims, names),
        "headline.md": _headline_page(claims, results, names, status, executed_dir),
        "performance.md": performance_page(status, names, executed_dir, root, gen),
    }
    written = []
    for fname, text in pages.items():
        p = gen / fname
        if not p.exists() or p.read_text(encoding="utf8") != text:
            p.write_text(text, encoding="utf8")
        written.append(p)
    return written
