"""MyST building blocks of the generated pages: escaping, links, list tables, verdict badges."""
from __future__ import annotations

import html

from .run import EXECUTED

__all__ = ["VERDICT_BADGE", "badge", "code", "doc_link", "fmt_seconds", "list_table", "md", "page_link",
           "short_name"]

_MD_SPECIAL = set("\\`*_{}[]<>#|$~&")


def md(text) -> str:
    """Escape text for MyST markdown (one paragraph)."""
    s = " ".join(str(text).split())
    s = "".join("\\" + c if c in _MD_SPECIAL else c for c in s)
    if s[:1] in "-+=":
        s = "\\" + s
    return s


def code(text) -> str:
    s = " ".join(str(text).split()).replace("`", "'")
    return f"`` {s} ``" if s else ""


def doc_link(name: str, title: str | None = None) -> str:
    title = "".join(c for c in str(title or name) if c not in "`<>\\")
    return f"{{doc}}`{title} </{EXECUTED}/{name}>`"


def list_table(header: list[str], rows: list[list[str]], name: str | None = None,
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


def fmt_seconds(s) -> str:
    try:
        s = float(s)
    except (TypeError, ValueError):
        return "?"
    return f"{s:.1f} s" if s < 600 else f"{s:.0f} s ({s / 60:.1f} min)"


VERDICT_BADGE = {"pass": ("pass", "pass"), "differs": ("differs", "differs"),
                 "inconclusive": ("inconclusive", "inconclusive"), "reported": ("reported", "reported"),
                 "context": ("context", "context"), "not checked": ("not checked", "unchecked")}


def badge(verdict: str, text: str | None = None) -> str:
    label, css = VERDICT_BADGE[verdict]
    return f'<span class="nrc-verdict nrc-verdict-{css}">{html.escape(text or label)}</span>'


def short_name(nb: str) -> str:
    """``t2_rank_tcv_bound`` -> ``T2``; ``e4b_dnc1_optimality`` -> ``E4b``; else the name."""
    head = nb.split("_", 1)[0]
    if len(head) >= 2 and head[0] in "te" and head[1].isdigit():
        return head[0].upper() + head[1:]
    return "Derivation" if nb.startswith("derivation") else nb


def page_link(nb: str, names: list[str]) -> str:
    return doc_link(nb, short_name(nb)) if nb in names else md(short_name(nb))
