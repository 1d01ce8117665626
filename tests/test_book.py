"""The built book: clean build, links, figures, math and provenance, checked in headless Chromium.

Builds the book once from the committed run in ``book/published`` (``nrc.book.build_book``:
``jupyter-book build . -n -W --keep-going``) into a temporary folder, serves the HTML on
127.0.0.1 and looks at it with ``/usr/bin/chromium --headless``. Set ``NRC_BOOK_EXECUTED=DIR`` to
build from another run folder instead (for example ``nrc reproduce --profile smoke --out
/tmp/smoke``); ``nrc book`` then stages a copy of the sources and leaves the committed run alone.

Every page of the site is read in Chromium at 1400 px wide after MathJax has run, and fails when
it shows raw TeX, a truncated table cell, content wider than its column (outside a scroll box), a
figure narrower than 600 px, or more than 60 visible code lines before its first figure.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "book" / "published"   # the committed run the book is published from
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
EXPERIMENT_PAGE = "book/published/e1_rank_vs_weight_decay.html"
OTHER_EXECUTED = os.environ.get("NRC_BOOK_EXECUTED")
WINDOW_WIDTH = 1400          # px, the reader's window for the layout checks
MIN_FIGURE_WIDTH = 600       # px, rendered width of every figure at WINDOW_WIDTH
MAX_CODE_LINES_BEFORE_FIGURE = 60  # visible code lines before a page's first figure (parameters aside)


# ---------------------------------------------------------------------------------------------
# fixtures

def _executed_dir() -> Path:
    return Path(OTHER_EXECUTED).resolve() if OTHER_EXECUTED else EXECUTED


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the book (``nrc book``, strict) into a temporary folder; the path of the HTML output."""
    executed = _executed_dir()
    if not (executed / "status.json").exists():
        pytest.fail(f"no executed notebooks in {executed}: run `nrc reproduce --profile full --out "
                    "book/published` (or set NRC_BOOK_EXECUTED to another run folder)")
    from nrc.book import build_book

    out = tmp_path_factory.mktemp("book-build")
    rc = build_book(ROOT, executed, strict=True, quiet=True, output_dir=out)
    assert rc == 0, f"`nrc book` failed with exit code {rc} (see the output above)"
    return out / "_build" / "html"


