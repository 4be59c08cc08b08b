"""PDF through headless Chromium's own print engine (``--print-to-pdf``): the HTML report's A4
print styles, page numbers included, with no PDF library to install. Without Chromium, the
HTML report prints from any browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from qip_flow.errors import InvalidInput

#: Browsers whose headless mode prints PDF (Chromium's engine), tried in this order after
#: ``$QIP_BROWSER``.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome",
            "microsoft-edge", "microsoft-edge-stable", "msedge")
TIMEOUT = 120


def find_chromium() -> str | None:
    """``$QIP_BROWSER`` (a path or a command name), else the first Chromium, Chrome or Edge on
    PATH, or None."""
    named = os.environ.get("QIP_BROWSER")
    if named:
        found = shutil.which(named)
        if found is None:
            raise InvalidInput(f"QIP_BROWSER: '{named}' is not a program on PATH or an "
                               "executable file; name Chromium, Chrome or Edge")
        return found
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def headless(browser: str, profile: Path) -> list[str]:
    """Chromium run headless, quietly and offline, with a throw-away profile: the command line
    the PDF and the tests' screenshots share."""
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}"]


def html_to_pdf(html: str, out: Path) -> Path:
    """Print ``html`` to ``out`` as A4 PDF; a clear error (exit 2) when Chromium is missing or
    fails."""
    browser = find_chromium()
    if browser is None:
        raise InvalidInput("--format pdf needs Chromium, Chrome or Edge (on PATH, or named by "
                           "QIP_BROWSER; e.g. apt-get install chromium); use --format html and "
                           "print the page from a browser instead")
    with tempfile.TemporaryDirectory(prefix="qip-pdf-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        target = out.resolve()
        command = [*headless(browser, Path(tmp) / "profile"), "--no-pdf-header-footer",
                   f"--print-to-pdf={target}", page.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise InvalidInput(f"Chromium did not print the PDF within {TIMEOUT} s; use "
                               "--format html") from None
    if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InvalidInput(f"Chromium could not print {out} (exit {done.returncode}: {reason}); "
                           "use --format html")
    return out
