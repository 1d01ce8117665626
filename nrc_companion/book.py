"""Build the companion book from the papermill-executed notebooks.

The book never executes code: ``nrc reproduce`` runs the notebooks with papermill into a run
folder (with ``status.json`` and ``results/NAME.json``). The published book comes from the
committed run in ``book/published/`` (``nrc reproduce --profile full --out book/published``);
``nrc book --executed DIR`` builds the same book from any other run folder (for example
``book/executed``, the default of ``nrc reproduce``) without touching the committed one. This module

* refuses to build when an executed notebook is missing, failed, or holds an error output;
* writes the generated pages into ``book/generated/`` (build information, execution status,
  notebook parameters, the claim scorecard);
* runs ``jupyter-book build <root> -n -W --keep-going --all`` with the current Python.

It is also a small Sphinx extension (loaded through ``_config.yml``, ``sphinx.local_extensions``)
that puts a banner on every page saying which profile, device and commit produced it, and points
the Binder and Colab buttons of a notebook page at its source in ``notebooks/``.
"""
from __future__ import annotations

import argparse
import ast
import html
import io
import json
import os
import subprocess
import sys
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

__all__ = ["generate_pages", "build_book", "check_executed", "toc_notebooks", "add_book_arguments",
           "run_book", "main_book", "BookError"]

EXECUTED = "book/published"  # the run folder the table of contents points at
STAGED = "_build/staged"    # sources staged for a build from another run folder
GENERATED = "generated"
_BANNER_ENV = "NRC_BOOK_EXECUTED"


class BookError(RuntimeError):
    """The executed notebooks cannot make a book (missing, failed, or with error outputs)."""


# --------------------------------------------------------------------------------------------
# reading the executed run

def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None


def load_status(executed_dir=EXECUTED) -> dict | None:
    """``status.json`` written by the runner, or None."""
    return _read_json(Path(executed_dir) / "status.json")


def load_results(executed_dir=EXECUTED) -> dict[str, dict]:
    """``results/NAME.json`` of every notebook that wrote one, keyed by notebook name."""
    out = {}
    for p in sorted((Path(executed_dir) / "results").glob("*.json")):
        data = _read_json(p)
        if isinstance(data, dict):
            out[p.stem] = data
    return out


