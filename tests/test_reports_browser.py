"""The HTML reports as a board member sees them: opened in headless Chromium, with a
screenshot of each kept in ``test-artifacts/`` at the repository root, the charts present in the
DOM the browser built, and the PDF printed through the same browser.

Without Chromium these tests skip, saying so — unless ``QIP_REQUIRE_CHROMIUM`` is set (CI sets
it), when they fail."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from test_reports import NOW, DemoReports, build_demo_reports, runtime

from qip_flow import reports
from qip_flow.reports.pdf import find_chromium, headless

pytestmark = pytest.mark.xdist_group("demo-reports")  # the demo test_reports plays
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
A4_AT_150_DPI = "1240,1754"
PAGES = {"board-pack": "reports/board-pack.html", "closure-QIP-2026-014": "reports/closure-QIP-2026-014.html",
         "closure-QIP-2026-021": "reports/closure-QIP-2026-021.html",
         "closure-QIP-2026-017": "plan-017.html", "commissioner-pack": "commissioner.html"}


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        reason = "Chromium is not installed (chromium or chromium-browser on PATH)"
        if os.environ.get("QIP_REQUIRE_CHROMIUM"):
            pytest.fail(f"QIP_REQUIRE_CHROMIUM is set but {reason}")
        pytest.skip(f"{reason}; apt-get install chromium to run the browser tests")
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoReports:
    return build_demo_reports(tmp_path_factory.getbasetemp())


def browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*headless(chromium, profile), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", list(PAGES))
def test_report_opens_in_chromium_with_its_charts(chromium: str, demo: DemoReports, name: str,
                                                  tmp_path: Path) -> None:
    page = demo.folder / PAGES[name]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    done = browse(chromium, tmp_path / "profile", f"--screenshot={shot}",
                  f"--window-size={A4_AT_150_DPI}", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 40_000, "a blank page compresses to almost nothing"

    dom = browse(chromium, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    source = page.read_text()
    charts = source.count("<svg")
    assert charts >= 1
    assert dom.stdout.count("<svg") == charts, "every chart is in the DOM the browser built"
    assert len(re.findall(r'<svg[^>]*class="chart"', dom.stdout)) == charts
    # the figures the page states survive into the rendered DOM
    for figure in re.findall(r'data-metric="([^"]+)"[^>]*><b>([^<]*)</b>', source):
        assert f'data-metric="{figure[0]}"' in dom.stdout and f"<b>{figure[1]}</b>" in dom.stdout


def test_board_pack_prints_to_a4_pdf(chromium: str, demo: DemoReports) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "board-pack.pdf"
    out.unlink(missing_ok=True)
    rt = runtime(demo.db, NOW)
    reports.write("board", reports.gather(rt, "board"), "pdf", out)
    rt.db.dispose()
    body = out.read_bytes()
    assert body.startswith(b"%PDF-")
    pages = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", body)
    assert pages, "the PDF has pages"
    width, height = (float(v) for v in pages[0])
    assert (round(width), round(height)) in {(595, 842), (596, 842)}, "A4 portrait"


def test_board_pack_shows_xmr_charts_with_their_icons_in_chromium(
        chromium: str, demo: DemoReports, tmp_path: Path) -> None:
    """Each indicator of the board pack is an XmR chart as Chromium builds it: mean and
    process limits written on it, the variation and assurance icons with their words, and a
    text alternative that says the finding. The screenshot (test-artifacts/board-pack-xmr.png)
    shows the whole pack, charts included, for a person to look at."""
    page = demo.folder / PAGES["board-pack"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "board-pack-xmr.png"
    shot.unlink(missing_ok=True)
    done = browse(chromium, tmp_path / "profile", f"--screenshot={shot}",
                  "--window-size=1240,9000", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 100_000
    dom = browse(chromium, tmp_path / "profile", "--dump-dom", page.as_uri()).stdout
    figures = re.findall(r'<figure class="chart" data-indicator="([^"]+)">(.*?)</figure>', dom,
                         re.S)
    assert len(figures) == 3
    for indicator, figure in figures:
        alt = re.search(r'<svg[^>]*role="img"[^>]*aria-label="([^"]+)"', figure)
        assert alt and alt[1].startswith("XmR chart of "), indicator
        assert "process limits" in alt[1] or "too few points" in alt[1], indicator
    care = dict(figures)["QIP-2026-009/plan-audit"]
    for words in ("UPL 112%", "mean 87.4%", "LPL 62.8%", ">Common cause<", ">Hit and miss<"):
        assert words in care, words
