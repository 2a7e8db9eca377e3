"""Open a report in headless Chromium: every figure loaded, no JS errors, optional full-page screenshot.

``check_in_browser(index_html)`` runs Chromium twice: ``--dump-dom`` after the load event (the report's inline
script writes ``data-images-loaded``, ``data-broken``, ``data-js-errors`` and ``data-page-height`` on <body>;
see ``build._LOAD_CHECK_JS``) and, when asked, ``--screenshot`` at the page's full height. Console messages
logged by Chromium on stderr (``--enable-logging=stderr``) are collected as a second source of JS errors.

``python -m plasticity.report.browser DIR [--screenshot PNG]`` (DIR: a report directory, a study directory or an
index.html) prints the result as JSON and exits 1 on failure, 2 when Chromium or the report is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from plasticity.errors import UserError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)
# "[pid:tid:date:INFO:CONSOLE:12] "message", source: file:///.../index.html (12)" (format of Chromium >= 120)
_CONSOLE_RE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)$")
_ERROR_WORDS = ("Uncaught", "Error", "error", "Failed", "failed")


def find_chromium() -> str | None:
    """``$PLASTICITY_CHROMIUM`` if set, else the first of chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("PLASTICITY_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _BodyAttrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" and self.attrs is None:
            self.attrs = {k: v or "" for k, v in attrs}


def _body_attrs(dom: str) -> dict[str, str] | None:
    p = _BodyAttrs()
    p.feed(dom)
    return p.attrs


def _run(chromium: str, args: list[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="plasticity-chromium-") as profile:
        cmd = [chromium, *_FLAGS, f"--user-data-dir={profile}", *args, url]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, errors="replace")
        except subprocess.TimeoutExpired as e:
            raise UserError(f"chromium did not finish within {timeout:g} s: {' '.join(cmd)}") from e


def _console(stderr: str) -> list[str]:
    return [m.group(1).strip() for line in stderr.splitlines() if (m := _CONSOLE_RE.search(line))]


def _json_list(text: str | None) -> list[str]:
    try:
        v = json.loads(text or "[]")
    except ValueError:
        return [f"unparseable: {text}"]
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


def check_in_browser(
    index_html: Path,
    screenshot: Path | None = None,
    *,
    chromium: str | None = None,
    width: int = 1280,
    max_height: int = 16000,
    budget_ms: int = 5000,
    timeout: float = 90.0,
) -> dict[str, Any]:
    """Load ``index_html`` in headless Chromium; return ``{"ok", "reasons", "images_loaded", "images_total",
    "broken", "js_errors", "console", "page_height", "screenshot", "chromium"}``.

    ``ok`` needs: the load event ran the report's check script, >= 1 image and all of them decoded
    (``naturalWidth > 0``), no uncaught JS error / console.error (page script and Chromium's console log), and
    the screenshot (when asked) written. Raises :class:`UserError` when Chromium or the file is missing.
    """
    index_html = Path(index_html).resolve()
    if not index_html.is_file():
        raise UserError(f"report not found: {index_html}")
    chromium = chromium or find_chromium()
    if not chromium:
        raise UserError("chromium not found: install it (apt-get install chromium) or set PLASTICITY_CHROMIUM")
    url = index_html.as_uri()
    budget = f"--virtual-time-budget={budget_ms}"
    # same width as the screenshot, so data-page-height is the height of the layout that gets captured
    res = _run(chromium, [budget, f"--window-size={width},800", "--dump-dom"], url, timeout)
    reasons: list[str] = []
    out: dict[str, Any] = {"chromium": chromium, "url": url}
    attrs = _body_attrs(res.stdout) or {}
    if res.returncode != 0:
        reasons.append(f"chromium exited with {res.returncode}: {res.stderr.strip()[-500:]}")
    loaded = attrs.get("data-images-loaded")
    if loaded is None or not re.fullmatch(r"\d+/\d+", loaded):
        reasons.append("the page's load check did not run (no data-images-loaded on <body>; load event not "
                       "reached within the time budget, or an old report without the check script)")
        n_ok = n_total = 0
    else:
        n_ok, n_total = (int(x) for x in loaded.split("/"))
        if n_total == 0:
            reasons.append("the page has no images")
    broken = _json_list(attrs.get("data-broken"))
    if broken or n_ok < n_total:
        reasons.append(f"{n_total - n_ok} of {n_total} images did not load: {', '.join(broken)}")
    js_errors = _json_list(attrs.get("data-js-errors"))
    console = _console(res.stderr)
    logged = [m for m in console if any(w in m for w in _ERROR_WORDS)]
    known = [e.removeprefix("console.error: ") for e in js_errors]
    errors = js_errors + [m for m in logged if not any(k in m for k in known)]
    if errors:
        reasons.append(f"{len(errors)} JS error(s): " + "; ".join(errors))
    height = int(attrs["data-page-height"]) if attrs.get("data-page-height", "").isdigit() else 4000
    out.update(images_loaded=n_ok, images_total=n_total, broken=broken, js_errors=errors, console=console,
               page_height=height, screenshot=None)
    if screenshot is not None:
        screenshot = Path(screenshot).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)
        size = f"--window-size={width},{min(max(height, 600), max_height)}"
        shot = _run(chromium, [budget, size, f"--screenshot={screenshot}"], url, timeout)
        if shot.returncode != 0 or not screenshot.is_file() or screenshot.stat().st_size == 0:
            reasons.append(f"no screenshot written (chromium exit {shot.returncode}): {shot.stderr.strip()[-500:]}")
        else:
            out["screenshot"] = str(screenshot)
    out["ok"] = not reasons
    out["reasons"] = reasons
    return out


def resolve_index(path: Path) -> Path:
    """``index.html`` for a report directory, a study directory (its ``report/``) or the file itself."""
    path = Path(path)
    for cand in (path, path / "index.html", path / "report" / "index.html"):
        if cand.is_file():
            return cand
    raise UserError(f"no report found at {path} (looked for index.html and report/index.html; "
                    "build one with: plasticity report STUDY_DIR)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plasticity.report.browser", description=__doc__.split("\n")[0])
    ap.add_argument("path", type=Path, help="report dir, study dir or index.html")
    ap.add_argument("--screenshot", type=Path, default=None, help="write a full-page PNG screenshot here")
    ap.add_argument("--width", type=int, default=1280, help="browser window width (px)")
    a = ap.parse_args(argv)
    try:
        res = check_in_browser(resolve_index(a.path), a.screenshot, width=a.width)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in res.items() if k != "console"}, indent=1))
    if res["ok"]:
        print(f"OK: {res['images_loaded']}/{res['images_total']} images loaded, no JS errors"
              + (f", screenshot {res['screenshot']}" if res["screenshot"] else ""), file=sys.stderr)
        return 0
    print("FAILED: " + " | ".join(res["reasons"]), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
