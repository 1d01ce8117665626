"""The built book: clean build, links, figures, math and provenance, checked in headless Chromium.

Builds the book once from the committed run in ``book/published`` (``nrc_companion.book.build.build_book``:
``jupyter-book build . -n -W --keep-going``) into a temporary folder, serves the HTML on
127.0.0.1 and looks at it with ``/usr/bin/chromium --headless``. Set ``NRC_BOOK_EXECUTED=DIR`` to
build from another run folder instead (for example ``nrc reproduce --profile smoke --out
/tmp/smoke``); ``nrc book`` then stages a copy of the sources and leaves the committed run alone.

Every page of the site is read in Chromium at 1400 px (a laptop) and 420 px (a phone) wide, after
MathJax has run; one Chromium session per width loads every page in turn (``DRIVER_HTML``). A
page fails when it shows raw TeX, a truncated table cell, content wider than its column outside a
scroll box, a verdict or prose outside the column even inside one, a figure narrower than 600 px
(or the column), figure text under 11 px at 1400 px (declared font size times rendered scale),
more than 60 visible code lines before its first figure, a visible parameters cell whose values
differ from the run's, a figure that a click does not enlarge, or two search boxes. A page built
to break every rule checks that each rule can fail.
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
WINDOW_WIDTH = 1400          # px, a laptop's window for the layout checks
PHONE_WIDTH = 420            # px, a phone's
MIN_FIGURE_WIDTH = 600       # px, rendered width of every figure (on a phone: 90 % of the column)
MIN_FIGURE_TEXT_PX = 11      # px, the smallest figure text at WINDOW_WIDTH
MAX_CODE_LINES_BEFORE_FIGURE = 60  # visible code lines before a page's first figure (parameters aside)
# A PNG does not declare its font size: take the book's smallest figure font (tick labels,
# nrc_companion.report.page_setup) at the figures' 100 dpi, in the image's own pixels.
PNG_TEXT_PX = (11 - 1) * 100 / 72


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
    from nrc_companion.book.build import build_book

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
  await Promise.all(Array.from(document.images).map((im) => im.complete ? null :
    new Promise((r) => { im.addEventListener("load", r); im.addEventListener("error", r); })));
  const MIN_FIG = %(min_fig)d, MAX_LINES = %(max_lines)d, PNG_TEXT_PX = %(png_text_px)f;
  const W = window.innerWidth;
  const out = {tex: [], truncated: [], overflow: [], verdict_overflow: [], narrow: [], small_text: [],
               stale_parameters: [], search_boxes: 0, code_lines_before_figure: 0, first_figure: false,
               min_figure_text_px: null, width: W, height: document.documentElement.scrollHeight};
  // folded content (a closed <details>, a toggled-off block) is not visible, whatever its box says
  const visible = (el) => {
    for (let a = el; a; a = a.parentElement)
      if (a.tagName === "DETAILS" && !a.open && a !== el && !(el.closest("summary"))) return false;
    if (el.checkVisibility && !el.checkVisibility({visibilityProperty: true, contentVisibilityAuto: true})) return false;
    const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0;
  };
  const snippet = (t) => t.replace(/\s+/g, " ").trim().slice(0, 80);
  const article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
  const box = article.getBoundingClientRect();
  const pad = getComputedStyle(article);
  const column = box.width - parseFloat(pad.paddingLeft || 0) - parseFloat(pad.paddingRight || 0);
  const right = Math.min(box.right, W);
  const outside = (r) => r.right > right + 2 || r.left < box.left - 2;
  const describe = (el, r) => el.tagName.toLowerCase() + "." + (el.className || "").toString().split(" ")[0] +
      " (" + Math.round(r.width) + " px in a " + Math.round(box.width) + " px column): " +
      snippet(el.textContent || el.getAttribute("src") || "");

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
  // 3a. content wider than its column, unless inside a box that scrolls horizontally
  const scrolls = (el) => { for (let a = el.parentElement; a && a !== article; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX; if (o === "auto" || o === "scroll") return true; } return false; };
  for (const el of article.querySelectorAll("*")) {
    // MathJax's assistive MathML is clipped to nothing: what a reader sees is the mjx-container
    if (!visible(el) || el.closest("#nrc-layout, mjx-assistive-mml")) continue;
    const r = el.getBoundingClientRect();
    const o = getComputedStyle(el).overflowX;
    if (outside(r) && !scrolls(el)) {
      out.overflow.push(describe(el, r));
    } else if (o === "hidden" && el.scrollWidth > el.clientWidth + 2 && !el.closest("mjx-container, .math")) {
      out.overflow.push(el.tagName.toLowerCase() + " clips its content (" + el.scrollWidth + " > " +
                        el.clientWidth + " px): " + snippet(el.textContent || ""));
    }
  }
  // 3b. a verdict, and the prose around it, is never off-screen, not even in a box that scrolls:
  // every verdict badge, verdict card and table row carrying a verdict, every paragraph and list
  // item lies inside the column
  const carriers = new Set();
  for (const b of article.querySelectorAll(".nrc-verdict")) {
    carriers.add(b);
    const row = b.closest("tr"); if (row) carriers.add(row);
    const card = b.closest(".nrc-check"); if (card) carriers.add(card);
  }
  for (const t of article.querySelectorAll("table"))  // a table with a verdict column carries verdicts
    if (Array.from(t.querySelectorAll("th")).some((th) => /^\s*verdict\s*$/i.test(th.textContent))) carriers.add(t);
  for (const p of article.querySelectorAll("p, li, dd, dt, figcaption"))
    if (!p.closest("pre, .highlight, .cell_input, mjx-container, table, .nrc-fold")) carriers.add(p);
  for (const el of carriers) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    if (outside(r) || el.scrollWidth > el.clientWidth + 2 && getComputedStyle(el).overflowX !== "visible" &&
        !el.matches("p, li, dd, dt, figcaption")) out.verdict_overflow.push(describe(el, r));
  }
  // 4. figures: at least MIN_FIG px wide (or the whole column on a narrow screen); their text at
  // least %(min_text)d px: the figure's declared font size (SVG: each <text>'s font-size in the
  // viewBox's units; PNG: the book's smallest figure font at its dpi) times its rendered scale
  const figures = Array.from(article.querySelectorAll('.cell_output img, figure img, img[src*="_images/"]')).filter(visible);
  for (const img of figures) {
    const w = img.getBoundingClientRect().width;
    const name = (img.getAttribute("src") || "").split("/").pop();
    if (w < Math.min(MIN_FIG, 0.95 * column)) out.narrow.push(name + ": " + Math.round(w) + " px");
    let px = null;
    if (/\.svg$/i.test(img.src)) {
      try {
        const svg = new DOMParser().parseFromString(await (await fetch(img.src)).text(), "image/svg+xml").documentElement;
        const vb = (svg.getAttribute("viewBox") || "").split(/[\s,]+/).map(Number);
        const vw = vb.length === 4 ? vb[2] : parseFloat(svg.getAttribute("width"));
        const sizes = Array.from(svg.querySelectorAll("text")).map((t) => {
          const st = t.getAttribute("style") || "";
          if (!/text-anchor/.test(st)) return null;  // mathtext glyphs (sub/superscripts) excepted
          const m = /font-size:\s*([\d.]+)px/.exec(st) || /([\d.]+)px/.exec(t.getAttribute("font-size") || "");
          return m ? parseFloat(m[1]) : null; }).filter((v) => v !== null);
        if (sizes.length && vw) px = Math.min(...sizes) * w / vw;
      } catch (e) { /* unreadable SVG: no measurement */ }
    } else if (img.naturalWidth > 0) {
      px = PNG_TEXT_PX * w / img.naturalWidth;
    }
    if (px !== null) {
      out.min_figure_text_px = out.min_figure_text_px === null ? px : Math.min(out.min_figure_text_px, px);
      if (px < %(min_text)d) out.small_text.push(name + ": " + px.toFixed(1) + " px");
    }
  }
  // 4b. a click on a figure enlarges it (book/_static/nrc.js), and a second click closes it
  if (figures.length) {
    figures[0].click();
    const box = document.querySelector(".nrc-lightbox");
    out.lightbox = !!box && !!box.querySelector("img");
    if (box) box.click();
    if (document.querySelector(".nrc-lightbox")) out.lightbox = false;
  }
  // 5. visible code lines before the first figure
  const isFigure = (img) => img.closest(".cell_output, figure") && visible(img);
  for (const el of article.querySelectorAll(".cell_input, .cell_output img, figure img")) {
    if (el.tagName === "IMG") { if (isFigure(el)) { out.first_figure = true; break; } continue; }
    const cell = el.closest(".cell");
    if (cell && /tag_(injected-)?parameters/.test(cell.className)) continue;
    if (!visible(el)) continue;
    out.code_lines_before_figure += el.textContent.split("\n").filter((l) => l.trim()).length;
  }
  // 6. no visible code cell assigns a parameter a value other than the one the run used
  const holder = document.querySelector(".nrc-params[data-run]");
  const run = holder ? JSON.parse(holder.getAttribute("data-run")) : null;
  const pyValue = (s) => { try {
      return JSON.stringify(JSON.parse(s.replace(/'/g, '"').replace(/\bTrue\b/g, "true").replace(/\bFalse\b/g, "false")
        .replace(/\bNone\b/g, "null").replace(/\(/g, "[").replace(/,?\s*\)/g, "]"))); } catch (e) { return null; } };
  for (const cell of article.querySelectorAll(".cell")) {
    const input = cell.querySelector(".cell_input");
    if (!input || !visible(input)) continue;
    const isParams = /tag_(injected-)?parameters/.test(cell.className);
    if (isParams && !run) { out.stale_parameters.push("a visible parameters cell, and no list of the run's values"); continue; }
    if (!run) continue;
    for (const line of input.textContent.split("\n")) {
      const m = /^\s*([A-Za-z_]\w*)\s*(?::[^=]+)?=\s*([^#]+?)\s*(#.*)?$/.exec(line);
      if (!m || !(m[1] in run)) continue;
      const shown = pyValue(m[2]);
      if (shown !== null && shown !== JSON.stringify(run[m[1]]))
        out.stale_parameters.push(m[1] + " shows " + m[2] + ", the run used " + JSON.stringify(run[m[1]]));
    }
  }
  // 7. search boxes on screen
  const boxes = Array.from(document.querySelectorAll(".search-button-field, button.search-button, .bd-search"))
    .filter((el) => visible(el) && !el.closest(".search-button__wrapper, dialog"));
  out.search_boxes = boxes.length;
  out.search_where = boxes.map((el) => (el.parentElement.className || el.parentElement.tagName).toString());
  done(out);
})();
""" % {"min_fig": MIN_FIGURE_WIDTH, "max_lines": MAX_CODE_LINES_BEFORE_FIGURE, "min_text": MIN_FIGURE_TEXT_PX,
       "png_text_px": PNG_TEXT_PX}