# Injected by the test server into every HTML page it serves: once MathJax has typeset the page,
# it measures the layout and writes the findings as JSON into <pre id="nrc-layout">.
LAYOUT_JS = r"""
(async function () {
  const done = (obj) => {
    const pre = document.createElement("pre");
    pre.id = "nrc-layout"; pre.style.display = "none";
    pre.textContent = JSON.stringify(obj);
    document.body.appendChild(pre);
  };
  // wait for the page (MathJax is loaded deferred), then for MathJax to finish typesetting
  if (document.readyState !== "complete") await new Promise((r) => window.addEventListener("load", r));
  for (let i = 0; i < 100 && document.querySelector(".math, mjx-container") &&
                  !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
    await new Promise((r) => setTimeout(r, 50));
  try {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  } catch (e) { /* a MathJax error leaves raw TeX, which the checks below report */ }
  const MIN_FIG = %(min_fig)d, MAX_LINES = %(max_lines)d;
  const out = {tex: [], truncated: [], overflow: [], narrow: [], code_lines_before_figure: 0,
               first_figure: false, width: window.innerWidth};
  // folded content (a closed <details>, a toggled-off block) is not visible, whatever its box says
  const visible = (el) => {
    for (let a = el; a; a = a.parentElement)
      if (a.tagName === "DETAILS" && !a.open && a !== el && !(el.closest("summary"))) return false;
    if (el.checkVisibility && !el.checkVisibility({visibilityProperty: true, contentVisibilityAuto: true})) return false;
    const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0;
  };
  const snippet = (t) => t.replace(/\s+/g, " ").trim().slice(0, 80);
  const article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;

  // 1. raw TeX left visible anywhere on the page (sidebar included), outside code
  const TEX = /\$[^$\s][^$]*\$|\\\(|\\\[|\\(frac|lambda|mathrm|mathcal|mathbb|ell|sum|le|ge|leq|geq|operatorname|nabla|Delta|sigma|mu|boxed|text|top|Vert|sqrt)(?![a-zA-Z])/;
  const SKIP = "script, style, pre, code, mjx-container, .cell_input, .highlight, textarea, noscript, #nrc-layout";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(SKIP) || !visible(el)) continue;
    if (TEX.test(n.textContent)) out.tex.push(snippet(n.textContent));
  }
  // 2. truncated table cells: pandas "..." cells and cut-off text
  for (const cell of article.querySelectorAll("td, th")) {
    const t = cell.textContent.trim();
    if (/(\.\.\.|\u2026)$/.test(t) || t === "..." ||
        (getComputedStyle(cell).textOverflow === "ellipsis" && cell.scrollWidth > cell.clientWidth + 1))
      out.truncated.push(snippet(t));
  }
  // 3. content wider than its column, unless inside a box that scrolls horizontally
  const box = article.getBoundingClientRect();
  const scrolls = (el) => { for (let a = el.parentElement; a && a !== article; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX; if (o === "auto" || o === "scroll") return true; } return false; };
  for (const el of article.querySelectorAll("*")) {
    if (!visible(el) || el.closest("#nrc-layout")) continue;
    const r = el.getBoundingClientRect();
    const o = getComputedStyle(el).overflowX;
    if ((r.right > box.right + 2 || r.left < box.left - 2) && !scrolls(el)) {
      out.overflow.push(el.tagName.toLowerCase() + "." + (el.className || "").toString().split(" ")[0] +
                        " (" + Math.round(r.width) + " px in a " + Math.round(box.width) + " px column): " +
                        snippet(el.textContent || el.getAttribute("src") || ""));
    } else if (o === "hidden" && el.scrollWidth > el.clientWidth + 2 && !el.closest("mjx-container, .math")) {
      out.overflow.push(el.tagName.toLowerCase() + " clips its content (" + el.scrollWidth + " > " +
                        el.clientWidth + " px): " + snippet(el.textContent || ""));
    }
  }
  // 4. figures narrower than MIN_FIG px; 5. visible code lines before the first figure
  const isFigure = (img) => img.closest(".cell_output, figure") && visible(img);
  for (const img of article.querySelectorAll(".cell_output img, figure img")) {
    if (!visible(img)) continue;
    const w = img.getBoundingClientRect().width;
    if (w < MIN_FIG) out.narrow.push((img.getAttribute("src") || "").split("/").pop() + ": " + Math.round(w) + " px");
  }
  for (const el of article.querySelectorAll(".cell_input, .cell_output img, figure img")) {
    if (el.tagName === "IMG") { if (isFigure(el)) { out.first_figure = true; break; } continue; }
    const cell = el.closest(".cell");
    if (cell && /tag_(injected-)?parameters/.test(cell.className)) continue;
    if (!visible(el)) continue;
    out.code_lines_before_figure += el.textContent.split("\n").filter((l) => l.trim()).length;
  }
  done(out);
})();
""" % {"min_fig": MIN_FIGURE_WIDTH, "max_lines": MAX_CODE_LINES_BEFORE_FIGURE}


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list  # (path, status) of every request, set per server

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/__nrc_layout.js":
            return self._send(200, "application/javascript", LAYOUT_JS.encode())
        if path.endswith(".html") or path.endswith("/"):
            target = Path(self.translate_path(path))
            if target.is_dir():
                target = target / "index.html"
            if target.is_file():
                text = target.read_text(encoding="utf8", errors="replace")
                tag = '<script src="/__nrc_layout.js"></script>'
                text = text.replace("</body>", tag + "</body>", 1) if "</body>" in text else text + tag
                return self._send(200, "text/html; charset=utf-8", text.encode("utf8"))
        return super().do_GET()

    def _send(self, code, ctype, body: bytes):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        self.requests.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server(site):
    """Serve the site on a free port of 127.0.0.1; yields (base URL, request log)."""
    log: list = []
    handler = functools.partial(type("H", (_Handler,), {"requests": log}), directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", log
    finally:
        httpd.shutdown()
        httpd.server_close()


def _chromium(tmp_path: Path, url: str, *extra: str, timeout: int = 120,
              window: str = "1280,2000") -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
           f"--window-size={window}", "--virtual-time-budget=5000", *extra, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


def _dom(tmp_path, url) -> str:
    return _chromium(tmp_path, url, "--dump-dom").stdout


def _image_std(path: Path) -> float:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("L"), dtype=float)
    return float(a.std())


