"""Staging: what the reader sees of each executed notebook.

The book shows the executed notebooks as papermill wrote them, with four changes made on a
staged copy (the run folder itself is never modified):

* the values the run used are shown as a compact list, and the parameters cell (the defaults)
  and papermill's injected cell fold behind one toggle, so no visible cell shows a default the
  run did not use;
* the "Scale of this run" sentence becomes a short definition list;
* verdict tables written by the old renderer are redrawn from the run's record
  (``results/NAME.json``) by ``nrc_companion.report.verdict_markdown``; long or wide raw tables fold;
* every figure gets alt text from its caption.
"""
from __future__ import annotations

import ast
import copy
import html
import json
import re
from pathlib import Path

from ..profiles import notebook_parameters
from .run import load_results, load_status

__all__ = ["glue_value", "notebook_title", "params_html", "plain_text", "prepare_notebook", "same_value",
           "scale_html", "stage_run"]


def same_value(a, b) -> bool:
    """Equal as parameter values (tuples and lists alike, ints and floats alike)."""
    def norm(v):
        return json.dumps(v, sort_keys=True, default=str) if not isinstance(v, (int, float)) else float(v)
    try:
        return norm(a) == norm(b)
    except (TypeError, ValueError):
        return a == b


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


def glue_value(nb: dict, name: str):
    """The value glued (``myst_nb.glue``) under ``name`` in an executed notebook, or None."""
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            sb = (out.get("metadata") or {}).get("scrapbook") or {}
            if sb.get("name") == name:
                text = (out.get("data") or {}).get("application/papermill.record/text/plain")
                if text is None:
                    return None
                text = "".join(text) if isinstance(text, list) else text
                try:
                    return ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    return text
    return None


def scale_html(text: str, label: str = "Scale of this run") -> str:
    """The notebooks' scale sentence as a definition list: one line per data set, items separated.

    ``"mnist, N = 10000 training samples, K = 10 classes; widths (...); 21 members ... . fashion-mnist,
    N = ..."`` becomes ``<dl>`` with the data set in bold and each ``;`` item as its own span.
    """
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
        changed = k in used and (k not in defaults or not same_value(used[k], getattr(defaults[k], "default", None)))
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
    from ..report import COLUMN_PX, _CELL_PAD_PX, _CHAR_PX, fold_html

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


def prepare_notebook(nb: dict, record: dict | None = None, profile: str | None = None, *,
                     defaults: dict) -> dict:
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
    defaults : dict
        The parameters its ``parameters`` cell declares, name -> parameter with a ``default``
        (:func:`nrc_companion.profiles.notebook_parameters` of the notebook's file).

    Returns
    -------
    dict
        A new notebook.
    """
    from ..report import verdict_html, verdict_markdown

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
                value = glue_value(nb, m.group(2))
                return scale_html(value, m.group(1).strip()) if isinstance(value, str) else m.group(0)
            new = re.sub(r"^\*\*(Scale of this run):\*\*\s*\{glue:text\}`([\w-]+)`[^\n]*$", scale, src, flags=re.M)
            # a glued verdict sentence carries MyST (bold, math): without the :myst format it renders as plain text
            new = re.sub(r"\{glue:md\}`([\w-]+)`", r"{glue:md}`\1:myst`", new)
            if new != src:
                cell["source"] = new
        if i == params_idx:
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
            staged = prepare_notebook(nb, rec, profile, defaults=notebook_parameters(p))
            target.write_text(json.dumps(staged, indent=1), encoding="utf8")
        else:
            target.symlink_to(p, target_is_directory=p.is_dir())
    return dest
