"""The built book: clean build, links, figures, math and provenance, checked in headless Chromium.

Needs executed notebooks in ``book/executed`` (``nrc reproduce --profile smoke``); the module
builds the book once (``nrc.book.build_book``: ``jupyter-book build . -n -W --keep-going``),
serves ``_build/html`` on 127.0.0.1 and looks at it with ``/usr/bin/chromium --headless``.
"""
from __future__ import annotations

import functools
import http.server
import json
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
EXECUTED = ROOT / "book" / "executed"
HTML = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
EXPERIMENT_PAGE = "book/executed/e1_rank_vs_weight_decay.html"


# ---------------------------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="module")
def site(smoke_records) -> Path:
    """Build the book from the executed notebooks (the smoke run); the path of the HTML output."""
    if not (EXECUTED / "status.json").exists():
        pytest.fail(f"no executed notebooks in {EXECUTED}: run `nrc reproduce --profile smoke` first")
    from nrc.book import build_book

    rc = build_book(ROOT, strict=True, quiet=True)
    assert rc == 0, f"`nrc book` failed with exit code {rc} (see the output above)"
    return HTML


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list  # (path, status) of every request, set per server

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


def _chromium(tmp_path: Path, url: str, *extra: str, timeout: int = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--window-size=1280,2000", "--virtual-time-budget=5000", *extra, url]
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
    status = json.loads((EXECUTED / "status.json").read_text())
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


def test_scorecard_lists_16_claims(site):
    text = (site / "book" / "generated" / "scorecard.html").read_text(encoding="utf8")
    m = re.search(r'<table[^>]*id="scorecard-table"[^>]*>(.*?)</table>', text, re.S)
    assert m, "no table with id scorecard-table on the scorecard page"
    body = re.search(r"<tbody>(.*?)</tbody>", m.group(1), re.S).group(1)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    assert len(rows) == 16
    numbers = [re.sub(r"<[^>]+>", "", re.search(r"<td[^>]*>(.*?)</td>", r, re.S).group(1)).strip() for r in rows]
    assert numbers == [str(i) for i in range(1, 17)]
    verdicts = [re.sub(r"<[^>]+>", "", re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)[-1]).strip() for r in rows]
    assert verdicts[15].startswith("context only")
    assert all(re.match(r"(pass|differs|not checked|context only)", v) for v in verdicts), verdicts


def test_book_refuses_failed_or_missing_notebooks(tmp_path):
    """`nrc book` stops before jupyter-book when a notebook failed, is missing, or shows an error."""
    from nrc.book import build_book, check_executed

    ex = tmp_path / "book" / "executed"
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
    dom = _dom(tmp_path, base + "book/theory.html")
    n = dom.count("<mjx-container")
    assert n >= 20, f"MathJax rendered only {n} formulas on the theory page"
    assert "<mjx-merror" not in dom and "data-mjx-error" not in dom, "MathJax reported a TeX error"
    served = [p for p, code in log if code < 400]
    assert any("/_static/mathjax/tex-mml-chtml.js" in p for p in served), "MathJax was not served by the site"
    assert any(p.endswith(".woff") for p in served), "MathJax fonts were not loaded"
    not_found = [p for p, code in log if code >= 400 and not p.startswith("/favicon.ico")]
    assert not not_found, f"requests that failed while rendering: {not_found}"
