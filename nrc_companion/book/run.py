"""The executed run a book is built from: its folder, ``status.json``, records, and each page's provenance.

``nrc reproduce`` writes a run folder (executed notebooks, ``status.json``, ``results/NAME.json``);
the committed one is ``book/published``, which the table of contents points at.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["BANNER_ENV", "EXECUTED", "GENERATED", "check_executed", "commit_text", "error_outputs",
           "load_results", "load_status", "provenance", "read_json", "toc_notebooks"]

EXECUTED = "book/published"  # the run folder the table of contents points at
GENERATED = "generated"  # the generated pages' folder under book/
# The run folder a build reads, passed from ``nrc book`` to the Sphinx extension (a separate process).
BANNER_ENV = "NRC_BOOK_EXECUTED"


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None


def load_status(executed_dir=EXECUTED) -> dict | None:
    """``status.json`` written by the runner, or None."""
    return read_json(Path(executed_dir) / "status.json")


def load_results(executed_dir=EXECUTED) -> dict[str, dict]:
    """``results/NAME.json`` of every notebook that wrote one, keyed by notebook name."""
    out = {}
    for p in sorted((Path(executed_dir) / "results").glob("*.json")):
        data = read_json(p)
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


def provenance(status: dict | None, result: dict | None = None, name: str | None = None) -> dict:
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


def commit_text(prov: dict) -> str:
    c = str(prov["commit"])
    short = c[:12] if c not in ("", "unknown") else "unknown"
    return short + (" (with uncommitted changes)" if prov.get("dirty") else "")