# A page that loads each page of the list in an iframe of the given width, one after the other,
# and collects what the layout script found: one Chromium session measures every page.
DRIVER_HTML = r"""<!doctype html><html><body><script>
(async function () {
  const q = new URLSearchParams(location.search);
  const W = parseInt(q.get("width")), pages = JSON.parse(q.get("pages"));
  const results = {};
  for (const p of pages) {
    const f = document.createElement("iframe");
    f.style.cssText = "width:" + W + "px;height:1600px;border:0";
    document.body.appendChild(f);
    results[p] = await new Promise((resolve) => {
      let n = 0;
      const poll = () => {
        let pre = null;
        try { pre = f.contentDocument && f.contentDocument.getElementById("nrc-layout"); } catch (e) {}
        if (pre) return resolve(JSON.parse(pre.textContent));
        if (++n > 1200) return resolve({error: "the layout script did not report"});
        setTimeout(poll, 50);
      };
      f.src = p; poll();
    });
    f.remove();
  }
  const pre = document.createElement("pre");
  pre.id = "nrc-results"; pre.textContent = JSON.stringify(results);
  document.body.appendChild(pre);
})();
</script></body></html>"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list  # (path, status) of every request, set per server

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/__nrc_layout.js":
            return self._send(200, "application/javascript", LAYOUT_JS.encode())
        if path == "/__nrc_driver.html":
            return self._send(200, "text/html; charset=utf-8", DRIVER_HTML.encode())
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
              window: str = "1280,2000", budget: int = 5000) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
           f"--window-size={window}", f"--virtual-time-budget={budget}", *extra, url]
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
    assert set(verdicts) <= {"pass", "differs", "inconclusive", "reported", "not checked", "context"}, verdicts
    assert set(kinds) <= {"empirical", "by construction", "our method", "context"}, kinds
    assert text.count('class="nrc-verdict ') >= 16
    # independent tally from the records: a claim's deciding checks are its empirical and
    # construction ones (old records: "passed", empirical); it differs if one differs, else is
    # inconclusive if one is, else passes; convergence and reports never decide; a claim tested
    # only by our own method (kind "method") takes those checks' verdict
    records = [json.loads(p.read_text()) for p in (_executed_dir() / "results").glob("*.json")]
    found: dict[int, list[tuple[str, str]]] = {}
    for rec in records:
        for c in rec.get("checks", []):
            v = c["verdict"] if "verdict" in c else ("pass" if c["passed"] else "differs")
            found.setdefault(int(c["claim"]), []).append((c.get("kind") or "empirical", v))
    for i, (verdict, kind) in enumerate(zip(verdicts, kinds), start=1):
        if kind == "context":
            continue
        checks = found.get(i, [])
        basis = [v for k, v in checks if k in ("empirical", "construction")] or [v for k, v in checks if k == "method"]
        expected = "not checked" if not basis else next(v for v in ("differs", "inconclusive", "pass") if v in basis)
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


def test_figures_have_alt_text(site):
    """Every figure says what it shows (its caption), not its file name."""
    bad = []
    for page in _pages(site):
        for m in re.finditer(r"<img([^>]*)>", page.read_text(encoding="utf8", errors="replace")):
            attrs = m.group(1)
            src = re.search(r'src="([^"]*)"', attrs)
            if not src or "_images/" not in src.group(1) and "generated/" not in src.group(1):
                continue
            alt = re.search(r'alt="([^"]*)"', attrs)
            if not alt or len(alt.group(1)) < 12 or re.search(r"\.(png|svg|jpe?g)$", alt.group(1)):
                bad.append(f"{page.relative_to(site)}: {src.group(1)} alt={alt.group(1) if alt else None!r}")
    assert not bad, "figures without a caption as alt text:\n" + "\n".join(bad[:20])


def test_pages_list_the_parameters_the_run_used(site):
    """Each notebook page lists the values its run used (papermill's, over the defaults), and folds
    the parameters cell; papermill's injected cell is not a second visible cell."""
    import html as _html

    checked = 0
    for nb_path in sorted(_executed_dir().glob("*.ipynb")):
        page = site / "book" / "published" / f"{nb_path.stem}.html"
        if not page.exists():
            continue
        used = json.loads(nb_path.read_text()).get("metadata", {}).get("papermill", {}).get("parameters") or {}
        text = page.read_text(encoding="utf8")
        m = re.search(r'<div class="nrc-params" data-run="([^"]*)"', text)
        if not used:
            continue
        assert m, f"{page.name}: no list of the run's parameters"
        shown = json.loads(_html.unescape(m.group(1)))
        for k, v in used.items():
            assert json.dumps(shown[k]) == json.dumps(v), f"{page.name}: {k} listed as {shown[k]!r}, the run used {v!r}"
        assert "tag_injected-parameters" not in text, f"{page.name}: papermill's cell is still a cell of its own"
        assert re.search(r'class="cell tag_parameters[^"]*tag_hide-cell', text), f"{page.name}: parameters cell not folded"
        checked += 1
    assert checked >= 10


def test_status_and_performance_pages(site):
    """The status page names notebooks by their titles; the performance page shows the run's
    time per notebook and the trainer's ratio as SVG figures, with the run's total time."""
    status = json.loads((_executed_dir() / "status.json").read_text())
    text = (site / "book" / "generated" / "status.html").read_text(encoding="utf8")
    assert "E1 — Rank against weight decay" in text
    perf = (site / "book" / "performance.html").read_text(encoding="utf8")
    assert perf.count('.svg"') >= 2, "the performance page lost its figures"
    total = sum(float(r.get("seconds") or 0) for r in status["notebooks"])
    from nrc_companion.book.markup import fmt_seconds

    assert fmt_seconds(total) in perf
    assert "issue" not in re.sub(r"<[^>]+>", " ", perf).lower(), "the performance page reads like a changelog"


def test_performance_page_from_phases(tmp_path):
    """With per-notebook phases in status.json the page splits each notebook's time by phase; a
    benchmark from another commit than the run is flagged, never passed off as the run's."""
    from nrc_companion.book.performance import performance_page

    status = {"profile": "full", "commit": "a" * 40, "device": "cpu", "threads": 2, "notebooks": [
        {"name": "t1_x", "seconds": 10.0, "train_seconds": 6.0,
         "phases": {"startup": 1.0, "data": 1.0, "training": 6.0, "analysis": 1.0, "figures": 1.0, "other": 0.0}},
        {"name": "e1_y", "seconds": 30.0, "train_seconds": 20.0,
         "phases": {"startup": 2.0, "data": 3.0, "training": 20.0, "analysis": 2.0, "figures": 3.0, "other": 0.0}}]}
    root = tmp_path / "root"
    (root / "benchmarks").mkdir(parents=True)
    bench = {"environment": {"commit": "b" * 40, "device": "cpu", "time": "t"}, "command": "python bench",
             "members": 21, "widths": [784, 10], "batch": 128,
             "rows": [{"threads": 1, "ratio": 0.6}, {"threads": 2, "ratio": 0.5}],
             "summary": {"1": {"median_ratio": 0.6, "min_ratio": 0.6, "max_ratio": 0.6},
                         "2": {"median_ratio": 0.5, "min_ratio": 0.5, "max_ratio": 0.5}}}
    (root / "benchmarks" / "matmul_ceiling.json").write_text(json.dumps(bench))
    gen = tmp_path / "gen"
    text = performance_page(status, ["t1_x", "e1_y"], tmp_path, root, gen)
    assert "40.0 s" in text and "training 65 %" in text and "kernel start-up 8 %" in text and "figures 10 %" in text
    assert "other" not in text.split("Wall time of each")[0].split(":")[-1]  # empty phases are not listed
    svg = (gen / "performance_time.svg").read_text()
    assert "<text" in svg and "kernel start-up" in svg
    assert (gen / "performance_ratio.svg").is_file()
    assert "Measured at another commit" in text and "bbbbbbbbbbbb" in text and "aaaaaaaaaaaa" in text
    assert "1 thread: 0.60" in text and "2 threads: 0.50" in text
    bench["environment"]["commit"] = "a" * 40
    (root / "benchmarks" / "matmul_ceiling.json").write_text(json.dumps(bench))
    assert "another commit" not in performance_page(status, ["t1_x", "e1_y"], tmp_path, root, gen)


def test_prepare_notebook_shows_what_ran(tmp_path):
    """The staged notebook: run values listed, both parameter cells under one toggle, the scale as
    a list, the old verdict table redrawn from the record, long tables folded, alt text set."""
    from nrc_companion.book.stage import prepare_notebook
    from nrc_companion.profiles import notebook_parameters

    def cell(kind, src, tags=(), **kw):
        c = {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": src}
        if kind == "code":
            c.update(outputs=[], execution_count=1)
        c.update(kw)
        return c
    old_table = ('<div class="nrc-table"><table><thead><tr><th class="col_heading">claim</th><th>what</th>'
                 '<th>measured</th><th>verdict</th></tr></thead><tbody><tr><td>2</td></tr></tbody></table></div>')
    rows = "".join(f'<tr><td id="T_x_row{i}_col0" class="data">{v}</td></tr>'
                   for i, v in enumerate(["13.4", "6.79e+00"] * 8))
    long_table = (f'<div class="nrc-table"><table><thead><tr><th class="col_heading level0 col0">x</th></tr></thead>'
                  f"<tbody>{rows}</tbody></table></div>")
    scale = {"output_type": "display_data", "metadata": {"scrapbook": {"name": "x_scale"}},
             "data": {"application/papermill.record/text/plain": repr("mnist, N = 10 training samples, K = 2 classes; "
                                                                        "widths (3, 2); device cpu.")}}
    nb = {"metadata": {"papermill": {"parameters": {"epochs": 50}}}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        cell("markdown", "# T\n\n**Scale of this run:** {glue:text}`x_scale`"),
        cell("code", "epochs: int = 5  # epochs\nseed: int = 0", ["parameters", "hide-input"]),
        cell("code", "# Parameters\nepochs = 50\n", ["injected-parameters"]),
        cell("code", "verdict_table(checks)", outputs=[{"output_type": "display_data", "metadata": {},
                                                       "data": {"text/html": old_table}}]),
        cell("code", "show_table(df)", outputs=[{"output_type": "display_data", "metadata": {},
                                                 "data": {"text/html": long_table}}, scale]),
        cell("code", "fig", metadata={"mystnb": {"figure": {"caption": "Rank against $\\lambda$"}}},
             outputs=[{"output_type": "display_data", "metadata": {}, "data": {"image/png": "AA=="}}]),
    ]}
    record = {"checks": [{"claim": 2, "what": "w", "measured": "m", "passed": False}]}
    (tmp_path / "t.ipynb").write_text(json.dumps(nb))
    out = prepare_notebook(nb, record, "full", defaults=notebook_parameters(tmp_path / "t.ipynb"))
    cells = out["cells"]
    assert nb["cells"][1]["source"].startswith("epochs: int = 5")  # the input is not modified
    assert '<dl class="nrc-scale"><dt>Scale of this run</dt><dd><strong>mnist</strong>' in cells[0]["source"]
    assert "device cpu" in cells[0]["source"] and "{glue:text}" not in cells[0]["source"]
    listing = cells[1]["source"]
    assert cells[1]["id"] == "nrc-run-parameters" and "nrc-param-set" in listing
    assert json.loads(re.search(r'data-run="([^"]*)"', listing).group(1).replace("&quot;", '"')) == {"epochs": 50, "seed": 0}
    assert cells[2]["metadata"]["tags"] == ["parameters", "hide-cell"] and "epochs = 50" in cells[2]["source"]
    assert "remove-cell" in cells[3]["metadata"]["tags"]
    verdict = cells[4]["outputs"][0]["data"]
    assert "nrc-verdict-differs" in verdict["text/markdown"] and "[Claim 2](#paper-claim-2)" in verdict["text/markdown"]
    folded = cells[5]["outputs"][0]["data"]["text/html"]
    assert folded.startswith('<details class="nrc-fold">') and "16 rows" in folded
    assert ">1.34e+01<" in folded and ">6.79e+00<" in folded and ">13.4<" not in folded
    assert cells[6]["metadata"]["mystnb"]["image"]["alt"] == "Rank against λ"


def test_book_refuses_failed_or_missing_notebooks(tmp_path):
    """`nrc book` stops before jupyter-book when a notebook failed, is missing, or shows an error."""
    from nrc_companion.book.build import build_book
    from nrc_companion.book.run import check_executed

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


def _layout_all(tmp_path: Path, base: str, pages: list[str], width: int) -> dict[str, dict]:
    """What the layout script found on each page (relative URL), all pages in one Chromium session
    at ``width`` px (the driver page loads them one by one in an iframe that wide)."""
    import html as _html
    from urllib.parse import quote

    url = f"{base}__nrc_driver.html?width={width}&pages={quote(json.dumps(pages))}"
    dom = _chromium(tmp_path, url, "--dump-dom", window=f"{width + 40},1700", timeout=600,
                    budget=60000 * len(pages)).stdout
    m = re.search(r'<pre id="nrc-results"[^>]*>(.*?)</pre>', dom, re.S)
    assert m, f"the layout driver did not report at {width} px (a page did not finish loading?)"
    return json.loads(_html.unescape(m.group(1)))


def _layout_problems(found: dict, width: int = WINDOW_WIDTH) -> list[str]:
    if "error" in found:
        return [found["error"]]
    problems = []
    if found["tex"]:
        problems.append(f"raw TeX visible after MathJax: {found['tex'][:3]}")
    if found["truncated"]:
        problems.append(f"truncated table cells: {found['truncated'][:3]}")
    if found["overflow"]:
        problems.append(f"content wider than its column: {found['overflow'][:3]}")
    if found["verdict_overflow"]:
        problems.append(f"a verdict or prose outside the column: {found['verdict_overflow'][:3]}")
    if found["narrow"]:
        problems.append(f"figures narrower than {MIN_FIGURE_WIDTH} px or the column: {found['narrow'][:3]}")
    if found.get("lightbox") is False:
        problems.append("a click on a figure does not enlarge it")
    if width >= WINDOW_WIDTH and found["small_text"]:
        problems.append(f"figure text smaller than {MIN_FIGURE_TEXT_PX} px: {found['small_text'][:3]}")
    if found["first_figure"] and found["code_lines_before_figure"] > MAX_CODE_LINES_BEFORE_FIGURE:
        problems.append(f"{found['code_lines_before_figure']} visible code lines before the first figure "
                        f"(at most {MAX_CODE_LINES_BEFORE_FIGURE})")
    if found["stale_parameters"]:
        problems.append(f"a visible parameters cell that differs from the run: {found['stale_parameters'][:3]}")
    if width >= WINDOW_WIDTH and found["search_boxes"] > 1:
        problems.append(f"{found['search_boxes']} search boxes on screen")
    return problems


BAD_PAGE = """<html><body><div class="bd-search">search</div><button class="search-button">search</button>
<main><article class="bd-article" style="width:700px">
<p>raw math $\\\\lambda W$ here</p>
<table><tr><td>(Spearm...</td></tr></table>
<div style="width:1200px">a wide block</div>
<div style="overflow-x:auto"><table style="width:1500px"><tr><td style="width:1300px">what</td>
<td><span class="nrc-verdict nrc-verdict-pass">pass</span></td></tr></table></div>
<div style="overflow-x:auto"><table style="width:1500px"><tr><th>claim</th><th>verdict</th></tr>
<tr><td style="width:1300px">a claim</td><td>holds</td></tr></table></div>
<div class="nrc-params" data-run='{"per_class": 1000, "widths": [784, 256]}'></div>
<div class="cell tag_parameters"><div class="cell_input"><pre>per_class: int = 100  # default
widths: list = [784, 256]</pre></div></div>
<div class="cell"><div class="cell_input"><pre>CODE</pre></div>
<div class="cell_output"><img src="small.svg" style="width:300px;height:50px"></div></div>
</article></main></body></html>"""
SMALL_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="540pt" height="90pt" viewBox="0 0 540 90">'
             '<text x="10" y="40" style="font-size: 10px; font-family: sans-serif; text-anchor: start">tick</text>'
             '</svg>')