def toc_notebooks(root=".") -> list[str]:
    """Names of the executed notebooks the table of contents lists, in book order."""
    import yaml

    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text(encoding="utf8"))
    names: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith(EXECUTED + "/"):
                names.append(Path(f).name.removesuffix(".ipynb"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return names


def error_outputs(nb_path: Path) -> list[str]:
    """Descriptions of the error outputs (and papermill's failure flag) of an executed notebook."""
    nb = json.loads(Path(nb_path).read_text(encoding="utf8"))
    found = []
    pm = nb.get("metadata", {}).get("papermill")
    if isinstance(pm, dict):
        if pm.get("exception"):
            found.append("papermill recorded an exception")
        if "end_time" in pm and not pm.get("end_time"):
            found.append("papermill did not finish executing it (still running, or killed)")
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename', '?')}: {out.get('evalue', '')}"[:300])
    return found


def check_executed(executed_dir=EXECUTED, names=None, root=".") -> list[str]:
    """Every reason the executed notebooks cannot make a book; empty when they can."""
    ex = Path(executed_dir)
    names = list(names) if names is not None else toc_notebooks(root)
    # Never suggest writing into the committed run: a user's own run goes to its own folder.
    committed = ex.resolve() == (Path(root) / EXECUTED).resolve()
    hint = ((f"restore the committed run with `git checkout -- {EXECUTED}`" if committed else
             f"fill it with `nrc reproduce --profile smoke --out {executed_dir}` (or --profile full)")
            + ", or build from another run folder with `nrc book --executed DIR`")
    if not ex.is_dir():
        return [f"no executed notebooks: {ex} does not exist; {hint}"]
    problems = []
    status = load_status(ex)
    if status is None:
        problems.append(f"{ex / 'status.json'} is missing or unreadable; {hint}")
    else:
        if "finished" in status and not status.get("finished"):
            problems.append(f"{ex / 'status.json'}: the run did not finish (no 'finished' time); "
                            + (hint if committed else f"rerun `nrc reproduce --profile "
                               f"{status.get('profile', 'smoke')} --out {executed_dir}` to finish it"))
        for row in status.get("notebooks", []):
            if not row.get("ok", False):
                err = str(row.get("error") or "no error message").strip().splitlines()
                problems.append(f"{row.get('name')}: failed in the run ({err[-1] if err else ''})")
    for name in names:
        p = ex / f"{name}.ipynb"
        if not p.exists():
            problems.append(f"{name}: executed notebook {p} is missing")
            continue
        try:
            problems += [f"{name}: {e}" for e in error_outputs(p)]
        except (OSError, ValueError) as e:
            problems.append(f"{name}: cannot read {p}: {e}")
    if any(p.endswith(" is missing") for p in problems):
        problems.append(f"to fix: {hint}")
    return problems


# --------------------------------------------------------------------------------------------
# notebook parameters

@dataclass
class _Param:
    name: str
    type: str
    default: object
    help: str


def _parse_parameters_source(src: str) -> dict[str, _Param]:
    """Parse a ``parameters`` cell of lines ``name: type = default  # help``."""
    tree = ast.parse(src)
    comments = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except tokenize.TokenError:
        pass
    out = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            default = _literal(src, node.value)
            help_ = comments.get(node.end_lineno) or comments.get(node.lineno) or ""
            out[node.target.id] = _Param(node.target.id, ast.get_source_segment(src, node.annotation),
                                         default, help_)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = _Param(node.targets[0].id, "", _literal(src, node.value),
                                             comments.get(node.end_lineno, ""))
    return out


def _literal(src: str, node):
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.get_source_segment(src, node)


def _parameters_cell(nb_path: Path) -> str | None:
    nb = json.loads(Path(nb_path).read_text(encoding="utf8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    return None


def notebook_parameters(path) -> dict:
    """Parameters of a notebook: ``nrc_companion.profiles.notebook_parameters`` when available, else our parser."""
    try:
        from .profiles import notebook_parameters as _np  # the project's own definition
        return _np(path)
    except ImportError:
        src = _parameters_cell(Path(path))
        return _parse_parameters_source(src) if src else {}


def _same(a, b) -> bool:
    """Equal as parameter values (tuples and lists alike, ints and floats alike)."""
    def norm(v):
        return json.dumps(v, sort_keys=True, default=str) if not isinstance(v, (int, float)) else float(v)
    try:
        return norm(a) == norm(b)
    except (TypeError, ValueError):
        return a == b


def _papermill_parameters(nb_path: Path) -> dict:
    try:
        nb = json.loads(Path(nb_path).read_text(encoding="utf8"))
    except (OSError, ValueError):
        return {}
    return nb.get("metadata", {}).get("papermill", {}).get("parameters", {}) or {}


# --------------------------------------------------------------------------------------------
# generated pages

_MD_SPECIAL = set("\\`*_{}[]<>#|$~&")


def _md(text) -> str:
    """Escape text for MyST markdown (one paragraph)."""
    s = " ".join(str(text).split())
    s = "".join("\\" + c if c in _MD_SPECIAL else c for c in s)
    if s[:1] in "-+=":
        s = "\\" + s
    return s


def _code(text) -> str:
    s = " ".join(str(text).split()).replace("`", "'")
    return f"`` {s} ``" if s else ""


def _doc(name: str, title: str | None = None) -> str:
    title = "".join(c for c in str(title or name) if c not in "`<>\\")
    return f"{{doc}}`{title} </{EXECUTED}/{name}>`"


def _list_table(header: list[str], rows: list[list[str]], name: str | None = None,
                widths: str = "auto", css_class: str | None = None) -> str:
    lines = ["```{list-table}", ":header-rows: 1", f":widths: {widths}"]
    if css_class:
        lines.append(f":class: {css_class}")
    if name:
        lines.append(f":name: {name}")
    lines.append("")
    for row in [header] + rows:
        for j, cell in enumerate(row):
            parts = str(cell).split("\n") if str(cell) else [""]
            first = ("* - " if j == 0 else "  - ") + parts[0]
            lines.append(first.rstrip())
            lines += [("    " + p).rstrip() for p in parts[1:]]
    lines.append("```")
    return "\n".join(lines)


def _fmt_seconds(s) -> str:
    try:
        s = float(s)
    except (TypeError, ValueError):
        return "?"
    return f"{s:.1f} s" if s < 600 else f"{s:.0f} s ({s / 60:.1f} min)"


def _provenance(status: dict | None, result: dict | None = None, name: str | None = None) -> dict:
    """profile, device, commit, dirty of a page.

    For a notebook page: its own ``results/NAME.json`` record, else its entry in ``status.json``;
    for the other pages (and missing fields): the run recorded in ``status.json``.
    """
    meta = (result or {}).get("meta", {}) or {}
    st = status or {}
    entry = next((e for e in st.get("notebooks", []) if isinstance(e, dict) and e.get("name") == name), {}) \
        if name else {}
    return {
        "profile": (result or {}).get("profile") or entry.get("profile") or st.get("profile") or "unknown",
        "device": meta.get("device") or st.get("device") or "unknown device",
        "commit": meta.get("commit") or entry.get("commit") or st.get("commit") or "unknown",
        "dirty": meta.get("dirty", st.get("dirty", False)),
    }


def _commit_text(prov: dict) -> str:
    c = str(prov["commit"])
    short = c[:12] if c not in ("", "unknown") else "unknown"
    return short + (" (with uncommitted changes)" if prov.get("dirty") else "")


def _build_info_page(status: dict | None, names: list[str]) -> str:
    if status is None:
        return ("```{warning}\nNo `status.json`: this book was built without a recorded "
                "run. Run `nrc reproduce` and `nrc book`.\n```\n")
    prov = _provenance(status)
    rows = {r.get("name"): r for r in status.get("notebooks", [])}
    ok = sum(1 for n in names if rows.get(n, {}).get("ok"))
    desc = status.get("description")
    lines = [
        "```{admonition} This build",
        ":class: note",
        "",
        f"* Profile: **{_md(prov['profile'])}**" + (f" ({_md(desc)})" if desc else ""),
        f"* Device: {_md(prov['device'])}",
        f"* Commit: {_code(_commit_text(prov))}",
        f"* Run started: {_md(status.get('started', 'unknown'))}; "
        f"{ok} of {len(names)} notebooks ran without error, in {_fmt_seconds(status.get('total_seconds'))}",
    ]
    others = sorted({str(r.get("profile")) for r in rows.values()
                     if r.get("profile") and r.get("profile") != prov["profile"]})
    if others:
        lines.append(f"* Some notebooks come from an earlier run with profile {_md(', '.join(others))}: "
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
    prov = _provenance(status)
    out += [
        f"* Profile: **{_md(prov['profile'])}**" + (f": {_md(status['description'])}" if status.get("description") else ""),
        f"* Device: {_md(prov['device'])}",
        f"* Commit: {_code(_commit_text(prov))}",
        f"* Python: {_md(status.get('python', 'unknown'))}",
        f"* Started: {_md(status.get('started', 'unknown'))}",
        f"* Total time: {_fmt_seconds(status.get('total_seconds'))}"
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
        link = _doc(name, plain_text(notebook_title(executed_dir / f"{name}.ipynb") or name)) if name in names else _md(name)
        if r is None:
            rows.append([link, "", "", "", "", "not recorded", "not in status.json (kept from an earlier run?)"])
            continue
        err = str(r.get("error") or "").strip().splitlines()
        train = _fmt_seconds(r["train_seconds"]) if r.get("train_seconds") is not None else ""
        loaded, trained = r.get("members_loaded"), r.get("members_trained")
        cache = f"{loaded} of {loaded + (trained or 0)}" if isinstance(loaded, int) else ""
        ok = ("yes" if r.get("ok") else "**no**") + (" (reused)" if r.get("skipped") else "")
        rows.append([link, _md(r.get("profile", prov["profile"])), _fmt_seconds(r.get("seconds")), train,
                     cache, ok, _md(err[-1]) if err else ""])
    out.append(_list_table(["Notebook", "Profile", "Wall time", "Training", "Members from cache", "OK", "Error"],
                           rows, name="status-table"))
    versions = status.get("versions") or {}
    if versions:
        out += ["", "## Package versions", "",
                _list_table(["Package", "Version"], [[_md(k), _code(v)] for k, v in versions.items()],
                            name="versions-table")]
    return "\n".join(out) + "\n"


def _parameters_page(names: list[str], executed_dir: Path, notebooks_dir: Path, status: dict | None) -> str:
    profile = _md((status or {}).get("profile", "unknown"))
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
        out += [f"## {name}", "", f"Notebook: {_doc(name)}.", ""]
        if not params:
            out += ["No `parameters` cell found." if not isinstance(origin, str) else _md(origin), ""]
            continue
        rows = []
        for pname, p in params.items():
            default = getattr(p, "default", None)
            if pname in used:
                shown = _code(repr(used[pname]))
                if not _same(used[pname], default):
                    shown = f"**{shown}**"
            else:
                shown = "(default)"
            ptype = getattr(p, "type", "")
            ptype = getattr(ptype, "__name__", ptype)
            rows.append([_code(pname), _code(ptype), _code(repr(default)), shown, _md(getattr(p, "help", ""))])
        extra = [k for k in used if k not in params]
        for k in extra:
            rows.append([_code(k), "", "", _code(repr(used[k])), "injected but not declared"])
        out += [_list_table(["Name", "Type", "Default", "This build", "Help"], rows,
                            name=f"params-{name.replace('_', '-')}"), ""]
    return "\n".join(out) + "\n"


def _load_claims(book_dir: Path) -> list[dict]:
    import yaml

    data = yaml.safe_load((book_dir / "claims.yaml").read_text(encoding="utf8"))
    return data["claims"]


_VERDICT_BADGE = {"pass": ("pass", "pass"), "differs": ("differs", "differs"),
                  "inconclusive": ("inconclusive", "inconclusive"), "reported": ("reported", "reported"),
                  "context": ("context", "context"), "not checked": ("not checked", "unchecked")}


def _norm_check(c: dict) -> dict:
    """A recorded check in the current format, statement and measured as MyST (old records escaped)."""
    from .report import normalise_check

    return normalise_check(c)
_KIND_TEXT = {"empirical": "empirical", "construction": "by construction", "method": "our method",
              "context": "context"}


def _badge(verdict: str, text: str | None = None) -> str:
    label, css = _VERDICT_BADGE[verdict]
    return f'<span class="nrc-verdict nrc-verdict-{css}">{html.escape(text or label)}</span>'


def _short_name(nb: str) -> str:
    """``t2_rank_tcv_bound`` -> ``T2``; ``e4b_dnc1_optimality`` -> ``E4b``; else the name."""
    head = nb.split("_", 1)[0]
    if len(head) >= 2 and head[0] in "te" and head[1].isdigit():
        return head[0].upper() + head[1:]
    return "Derivation" if nb.startswith("derivation") else nb


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
    from . import verdicts

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
    from . import verdicts

    base = _read_json(root / "book" / "criteria_baseline.json")
    if not base:
        return []
    rows = verdicts.changed_criteria(results, base)
    out = ["## Changed criteria", "",
           f"Every criterion that changed since the first full run (commit `{base['commit']}`), with its old rule "
           "and verdict, the new rule and verdict, and the reason from the theory. Checks whose rule did not "
           "change are carried over under their new names; none of the first run's checks was dropped.", ""]
    for r in rows:
        old = "; ".join(f"{_badge(o['verdict'])} {_md(o['what'])} ({_md(o['measured'])}, "
                        f"{_page_link(o['notebook'], names)})" for o in r["old"])
        new = "; ".join(f"{_badge(n['verdict']) if n['verdict'] in _VERDICT_BADGE else n['verdict']} "
                        f"`{n['id']}`" + (f" ({n['measured']})" if n["measured"] else "") for n in r["new"])
        out += [f"````{{admonition}} Claim {r['claim']}: " + ", ".join(sorted({_short_name(o['notebook'])
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
        return " ".join(_badge(k, f"{d[k]} {k}") for k in keys) or "none"
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


def _page_link(nb: str, names: list[str]) -> str:
    return _doc(nb, _short_name(nb)) if nb in names else _md(_short_name(nb))


def _scorecard_page(claims: list[dict], results: dict[str, dict], names: list[str],
                    status: dict | None, root: Path | None = None) -> str:
    rows = score_claims(claims, results, names)
    counts = verdict_counts(rows)
    prov = _provenance(status)
    table = []
    for r in rows:
        cl = r["claim_def"]
        if r["deciding"] is not None:
            deciding = " ".join(str(r["deciding"][1].get("measured", "")).split())
            if len(r["pages"]) > 1:
                deciding += f" ({_short_name(r['deciding'][0])})"
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
            _md(cl["grade"]),
            f'<span class="nrc-kind">{_KIND_TEXT[r["kind"]]}</span>',
            _badge(r["verdict"]),
            deciding,
            ", ".join(_page_link(nb, names) for nb in r["pages"]) or "none",
        ])
    details = []
    for r in rows:
        cl = r["claim_def"]
        n = r["claim"]
        body = [f"{' '.join(str(cl['statement']).split())}", "",
                f"Grade: **{_md(cl['grade'])}**. In the paper: {' '.join(str(cl.get('paper', '')).split())} "
                f"Kind: {_KIND_TEXT[r['kind']]}. Restated in [the claim list](#paper-claim-{n}).", ""]
        if r["checks"]:
            body += [f"Checks recorded by this build ({len(r['checks'])}):", ""]
            for nb, c in r["checks"]:
                mark = _badge(c["verdict"])
                body.append(f"* {mark} {_page_link(nb, names)}: {' '.join(str(c.get('statement', '')).split())}. "
                            f"Measured: {' '.join(str(c.get('measured', '')).split())}")
        elif r["verdict"] == "not checked":
            planned = ", ".join(cl.get("notebooks") or []) or "no notebook"
            body.append(f"No notebook of this build recorded a check for it (planned in: {_md(planned)}).")
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
           f"Profile **{_md(prov['profile'])}**, commit {_code(_commit_text(prov))}.", "",
           _counts_sentence(counts),
           "```", "",
           _list_table(["No.", "Claim", "Grade", "Kind", "Verdict", "Deciding number", "Page"], table,
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
        out += [f"* {_badge(c['verdict'])} Claim {n}, {_page_link(nb, names)}: "
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
        where_text = ", ".join(_page_link(nb, names) for nb in where) if where else "not tested"
        out += [f"(paper-claim-{n})=",
                f"**Claim {n}** ({_md(cl['grade'])}; {_KIND_TEXT[kind]}). "
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
    prov = _provenance(status)
    verdicts = [f"**Verdicts of this build** (profile **{_md(prov['profile'])}**; one row per claim in the "
                "{doc}`/book/generated/scorecard`):", "", _counts_sentence(counts), ""]
    open_rows = [r for r in scored if r["verdict"] in ("differs", "inconclusive")]
    if open_rows:
        verdicts += ["Where the evidence differs from the claim or cannot decide:", ""]
        for r in open_rows:
            nb, c = r["deciding"]
            short = " ".join(str(r["claim_def"].get("short") or r["claim_def"]["statement"]).split())
            label = " (our method)" if r["kind"] == "method" else ""
            verdicts.append(f"* {_badge(r['verdict'])} [Claim {r['claim']}](#scorecard-claim-{r['claim']}){label}, "
                            f"{short}: {' '.join(str(c.get('measured', '')).split())} ({_page_link(nb, names)}).")
        verdicts.append("")
    if "e1_headline" in glued:
        out += ["```{glue} e1_headline", f":doc: {src}", "```", ""]
        caption = (f"{{glue:text}}`{src}::e1_headline_caption:s`" if "e1_headline_caption" in glued else
                   "Distance to rank $K$ and numerical rank of each hidden layer against the weight "
                   "decay $\\lambda$, MNIST")
        out += [f"*{caption}* (from {_doc(HEADLINE_NOTEBOOK, 'E1')}).", ""]
        out += verdicts
        if "e1_headline_result" in glued:
            out += [f"{{glue:text}}`{src}::e1_headline_result:s`", ""]
        if "e1_scale" in glued:
            try:
                scale = _glue_value(json.loads(e1.read_text(encoding="utf8")), "e1_scale")
            except (OSError, ValueError):
                scale = None
            if isinstance(scale, str):  # a short definition list, not a run-on sentence
                out += [scale_html(scale, "Scale of the E1 run"), ""]
    else:
        out += ["```{warning}",
                f"The headline figure is missing: the executed {HEADLINE_NOTEBOOK} notebook of this "
                "build glued no `e1_headline` figure.", "```", ""] + verdicts
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# the performance page

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
    from .report import FONT_SIZE

    return {"svg.fonttype": "none", "font.size": FONT_SIZE, "axes.labelsize": FONT_SIZE,
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


def _performance_page(status: dict | None, names: list[str], executed_dir: Path, root: Path,
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
    prov = _provenance(status)
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
            labels = [_short_name(n) for n in order]
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
        out += [f"The run of this build (profile **{_md(prov['profile'])}** on {_md(prov['device'])}, "
                f"{st.get('threads', '?')} threads, commit {_code(_commit_text(prov))}) spent "
                f"{_fmt_seconds(total)} in its {len(order)} notebooks: {shares}. The longest are "
                + ", ".join(f"{_page_link(n, names)} ({_fmt_seconds(sum(phases[n].values()))})" for n in longest)
                + ".", "",
                "```{figure} /book/generated/performance_time.svg",
                ":name: fig-performance-time",
                f":alt: Horizontal bars, one per notebook, of its wall time split into {', '.join(_PHASE_TEXT[k] for k in keys)}; "
                f"the longest is {_short_name(longest[0])}.",
                "",
                "Wall time of each notebook of the run, split by phase"
                + ("" if "rest" not in keys else " (this run recorded only the time spent training)") + ".",
                "```", ""]
        if "rest" in keys:
            out += ["Training is the time inside `ResultStore.train`; the rest is kernel start-up, data "
                    "loading, the analysis and the figures, which this run did not time separately. "
                    "Members that another notebook had trained already come from the cache.", ""]
    # ---- the trainer against the bare matrix products
    bench = _read_json(root / "benchmarks" / "matmul_ceiling.json")
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
    where = (f"Measured {_md(env.get('time', ''))} on {_md(env.get('device', 'unknown device'))}, "
             f"commit {_code(bcommit[:12])}, with `{' '.join(str(bench.get('command', '')).split())}`.")
    if same:
        out += [where, ""]
    else:
        out += ["```{admonition} Measured at another commit", ":class: warning", "",
                where + f" The run of this book is at commit {_code(_commit_text(prov))}; the benchmark "
                "has not been repeated there.", "```", ""]
    table = root / "benchmarks" / "matmul_ceiling.md"
    if table.is_file():
        out += ["```{include} /benchmarks/matmul_ceiling.md", "```", ""]
    note = st.get("note")
    if note:  # status.json's note is MyST already (code spans)
        out += [" ".join(str(note).split()), ""]
    return "\n".join(out) + "\n"


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
        "performance.md": _performance_page(status, names, executed_dir, root, gen),
    }
    written = []
    for fname, text in pages.items():
        p = gen / fname
        if not p.exists() or p.read_text(encoding="utf8") != text:
            p.write_text(text, encoding="utf8")
        written.append(p)
    return written


# --------------------------------------------------------------------------------------------
# staging: what the reader sees of each executed notebook
#
# The book shows the executed notebooks as papermill wrote them, with four changes made on a
# staged copy (the run folder itself is never modified):
# * the values the run used are shown as a compact list, and the parameters cell (the defaults)
#   and papermill's injected cell fold behind one toggle, so no visible cell shows a default the
#   run did not use;
# * the "Scale of this run" sentence becomes a short definition list;
# * verdict tables written by the old renderer are redrawn from the run's record
#   (``results/NAME.json``) by ``nrc_companion.report.verdict_markdown``; long or wide raw tables fold;
# * every figure gets alt text from its caption.

def _first_heading(nb: dict) -> str | None:
    """The first markdown heading of a notebook (its title), without the ``#``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        src = cell.get("source", "")
        for line in ("".join(src) if isinstance(src, list) else src).splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return None


def notebook_title(nb_path) -> str | None:
    """The title (first heading) of an executed notebook, or None."""
    try:
        return _first_heading(json.loads(Path(nb_path).read_text(encoding="utf8")))
    except (OSError, ValueError):
        return None


_TEX_WORDS = {"lambda": "λ", "rho": "ρ", "sigma": "σ", "Sigma": "Σ", "tau": "τ", "ell": "ℓ", "Delta": "Δ",
              "mu": "μ", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "dots": "…", "ldots": "…",
              "times": "×", "top": "ᵀ", "infty": "∞", "approx": "≈", "nabla": "∇", "alpha": "α",
              "beta": "β", "gamma": "γ", "eta": "η", "theta": "θ", "epsilon": "ε", "varepsilon": "ε"}


def plain_text(md: str) -> str:
    """MyST with inline ``$math$`` as plain readable text (for alt text): λ for ``\\lambda``, ..."""
    import re

    def math(m):
        t = m.group(1)
        t = re.sub(r"\\([A-Za-z]+)", lambda k: _TEX_WORDS.get(k.group(1), "" if k.group(1) in (
            "mathrm", "operatorname", "text", "mathcal", "mathbb", "left", "right", "big", "Big") else k.group(1)), t)
        t = t.replace("\\|", "‖").replace("\\,", " ").replace("\\", "")
        return t.replace("{", "").replace("}", "")
    s = re.sub(r"\$([^$]+)\$", math, str(md))
    s = re.sub(r"\{[a-z:]+\}`([^`<]*)[^`]*`", r"\1", s)          # roles: {doc}`text <target>`
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)               # links
    s = s.replace("**", "").replace("`", "")
    return " ".join(s.split())


def _glue_value(nb: dict, name: str):
    import ast as _ast

    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            sb = (out.get("metadata") or {}).get("scrapbook") or {}
            if sb.get("name") == name:
                text = (out.get("data") or {}).get("application/papermill.record/text/plain")
                if text is None:
                    return None
                text = "".join(text) if isinstance(text, list) else text
                try:
                    return _ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    return text
    return None


def scale_html(text: str, label: str = "Scale of this run") -> str:
    """The notebooks' scale sentence as a definition list: one line per data set, items separated.

    ``"mnist, N = 10000 training samples, K = 10 classes; widths (...); 21 members ... . fashion-mnist,
    N = ..."`` becomes ``<dl>`` with the data set in bold and each ``;`` item as its own span.
    """
    import re

    parts = re.split(r"(?<=\.)\s+(?=[A-Za-z][\w-]*, N = )", " ".join(str(text).split()))
    rows = []
    for part in parts:
        part = part.strip().rstrip(".")
        items = [i.strip() for i in part.split(";") if i.strip()]
        head = ""
        if items and ", " in items[0]:
            head, first = items[0].split(", ", 1)
            items[0] = first
        spans = "".join(f'<span class="nrc-item">{html.escape(i)}</span>' for i in items)
        rows.append(f"<dd>{f'<strong>{html.escape(head)}</strong> ' if head else ''}{spans}</dd>")
    return f'<dl class="nrc-scale"><dt>{html.escape(label)}</dt>{"".join(rows)}</dl>'


def params_html(defaults: dict, used: dict, profile: str | None = None) -> str:
    """The values a run used, as one wrapping line of ``name = value`` (set by the run: marked).

    ``data-run`` carries the values as JSON, for the book's browser test (a visible code cell that
    assigns another value to one of these names fails it).
    """
    values = {k: getattr(p, "default", p) for k, p in defaults.items()}
    values.update(used)
    items = []
    for k, v in values.items():
        changed = k in used and (k not in defaults or not _same(used[k], getattr(defaults[k], "default", None)))
        title = (f' title="default: {html.escape(repr(getattr(defaults[k], "default", None)))}"'
                 if changed and k in defaults else "")
        cls = "nrc-param nrc-param-set" if changed else "nrc-param"
        items.append(f'<span class="{cls}"{title}><code>{html.escape(k)}</code> = '
                     f"<code>{html.escape(repr(v))}</code></span>")
    run = html.escape(json.dumps(values, default=str, separators=(",", ":")), quote=True)
    who = f"profile <strong>{html.escape(str(profile))}</strong>" if profile else "this run"
    return (f'<div class="nrc-params" data-run="{run}"><p class="nrc-params-title"><strong>Parameters of '
            f"this run</strong> ({who}; <span class=\"nrc-param-set\">marked</span>: set by the run, the "
            f"rest are the notebook's defaults; the code is in the folded cell below)</p>"
            f'<p class="nrc-param-list">{" ".join(items)}</p></div>')


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _old_table_fix(text: str) -> str:
    """Fold a long or wide ``nrc_companion.report.show_table`` output and give mixed number columns one format."""
    import re

    from .report import COLUMN_PX, _CELL_PAD_PX, _CHAR_PX, fold_html

    if 'class="nrc-table"' not in text or "nrc-fold" in text:
        return text
    cell_re = re.compile(r'(<td id="[^"]*_row(\d+)_col(\d+)"[^>]*>)(.*?)(</td>)', re.S)
    cols: dict[int, list[str]] = {}
    for m in cell_re.finditer(text):
        cols.setdefault(int(m.group(3)), []).append(m.group(4).strip())
    fixes: dict[int, str] = {}
    for j, vals in cols.items():
        nums = [v for v in vals if v not in ("n/a", "nan", "")]
        try:
            floats = [float(v) for v in nums]
        except ValueError:
            continue
        has_e = ["e" in v.lower() for v in nums]
        if floats and any(has_e) and not all(has_e):  # "13.4" above "6.79e+00"
            fixes[j] = "{:.2e}"  # the cells hold 3 significant digits: shown exactly, none invented
    if fixes:
        def sub(m):
            j = int(m.group(3))
            v = m.group(4).strip()
            if j in fixes and v not in ("n/a", "nan", ""):
                v = fixes[j].format(float(v))
            return m.group(1) + v + m.group(5)
        text = cell_re.sub(sub, text)
        cols = {}
        for m in cell_re.finditer(text):
            cols.setdefault(int(m.group(3)), []).append(m.group(4).strip())
    heads = [re.sub(r"<[^>]+>", "", h).strip() for h in
             re.findall(r'<th [^>]*class="col_heading[^"]*"[^>]*>(.*?)</th>', text, re.S)]
    n_rows = len(re.findall(r"<tr>", text.split("<tbody>", 1)[-1]))
    width = sum(max([len(v) for v in cols.get(j, [])] + [len(h)]) * _CHAR_PX + _CELL_PAD_PX
                for j, h in enumerate(heads))
    cap = re.search(r"<p><em>(.*?)</em></p>", text, re.S)
    caption = html.unescape(re.sub(r"<[^>]+>", "", cap.group(1))) if cap else None
    return fold_html(text, n_rows=n_rows, n_cols=len(heads), wide=width > COLUMN_PX, caption=caption)


def prepare_notebook(nb: dict, record: dict | None = None, profile: str | None = None) -> dict:
    """The staged copy of an executed notebook: what ran shown, defaults folded, tables fitted.

    Parameters
    ----------
    nb : dict
        The executed notebook (nbformat 4 JSON); not modified.
    record : dict, optional
        Its ``results/NAME.json`` record: the verdict table is redrawn from its ``checks`` when the
        notebook still holds the old table.
    profile : str, optional
        The profile named above the parameter values.

    Returns
    -------
    dict
        A new notebook.
    """
    import copy
    import re

    from .report import verdict_html, verdict_markdown

    nb = copy.deepcopy(nb)
    cells = nb.get("cells", [])
    # a value glued twice under one name (a notebook that glues a key and records it as well) makes
    # myst-nb warn, which fails a strict build: keep the first output of each name
    glued: set[str] = set()
    for cell in cells:
        kept = []
        for out in cell.get("outputs", []) or []:
            name = ((out.get("metadata") or {}).get("scrapbook") or {}).get("name")
            if name and name in glued:
                continue
            if name:
                glued.add(name)
            kept.append(out)
        if "outputs" in cell:
            cell["outputs"] = kept
    used = nb.get("metadata", {}).get("papermill", {}).get("parameters", {}) or {}
    out_cells = []
    params_idx = next((i for i, c in enumerate(cells)
                       if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])), None)
    injected = next((c for c in cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])), None)
    heading = None
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "markdown":
            src = _src(cell)
            for line in src.splitlines():
                if line.startswith("#"):
                    heading = line.lstrip("#").strip()

            def scale(m):
                value = _glue_value(nb, m.group(2))
                return scale_html(value, m.group(1).strip()) if isinstance(value, str) else m.group(0)
            new = re.sub(r"^\*\*(Scale of this run):\*\*\s*\{glue:text\}`([\w-]+)`[^\n]*$", scale, src, flags=re.M)
            # a glued verdict sentence carries MyST (bold, math): without the :myst format it renders as plain text
            new = re.sub(r"\{glue:md\}`([\w-]+)`", r"{glue:md}`\1:myst`", new)
            if new != src:
                cell["source"] = new
        if i == params_idx:
            try:
                defaults = _parse_parameters_source(_src(cell))
            except SyntaxError:
                defaults = {}
            out_cells.append({"cell_type": "markdown", "id": "nrc-run-parameters", "metadata": {},
                              "source": params_html(defaults, used, profile)})
            if injected is not None:
                inj = _src(injected).replace("# Parameters\n", "", 1)
                cell["source"] = (_src(cell).rstrip() + "\n\n# The values this run passed (papermill's injected "
                                  "cell); they override the defaults above.\n" + inj)
            cell["metadata"]["tags"] = [t for t in tags if t not in ("hide-input", "hide-output")] + ["hide-cell"]
        elif cell is injected:
            cell["metadata"]["tags"] = [t for t in tags if t != "hide-input"] + ["remove-cell"]
        if cell.get("cell_type") == "code":
            meta = cell.setdefault("metadata", {})
            has_image = any(k.startswith("image/") for o in cell.get("outputs", []) or [] for k in (o.get("data") or {}))
            if has_image:
                fig = (meta.get("mystnb") or {}).get("figure") or {}
                alt = plain_text(fig.get("caption") or "") or (f"Figure: {plain_text(heading)}" if heading else "Figure")
                meta.setdefault("mystnb", {}).setdefault("image", {}).setdefault("alt", alt)
            for out in cell.get("outputs", []) or []:
                data = out.get("data") or {}
                h = data.get("text/html")
                if h is None:
                    continue
                h = "".join(h) if isinstance(h, list) else h
                old_verdicts = ">what</th>" in h and ">verdict</th>" in h and "text/markdown" not in data
                if old_verdicts and record and record.get("checks"):
                    out["data"] = {"text/markdown": verdict_markdown(record["checks"]),
                                   "text/html": verdict_html(record["checks"]),
                                   "text/plain": "verdicts"}
                else:
                    fixed = _old_table_fix(h)
                    if fixed != h:
                        data["text/html"] = fixed
        out_cells.append(cell)
    nb["cells"] = out_cells
    return nb


def stage_run(executed_dir, dest) -> Path:
    """Stage a run folder for the book: prepared copies of the notebooks, links to everything else."""
    executed_dir, dest = Path(executed_dir).resolve(), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    status = load_status(executed_dir) or {}
    results = load_results(executed_dir)
    for p in executed_dir.iterdir():
        target = dest / p.name
        if p.suffix == ".ipynb":
            nb = json.loads(p.read_text(encoding="utf8"))
            rec = results.get(p.stem)
            profile = (rec or {}).get("profile") or status.get("profile")
            target.write_text(json.dumps(prepare_notebook(nb, rec, profile), indent=1), encoding="utf8")
        else:
            target.symlink_to(p, target_is_directory=p.is_dir())
    return dest



# --------------------------------------------------------------------------------------------
# building

_JB = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"


def stage_sources(root, executed_dir, dest) -> Path:
    """Copy the book's sources into ``dest``, with ``dest/book/published`` staged from ``executed_dir``.

    The table of contents points at ``book/published``; every build goes through such a staged
    copy (:func:`stage_run`: prepared notebooks, links to the rest), so no run folder is touched.
    """
    import shutil

    root, dest = Path(root).resolve(), Path(dest).resolve()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns(Path(EXECUTED).name, GENERATED, "executed", "__pycache__", "*.pyc")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(root / name, dest / name)
    # benchmarks and profiles: fragments the pages include (benchmark tables, the paper profile)
    for name in ("book", "nrc", "notebooks", "benchmarks", "profiles"):
        if (root / name).is_dir():
            shutil.copytree(root / name, dest / name, ignore=ignore)
    stage_run(executed_dir, dest / EXECUTED)
    return dest


def build_book(root=".", executed_dir=None, strict=True, *, builder="html", quiet=False,
               output_dir=None) -> int:
    """Check the executed notebooks, generate the pages, and build the book with jupyter-book.

    Parameters
    ----------
    root : path
        Repository root (holds ``_config.yml`` and ``_toc.yml``).
    executed_dir : path, optional
        Run folder of executed notebooks; default ``<root>/book/published`` (the committed run,
        which the table of contents points at). Every build goes through a staged copy of the
        sources in ``<output_dir>/_build/staged`` (:func:`stage_sources`), so no run folder is modified.
    strict : bool
        Refuse to build when a notebook is missing, failed or holds an error output, and pass
        ``-n -W --keep-going`` (every warning fails the build). ``False`` builds what there is.
    output_dir : path, optional
        Where ``_build/<builder>`` goes; default ``root``.

    Returns
    -------
    int
        0 on success; jupyter-book's exit code, or 2 when the checks refuse to build.
    """
    root = Path(root).resolve()
    executed_dir = Path(executed_dir).resolve() if executed_dir is not None else root / EXECUTED
    output_dir = Path(output_dir).resolve() if output_dir is not None else root
    problems = check_executed(executed_dir, root=root)
    if problems:
        msg = "nrc book: cannot build the book from these executed notebooks:\n  " + "\n  ".join(problems)
        if strict:
            print(msg, file=sys.stderr)
            return 2
        print(msg.replace("cannot build", "building anyway (strict=False)"), file=sys.stderr)
    src = stage_sources(root, executed_dir, output_dir / STAGED)
    generate_pages(executed_dir, src / "book", root=src)
    cmd = [sys.executable, "-c", _JB, "build", str(src), "--path-output", str(output_dir),
           "--builder", builder, "--all"]
    if strict:
        cmd += ["-n", "-W", "--keep-going"]
    if quiet:
        cmd.append("-q")
    env = dict(os.environ, **{_BANNER_ENV: str(executed_dir.resolve())})
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=src, env=env).returncode
    where = output_dir / "_build" / builder
    print(f"nrc book: jupyter-book {'succeeded' if rc == 0 else f'failed (exit {rc})'} in "
          f"{time.time() - t0:.1f} s; output in {where}", file=sys.stderr)
    return rc


def add_book_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``nrc book``."""
    parser.add_argument("--root", default=".", help="repository root with _config.yml (default: .)")
    parser.add_argument("--executed", default=None,
                        help=f"run folder of executed notebooks (default: <root>/{EXECUTED}, the committed "
                             "run; e.g. book/executed for your own `nrc reproduce`)")
    parser.add_argument("--no-strict", dest="strict", action="store_false",
                        help="build even with missing or failed notebooks, and without -n -W")
    parser.add_argument("--generate-only", action="store_true",
                        help="only write the generated pages (book/generated/)")
    parser.add_argument("--quiet", "-q", action="store_true", help="less output from Sphinx")
    return parser


def run_book(args: argparse.Namespace) -> int:
    """Run ``nrc book`` with parsed arguments."""
    root = Path(args.root)
    if args.generate_only:
        for p in generate_pages(args.executed or root / EXECUTED, root / "book", root=root):
            print(p)
        return 0
    return build_book(root, args.executed, strict=args.strict, quiet=args.quiet)


def main_book(argv=None) -> int:
    """``python -m nrc_companion.book``: check, generate and build the book."""
    parser = add_book_arguments(argparse.ArgumentParser(
        prog="nrc book", description="Build the companion book from the executed notebooks."))
    return run_book(parser.parse_args(argv))


# --------------------------------------------------------------------------------------------
# Sphinx extension: provenance banner and launch links

def _banner_html(prov: dict, status_uri: str | None) -> str:
    text = (f"Produced by profile <strong>{html.escape(str(prov['profile']))}</strong> on "
            f"{html.escape(str(prov['device']))}, commit "
            f"<code>{html.escape(_commit_text(prov))}</code>")
    if status_uri:
        text += f" &middot; <a href=\"{html.escape(status_uri)}\">execution status</a>"
    return f"<span class=\"nrc-provenance\">{text}</span>"


def _page_context(app, pagename, templatename, context, doctree):
    executed = Path(os.environ.get(_BANNER_ENV) or Path(app.srcdir) / EXECUTED)
    cache = app.env.__dict__.setdefault("_nrc_book_cache", {})
    if cache.get("dir") != str(executed):
        cache.clear()
        cache.update(dir=str(executed), status=load_status(executed), results=load_results(executed))
    status, results = cache["status"], cache["results"]
    result = name = None
    if pagename.startswith(EXECUTED + "/"):
        name = pagename.rsplit("/", 1)[-1]
        result = results.get(name)
    pathto = context.get("pathto")
    status_uri = pathto("book/generated/status") if pathto and "book/generated/status" in app.env.all_docs else None
    if status is None and result is None:
        context["theme_announcement"] = ("<span class=\"nrc-provenance\">Built without a recorded run "
                                         "(no status.json)</span>")
    else:
        context["theme_announcement"] = _banner_html(_provenance(status, result, name), status_uri)
    # Launch buttons (Binder, Colab): the executed copy is not in the repository, so open the
    # source notebook instead. Only the external launch links; the download button keeps the
    # executed notebook.
    for group in context.get("header_buttons", []) or []:
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []) or []:
            url = button.get("url")
            if isinstance(url, str) and url.startswith("http") and EXECUTED + "/" in url:
                button["url"] = url.replace(EXECUTED + "/", "notebooks/")


# Sections of the restatement (the paper chapter, book/paper/) that docstrings cite as "SPEC x.y",
# with the link text the book shows.
_SPEC_LABELS = {
    "1": ("setting", "paper-setting"), "1.1": ("setting", "paper-setting"),
    "1.2": ("setting and notation", "paper-setting"), "2": ("definitions", "paper-definitions"),
    "2.1": ("class means and residuals", "paper-definitions"), "2.2": ("TCV", "paper-tcv"),
    "2.3": ("NC1", "paper-nc-metrics"), "2.4": ("distance to rank K", "paper-rank-distance"),
    "2.5": ("terms of v2 and v3", "paper-terms"), "3": ("Theorem A and its lemmas", "paper-theorem-a"),
    "3.0": ("the abstracts' claims", "paper-abstracts"), "3.1": ("Theorem A", "paper-theorem-a"),
    "3.2": ("Corollary A1", "paper-corollary-a1"), "3.3": ("Lemma A2", "paper-lemma-a2"),
    "3.4": ("Lemma A3", "paper-lemma-a3"), "3.5": ("Lemma A4", "paper-lemma-a4"),
    "3.6": ("results beyond Theorem A", "paper-dnc1-optimality"),
    "3.6-B": ("optimality of DNC1", "paper-dnc1-optimality"), "3.6-C": ("no loss barrier", "paper-no-barrier"),
    "3.6-D": ("singular-value forecast", "paper-forecast"),
    "3.7": ("what the theory notebooks verify", "paper-numerical-checks"),
    "4": ("experiments", "paper-experiments"), "4.4": ("first numerical check", "paper-sanity-check"),
    "4.5": ("our design", "paper-design"), "5": ("limits", "paper-limitations"),
    "6": ("the claims", "paper-claims"), "7": ("citation", "paper-citation"),
}


def spec_links(text: str) -> str:
    """Replace "SPEC 2.4", "SPEC section 3.6-C", "SPEC 1.2, 4.5" in reST by links into the paper chapter."""
    import re

    one = r"\d(?:\.\d)?(?:[- ]?[BCD]\b)?"
    pattern = re.compile(rf"\bSPEC\s+(?:sections?[\s-]*)?({one}(?:(?:,\s*|\s+and\s+)(?:{one}|[BCD]\b))*)")

    def link(key: str) -> str:
        key = key.replace(" ", "-")
        found = _SPEC_LABELS.get(key) or _SPEC_LABELS.get(key.split("-")[0]) or _SPEC_LABELS[key[0]]
        return f":ref:`{found[0]} <{found[1]}>`"

    def links(m) -> str:
        keys, base = [], None
        for part in re.split(r",\s*|\s+and\s+", m.group(1)):
            if part in ("B", "C", "D") and base:  # "3.6 B, C, D"
                part = f"{base}-{part}"
            base = part.replace(" ", "-").split("-")[0]
            keys.append(part)
        return ", ".join(link(k) for k in keys)

    text = pattern.sub(links, text)
    return text.replace("the spec's", "the paper chapter's").replace("of the spec)", "of the paper chapter)")


def _docstring_links(app, what, name, obj, options, lines):
    """autodoc: docstrings cite the restatement by section; the book links the chapter instead."""
    lines[:] = [spec_links(line) for line in lines]


def _image_alt(app, doctree, docname):
    """Alt text for every image that has none, or only its file path: the figure's caption, or the
    emphasised caption paragraph that follows it (the landing page's glued headline figure)."""
    import re

    from docutils import nodes

    def text_of(node) -> str:  # inline math kept as $...$, so plain_text reads it (λ, not \\lambda)
        if isinstance(node, nodes.math):
            return f"${node.astext()}$"
        if isinstance(node, nodes.Text):
            return node.astext()
        return "".join(text_of(c) for c in node.children)

    def caption_of(img) -> str | None:
        node = img
        for _ in range(4):
            if node is None:
                break
            if isinstance(node, nodes.figure):
                cap = next(iter(node.findall(nodes.caption)), None)
                if cap is not None:
                    return text_of(cap)
            parent = node.parent
            if parent is not None:  # the paragraph right after it, opening with an emphasised caption
                i = parent.index(node)
                sib = parent.children[i + 1] if i + 1 < len(parent.children) else None
                if isinstance(sib, nodes.paragraph) and sib.children and isinstance(sib.children[0], nodes.emphasis):
                    return text_of(sib.children[0])
            node = parent
        return None

    for img in doctree.findall(nodes.image):
        alt = str(img.get("alt", ""))
        if alt and not re.search(r"\.(png|svg|jpe?g|gif)$", alt, re.I):
            continue
        text = caption_of(img)
        if text:
            img["alt"] = plain_text(text)[:400]


def setup(app):
    """Sphinx extension entry point (see ``_config.yml``)."""
    app.connect("doctree-resolved", _image_alt)
    app.connect("html-page-context", _page_context, priority=600)
    app.connect("autodoc-process-docstring", _docstring_links)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.exit(main_book())