# ---------------------------------------------------------------------------------------------
# HTML parsing

class _Refs(HTMLParser):
    """Collect (tag, attribute, value) of every link-like attribute, and <img> sources."""

    ATTRS = {"href", "src", "poster", "data"}

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in self.ATTRS:
                self.refs.append((tag, name, value))
            elif name == "srcset":
                for part in value.split(","):
                    if part.strip():
                        self.refs.append((tag, name, part.strip().split()[0]))


def _refs(text: str) -> list[tuple[str, str, str]]:
    p = _Refs()
    p.feed(text)
    return p.refs


def _is_internal(value: str) -> bool:
    v = value.strip()
    if not v or v.startswith("#"):
        return False
    parts = urlsplit(v)
    return not parts.scheme and not parts.netloc  # http(s), mailto, javascript, data, //host: external


def _resolve(page: Path, value: str, root: Path) -> Path:
    path = unquote(urlsplit(value.strip()).path)
    target = (root / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    target = target.resolve()
    if target.is_dir():
        target = target / "index.html"
    return target


def _pages(site: Path) -> list[Path]:
    """The built pages (not the theme's template fragments copied into _static/)."""
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)


# ---------------------------------------------------------------------------------------------
# tests on the files

def test_internal_links_resolve(site):
    """Offline link check: every relative href/src of every built page is a file of the site."""
    missing = []
    for page in _pages(site):
        for tag, attr, value in _refs(page.read_text(encoding="utf8", errors="replace")):
            if not _is_internal(value):
                continue
            target = _resolve(page, value, site)
            if not target.is_file():
                missing.append(f"{page.relative_to(site)}: <{tag} {attr}={value!r}>")
    assert not missing, f"{len(missing)} broken internal links:\n" + "\n".join(missing[:50])


def test_no_external_scripts_or_styles(site):
    """The site renders offline: no script or stylesheet comes from another host."""
    bad = []
    for page in _pages(site):
        for tag, attr, value in _refs(page.read_text(encoding="utf8", errors="replace")):
            if tag in ("script", "link", "img") and attr in ("src", "href") and not _is_internal(value) \
                    and urlsplit(value).scheme in ("http", "https", ""):
                if tag == "link" and not value.endswith((".css", ".js")):
                    continue  # <link rel=canonical/...> may point anywhere
                if value.startswith("#"):
                    continue
                bad.append(f"{page.relative_to(site)}: <{tag} {attr}={value}>")
    assert not bad, "external assets:\n" + "\n".join(sorted(set(bad))[:30])


def test_every_page_states_its_provenance(site):
    """Each book page carries the banner with the profile, device and commit that produced it."""
    status = json.loads((_executed_dir() / "status.json").read_text())
    pages = sorted((site / "book").rglob("*.html"))
    assert any(p.name == "e1_rank_vs_weight_decay.html" for p in pages)
    missing = []
    for page in pages:
        text = page.read_text(encoding="utf8")
        m = re.search(r'<span class="nrc-provenance">(.*?)</span>', text, re.S)
        if not m or "Produced by profile" not in m.group(1) or "commit" not in m.group(1):
            missing.append(str(page.relative_to(site)))
    assert not missing, f"pages without the provenance banner: {missing}"
    intro = (site / "book" / "intro.html").read_text(encoding="utf8")
    assert str(status["profile"]) in intro


