"""The report opens in real headless Chromium: every figure loads, no JS errors, a full-page screenshot.

Skipped when Chromium is not installed (``apt-get install chromium``, or set ``PLASTICITY_CHROMIUM``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from plasticity.report.browser import check_in_browser, find_chromium
from plasticity.report.build import build_report
from tests.report.conftest import make_fake_study

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_report.sh"
pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="chromium not installed (apt-get install chromium, or set PLASTICITY_CHROMIUM): no headless browser check",
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-seed fake study with its report built once; tests that break it work on a copy."""
    s = make_fake_study(tmp_path_factory.mktemp("browser"), seeds=[0, 1])
    build_report(s)
    return s


def _copy(study: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(study, tmp_path / "study"))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_loads_in_chromium_with_all_figures(study: Path, tmp_path: Path) -> None:
    pngs = sorted((study / "report").glob("*.png"))
    shot = tmp_path / "shot.png"
    res = check_in_browser(study / "report" / "index.html", shot)
    assert res["ok"], res["reasons"]
    assert res["images_loaded"] == res["images_total"] == len(pngs) >= 8
    assert res["broken"] == [] and res["js_errors"] == []
    assert res["screenshot"] == str(shot)
    width, height = _png_size(shot)
    assert width == 1280 and height == res["page_height"] > 2000  # full page, all figures
    assert shot.stat().st_size > 50_000


def test_missing_figure_and_js_error_are_reported(study: Path, tmp_path: Path) -> None:
    report = _copy(study, tmp_path) / "report"
    n = len(list(report.glob("*.png")))
    (report / "fig1_val_loss_vs_wd.png").unlink()
    res = check_in_browser(report / "index.html")
    assert not res["ok"]
    assert res["broken"] == ["fig1_val_loss_vs_wd.png"]
    assert (res["images_loaded"], res["images_total"]) == (n - 1, n)
    assert res["js_errors"] == [] and res["screenshot"] is None
    assert any("did not load: fig1_val_loss_vs_wd.png" in r for r in res["reasons"])

    index = report / "index.html"
    index.write_text(index.read_text().replace("</body>", "<script>no_such_function();</script></body>"))
    res = check_in_browser(index)
    assert not res["ok"]
    assert any("no_such_function is not defined" in e for e in res["js_errors"])


def test_check_report_script(study: Path, tmp_path: Path) -> None:
    """scripts/check_report.sh: exit 0 and a screenshot for a study dir; exit 1 naming a deleted figure."""
    s = _copy(study, tmp_path)
    shot = tmp_path / "s.png"
    r = subprocess.run(["bash", str(SCRIPT), str(s), str(shot)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK:" in r.stderr and shot.stat().st_size > 0
    (s / "report" / "fig6_gaps_vs_wd.png").unlink()
    r = subprocess.run(["bash", str(SCRIPT), str(s / "report")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "FAILED" in r.stderr and "fig6_gaps_vs_wd.png" in r.stderr
    assert (s / "report" / "browser-check.png").is_file()  # default screenshot place
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "nothing")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no report" in r.stderr
