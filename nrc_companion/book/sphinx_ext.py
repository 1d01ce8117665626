"""The book's Sphinx extension (``_config.yml``, ``sphinx.local_extensions``).

On every page: a banner saying which profile, device and commit produced it; the Binder and Colab
buttons of a notebook page pointed at its source in ``notebooks/``; alt text for images from their
captions; docstrings' "SPEC x.y" citations linked into the paper chapter.
"""
from __future__ import annotations

import html
import os
import re
from pathlib import Path

from .run import BANNER_ENV, EXECUTED, commit_text, load_results, load_status, provenance
from .stage import plain_text

__all__ = ["setup", "spec_links"]


def _banner_html(prov: dict, status_uri: str | None) -> str:
    text = (f"Produced by profile <strong>{html.escape(str(prov['profile']))}</strong> on "
            f"{html.escape(str(prov['device']))}, commit "
            f"<code>{html.escape(commit_text(prov))}</code>")
    if status_uri:
        text += f" &middot; <a href=\"{html.escape(status_uri)}\">execution status</a>"
    return f"<span class=\"nrc-provenance\">{text}</span>"


def _page_context(app, pagename, templatename, context, doctree):
    executed = Path(os.environ.get(BANNER_ENV) or Path(app.srcdir) / EXECUTED)
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
        context["theme_announcement"] = _banner_html(provenance(status, result, name), status_uri)
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