def _cells(row: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def test_scorecard_lists_16_claims(site):
    """One compact row per claim: number, claim, grade, kind, verdict badge, deciding number, page;
    the counts at the top agree with the rows and with an independent tally of the records."""
    text = (site / "book" / "generated" / "scorecard.html").read_text(encoding="utf8")
    m = re.search(r'<table[^>]*id="scorecard-table"[^>]*>(.*?)</table>', text, re.S)
    assert m, "no table with id scorecard-table on the scorecard page"
    body = re.search(r"<tbody>(.*?)</tbody>", m.group(1), re.S).group(1)
    rows = [_cells(r) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
    assert len(rows) == 16
    assert [r[0] for r in rows] == [str(i) for i in range(1, 17)]
    verdicts = [r[4] for r in rows]
    kinds = [r[3] for r in rows]
    assert verdicts[15] == "context" and kinds[15] == "context"
    assert set(verdicts) <= {"pass", "differs", "not checked", "context"}, verdicts
    assert set(kinds) <= {"empirical", "by construction", "context"}, kinds
    assert text.count('class="nrc-verdict ') >= 16
    # independent tally from the records: a claim differs iff one of its checks did not pass
    records = [json.loads(p.read_text()) for p in (_executed_dir() / "results").glob("*.json")]
    passed: dict[int, list[bool]] = {}
    for rec in records:
        for c in rec.get("checks", []):
            passed.setdefault(int(c["claim"]), []).append(bool(c["passed"]))
    for i, (verdict, kind) in enumerate(zip(verdicts, kinds), start=1):
        if kind == "context":
            continue
        expected = "not checked" if i not in passed else ("pass" if all(passed[i]) else "differs")
        assert verdict == expected, f"claim {i}: scorecard says {verdict}, the records say {expected}"
    n_emp = sum(k == "empirical" for k in kinds)
    n_con = sum(k == "by construction" for k in kinds)
    plain = re.sub(r"<[^>]+>", "", text)
    assert f"Empirical claims ({n_emp}, could have come out otherwise)" in plain
    assert f"Hold by construction ({n_con}, " in plain
    for verdict in ("pass", "differs", "not checked"):
        n = sum(v == verdict for v, k in zip(verdicts, kinds) if k == "empirical")
        if n:
            assert f">{n} {verdict}</span>" in text, f"the counts do not say {n} empirical {verdict}"
    # every claim has its folded details, and the first-column link points at them
    for i in range(1, 17):
        assert f'id="scorecard-claim-{i}"' in text
    assert len(re.findall(r'<details|class="[^"]*dropdown', text)) >= 16


def test_figures_are_not_numbered_across_the_book(site):
    """Figure numbers that run across the whole book ("Fig. 22" on E1) are switched off."""
    numbered = [p.relative_to(site).as_posix() for p in _pages(site)
                if 'class="caption-number"' in p.read_text(encoding="utf8", errors="replace")]
    assert not numbered, f"pages with numbered captions: {numbered}"


def test_no_page_cites_the_spec(site):
    """References to the restatement point into the paper chapter, never to "SPEC section ..."."""
    bad = []
    for page in _pages(site):
        text = re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf8", errors="replace"))
        for m in re.finditer(r"\bSPEC\b|\b(in|the) spec\b|SPEC\.md", text):
            bad.append(f"{page.relative_to(site)}: ...{text[max(0, m.start() - 40):m.end() + 40]}...")
    assert not bad, "pages that cite the spec instead of linking the paper chapter:\n" + "\n".join(bad[:20])
    theorems = (site / "book" / "paper" / "theorems.html").read_text(encoding="utf8")
    for label in ("paper-theorem-a", "paper-corollary-a1", "paper-lemma-a2", "paper-lemma-a3", "paper-lemma-a4"):
        assert f'id="{label}"' in theorems, f"the paper chapter lost the link target {label}"


def test_book_refuses_failed_or_missing_notebooks(tmp_path):
    """`nrc book` stops before jupyter-book when a notebook failed, is missing, or shows an error."""
    from nrc.book import build_book, check_executed

    ex = tmp_path / "book" / "published"
    ex.mkdir(parents=True)
    shutil.copy(ROOT / "_toc.yml", tmp_path / "_toc.yml")
    (ex / "status.json").write_text(json.dumps({"profile": "smoke", "finished": "now", "notebooks": [
        {"name": "t1_stationarity", "seconds": 1.0, "ok": False, "error": "RuntimeError: boom"}]}))
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "1/0", "execution_count": 1,
                     "outputs": [{"output_type": "error", "ename": "ZeroDivisionError",
                                  "evalue": "division by zero", "traceback": []}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (ex / "t2_rank_tcv_bound.ipynb").write_text(json.dumps(nb))
    problems = check_executed(ex, root=tmp_path)
    text = "\n".join(problems)
    assert "t1_stationarity: failed in the run" in text
    assert "t2_rank_tcv_bound: cell 0: ZeroDivisionError" in text
    assert "e1_rank_vs_weight_decay: executed notebook" in text and "missing" in text
    assert build_book(tmp_path, strict=True) == 2
    assert not (tmp_path / "_build").exists()


# ---------------------------------------------------------------------------------------------
# tests in the browser

@pytest.mark.parametrize("page", ["book/intro.html", EXPERIMENT_PAGE])
def test_page_renders_with_its_images(site, server, tmp_path, page):
    base, log = server
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, base + page, f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 0
    assert _image_std(shot) > 10, f"screenshot of {page} looks blank"
    dom = _dom(tmp_path, base + page)
    assert "nrc-provenance" in dom
    imgs = [v for tag, attr, v in _refs(dom) if tag == "img" and attr == "src"]
    page_path = site / page
    for src in imgs:
        if src.startswith("data:"):
            continue
        assert _is_internal(src), f"{page}: image from another host: {src}"
        target = _resolve(page_path, src, site)
        assert target.is_file(), f"{page}: <img src={src!r}> does not resolve"
        if target.suffix.lower() == ".png":
            assert _image_std(target) > 1, f"{page}: image {src} is blank"
    if page == EXPERIMENT_PAGE:
        assert any("_images/" in s for s in imgs), "the experiment page shows no figure"
    not_found = [p for p, code in log if code >= 400 and not p.startswith("/favicon.ico")]
    assert not not_found, f"requests that failed while rendering: {not_found}"


def test_theory_math_is_rendered_by_mathjax(site, server, tmp_path):
    base, log = server
    dom = _dom(tmp_path, base + "book/paper/theorems.html")
    n = dom.count("<mjx-container")
    assert n >= 20, f"MathJax rendered only {n} formulas on the page of Theorem A"
    assert "<mjx-merror" not in dom and "data-mjx-error" not in dom, "MathJax reported a TeX error"
    served = [p for p, code in log if code < 400]
    assert any("/_static/mathjax/tex-mml-chtml.js" in p for p in served), "MathJax was not served by the site"
    assert any(p.endswith(".woff") for p in served), "MathJax fonts were not loaded"
    not_found = [p for p, code in log if code >= 400 and not p.startswith("/favicon.ico")]
    assert not not_found, f"requests that failed while rendering: {not_found}"


def _layout(tmp_path: Path, url: str) -> dict:
    """The layout findings the injected script wrote into the page, at WINDOW_WIDTH px."""
    dom = _chromium(tmp_path, url, "--dump-dom", window=f"{WINDOW_WIDTH},1600").stdout
    m = re.search(r'<pre id="nrc-layout"[^>]*>(.*?)</pre>', dom, re.S)
    assert m, f"{url}: the layout script did not report (page did not finish loading?)"
    import html as _html

    return json.loads(_html.unescape(m.group(1)))


def _layout_problems(found: dict) -> list[str]:
    problems = []
    if found["tex"]:
        problems.append(f"raw TeX visible after MathJax: {found['tex'][:3]}")
    if found["truncated"]:
        problems.append(f"truncated table cells: {found['truncated'][:3]}")
    if found["overflow"]:
        problems.append(f"content wider than its column: {found['overflow'][:3]}")
    if found["narrow"]:
        problems.append(f"figures narrower than {MIN_FIGURE_WIDTH} px: {found['narrow'][:3]}")
    if found["first_figure"] and found["code_lines_before_figure"] > MAX_CODE_LINES_BEFORE_FIGURE:
        problems.append(f"{found['code_lines_before_figure']} visible code lines before the first figure "
                        f"(at most {MAX_CODE_LINES_BEFORE_FIGURE})")
    return problems


def test_layout_script_detects_problems(tmp_path):
    """The layout checks fail on a page built to break every rule (so a pass means something)."""
    bad = (tmp_path / "site")
    bad.mkdir()
    code = "\n".join(f"x{i} = {i}" for i in range(70))
    page = f"""<html><body><main><article class="bd-article" style="width:700px">
<p>raw math $\\lambda W$ here</p>
<table><tr><td>(Spearm...</td></tr></table>
<div style="width:1200px">a wide block</div>
<div class="cell"><div class="cell_input"><pre>{code}</pre></div>
<div class="cell_output"><img src="x.png" style="width:300px;height:50px"></div></div>
</article></main></body></html>"""
    (bad / "bad.html").write_text(page)
    handler = functools.partial(type("H", (_Handler,), {"requests": []}), directory=str(bad))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        found = _layout(tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}/bad.html")
    finally:
        httpd.shutdown()
        httpd.server_close()
    problems = " | ".join(_layout_problems(found))
    for expected in ("raw TeX", "truncated", "wider than its column", "narrower than", "code lines"):
        assert expected in problems, f"the layout check missed: {expected}; found {found}"


def test_every_page_reads_well(site, server, tmp_path):
    """Every page at 1400 px, after MathJax: no raw TeX, no truncated cells, nothing wider than its
    column outside a scroll box, figures at least 600 px wide, at most 60 visible code lines
    before the first figure."""
    base, _ = server
    failures = {}
    for page in _pages(site):
        rel = page.relative_to(site).as_posix()
        if rel in ("genindex.html", "search.html", "py-modindex.html"):
            continue
        problems = _layout_problems(_layout(tmp_path, base + rel))
        if problems:
            failures[rel] = problems
    report = "\n".join(f"{rel}:\n  " + "\n  ".join(p) for rel, p in failures.items())
    assert not failures, f"{len(failures)} pages break the layout rules:\n{report}"


def test_score_claims_verdicts_and_counts():
    """Verdicts from recorded checks: any failed check makes a claim differ and decides it; kinds
    are counted apart; claims without checks are 'not checked'; context claims are never scored."""
    from nrc.book import score_claims, verdict_counts

    claims = [{"claim": 1, "statement": "a", "grade": "G", "kind": "empirical"},
              {"claim": 2, "statement": "b", "grade": "G", "kind": "construction"},
              {"claim": 3, "statement": "c", "grade": "G", "kind": "empirical"},
              {"claim": 4, "statement": "d", "grade": "G", "context_only": True}]
    results = {
        "t1_x": {"checks": [{"claim": 1, "what": "w1", "measured": "m1", "passed": True},
                            {"claim": 2, "what": "w2", "measured": "m2", "passed": True}]},
        "e1_y": {"checks": [{"claim": 1, "what": "w3", "measured": "m3", "passed": False},
                            {"claim": 4, "what": "w4", "measured": "m4", "passed": False}]},
    }
    rows = {r["claim"]: r for r in score_claims(claims, results, ["t1_x", "e1_y"])}
    assert rows[1]["verdict"] == "differs" and rows[1]["deciding"][1]["measured"] == "m3"
    assert rows[1]["pages"] == ["t1_x", "e1_y"]
    assert rows[2]["verdict"] == "pass" and rows[2]["deciding"][1]["measured"] == "m2"
    assert rows[3]["verdict"] == "not checked" and rows[3]["deciding"] is None
    assert rows[4]["verdict"] == "context"
    counts = verdict_counts(list(rows.values()))
    assert counts == {"empirical": {"differs": 1, "not checked": 1}, "construction": {"pass": 1},
                      "context": {"context": 1}}
    with pytest.raises(ValueError, match="kind must be one of"):
        score_claims([{"claim": 5, "statement": "e", "grade": "G", "kind": "typo"}], {}, [])