def test_layout_script_detects_problems(tmp_path):
    """The layout checks fail on a page built to break every rule (so a pass means something)."""
    bad = tmp_path / "site"
    bad.mkdir()
    code = "\n".join(f"x{i} = {i}" for i in range(70))
    (bad / "bad.html").write_text(BAD_PAGE.replace("CODE", code))
    (bad / "small.svg").write_text(SMALL_SVG)
    handler = functools.partial(type("H", (_Handler,), {"requests": []}), directory=str(bad))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        found = _layout_all(tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}/", ["bad.html"],
                            WINDOW_WIDTH)["bad.html"]
    finally:
        httpd.shutdown()
        httpd.server_close()
    problems = " | ".join(_layout_problems(found, WINDOW_WIDTH))
    # a 10 px font in a 540-unit SVG drawn 300 px wide is 5.6 px on screen
    for expected in ("raw TeX", "truncated", "wider than its column", "a verdict or prose outside",
                     "narrower than", "figure text smaller", "code lines", "per_class shows 100",
                     "search boxes", "does not enlarge"):
        assert expected in problems, f"the layout check missed: {expected}; found {found}"
    assert "widths shows" not in problems, "a parameter shown with the run's own value was flagged"
    # both the table with a badge and the plain table with a "verdict" column are caught
    off = found["verdict_overflow"]
    assert any(v.startswith("span.nrc-verdict") for v in off) and any(v.startswith("table") for v in off), off


def _site_pages(site: Path) -> list[str]:
    return [p.relative_to(site).as_posix() for p in _pages(site)
            if p.relative_to(site).as_posix() not in ("genindex.html", "search.html", "py-modindex.html")]


@pytest.mark.parametrize("width", [WINDOW_WIDTH, PHONE_WIDTH])
def test_every_page_reads_well(site, server, tmp_path, width):
    """Every page at a laptop's and a phone's width, after MathJax: no raw TeX, no truncated cells,
    nothing wider than its column outside a scroll box, no verdict or prose outside the column
    even in one, figures as wide as the column allows, figure text of at least 11 px on a laptop,
    at most 60 visible code lines before the first figure, no visible parameters cell showing a
    value the run did not use, a click on a figure enlarges it, one search box."""
    base, _ = server
    pages = _site_pages(site)
    found = _layout_all(tmp_path, base, pages, width)
    failures = {rel: p for rel in pages if (p := _layout_problems(found.get(rel, {"error": "not measured"}), width))}
    heights = {rel: found[rel].get("height") for rel in pages if rel in found}
    print(f"\npage heights at {width} px: " + json.dumps(heights))
    report = "\n".join(f"{rel}:\n  " + "\n  ".join(p) for rel, p in failures.items())
    assert not failures, f"{len(failures)} pages break the layout rules at {width} px:\n{report}"


def test_score_claims_verdicts_and_counts():
    """Verdicts from recorded checks: any failed check makes a claim differ and decides it; kinds
    are counted apart; claims without checks are 'not checked'; context claims are never scored."""
    from nrc_companion.book.pages import score_claims, verdict_counts

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
                      "method": {}, "context": {"context": 1}}
    # new records: convergence never decides; a claim tested by our method only is labelled so
    new = {"t1_x": {"checks": [
        {"id": "a", "claim": 1, "kind": "convergence", "verdict": "differs", "statement": "s", "measured": "m"},
        {"id": "b", "claim": 1, "kind": "empirical", "verdict": "inconclusive", "statement": "s", "measured": "m5"},
        {"id": "c", "claim": 3, "kind": "method", "verdict": "differs", "statement": "s", "measured": "m6"}]}}
    rows = {r["claim"]: r for r in score_claims(claims, new, ["t1_x"])}
    assert rows[1]["verdict"] == "inconclusive" and rows[1]["deciding"][1]["measured"] == "m5"
    assert len(rows[1]["convergence"]) == 1
    assert rows[3]["verdict"] == "differs" and rows[3]["kind"] == "method"
    with pytest.raises(ValueError, match="kind must be one of"):
        score_claims([{"claim": 5, "statement": "e", "grade": "G", "kind": "typo"}], {}, [])
