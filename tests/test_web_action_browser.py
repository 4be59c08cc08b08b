"""The action pages in Debian's Chromium, against `qip serve` as a real process on a free
loopback port (one server for the module) and the SMTP sink of the notification tests.

On Friday 20 March 2026 the morning tick reminds Megan Jones that her action QIP-2026-014/A3 is
due in a week, and escalates Adam Nowak's overdue A2 to his line manager, Daniel Adeyemi. Megan
opens the link in the email, records progress, signs in fully and completes the action with a
PDF; Jaya Patel, her manager, signs in by email link and verifies it; Jaya completes her own A1
and is refused when she tries to verify it; Daniel acknowledges the escalation. Every page is
photographed on a phone (375 px) and a desktop, and checked with axe-core."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from notify_servers import SmtpServer, approve_and_start, make_runtime, smtp_server
from web_servers import Served, emailed_link, served

from qip_flow.services import identity, notifications
from qip_flow.store.db import Database

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "web-actions"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
SIZES = (("phone", {"width": 375, "height": 812}), ("desktop", {"width": 1280, "height": 900}))
A1, A2, A3 = "QIP-2026-014/A1", "QIP-2026-014/A2", "QIP-2026-014/A3"
PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
       b"trailer << /Root 1 0 R >>\n%%EOF\n")
DEEP_LINK = re.compile(r"http://127\.0\.0\.1:\d+/link/[A-Za-z0-9_.%-]+")
EMAILS = {"mjones": "megan.jones@riverside-care.example",
          "jpatel": "jaya.patel@riverside-care.example",
          "dadeyemi": "daniel.adeyemi@riverside-care.example"}


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


def play_the_morning(db_file: Path, channels: Path, url: str) -> None:
    """The medication plan approved and started on 22 January, and the morning of 20 March
    played: tick and dispatch, so the reminders and escalations reach the sink."""
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("QIP_")]:
            env.delenv(name)
        env.setenv("QIP_BASE_URL", url)
        env.setenv("QIP_KEY_FILE", str(db_file.parent / "qip.key"))
        env.chdir(db_file.parent)
        rt = make_runtime(Database(f"sqlite:///{db_file}"), channels)
        approve_and_start(rt)
        rt.clock.set("2026-03-20T08:00")
        notifications.tick(rt, worker="test")
        notifications.dispatch(rt, worker="test")
        rt.db.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Served]:
    """The server on that morning's clock."""
    with served(tmp_path_factory.mktemp("web-actions"), smtp, prepare=play_the_morning,
                env={"QIP_NOW": "2026-03-20T10:00"}) as running:
        yield running


def _link_in_reminder(served: Served) -> str:
    """The link to A3 in the reminder the sink received for Megan. Until the messages carry
    their deep link (issue #12, helper webmsg), it is the link the message would carry, made
    by the same service and signed for her and that item."""
    assert served.smtp.wait_for(1, timeout=30)
    (mail,) = [m for m in served.smtp.messages if m.to == EMAILS["mjones"] and m.about == A3]
    found = DEEP_LINK.search(mail.text + mail.html)
    if found:
        return found.group(0)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("QIP_BASE_URL", served.url)
        env.setenv("QIP_KEY_FILE", str(served.db_file.parent / "qip.key"))
        db = Database(f"sqlite:///{served.db_file}")
        from qip_flow.runtime import Runtime

        link = identity.deep_link(Runtime(db=db), "mjones", A3, "reminder")
        db.dispose()
    assert link is not None
    return link


class Camera:
    """Photographs a page at each size and runs axe-core on it; keeps every finding."""

    def __init__(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.found: dict[str, list[dict[str, Any]]] = {}

    def shoot(self, page: Any, name: str) -> None:
        for size, viewport in SIZES:
            page.set_viewport_size(viewport)
            page.screenshot(path=str(ARTIFACTS / f"{name}-{size}.png"), full_page=True)
            page.add_script_tag(path=str(REPO / "tests" / "assets" / "axe.min.js"))
            self.found[f"{name}-{size}"] = page.evaluate(
                "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: "
                "tags}})).violations.map(v => ({id: v.id, impact: v.impact, "
                "nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))", AXE_TAGS)

    def serious(self) -> dict[str, list[dict[str, Any]]]:
        (ARTIFACTS / "axe.json").write_text(json.dumps(self.found, indent=2))
        return {name: bad for name, found in self.found.items()
                if (bad := [v for v in found if v["impact"] in ("serious", "critical")])}


def _sign_in_by_email(page: Any, served: Served, person: str) -> None:
    """On the sign-in page: ask for a link, open it from the sink, press Continue."""
    before = len(served.smtp.messages)
    page.get_by_label("Your work email address").fill(EMAILS[person])
    page.get_by_role("button", name="Send me a sign-in link").click()
    page.wait_for_url("**/sign-in/email/sent")
    page.goto(emailed_link(served.smtp, before + 1))
    page.get_by_role("button", name="Continue").click()


def _signed_in(browser: Any, served: Served, person: str) -> Any:
    """A new browser signed in by email link, on My work."""
    page = browser.new_context(bypass_csp=True).new_page()
    page.goto(f"{served.url}/sign-in")
    _sign_in_by_email(page, served, person)
    page.wait_for_url(f"{served.url}/")
    return page


def _complete(page: Any, action_id: str, file: Path, shows: str) -> None:
    """On the action's page: mark it complete with a file as its evidence."""
    page.get_by_label(re.compile("The evidence that it is done")).set_input_files(str(file))
    page.get_by_label("What does the file show?").fill(shows)
    page.get_by_role("button", name="Mark as complete").click()
    page.wait_for_url(f"**/actions/{action_id}?done=complete")


def _banner(page: Any) -> str:
    return page.locator(".nhsuk-notification-banner").inner_text()


def test_owner_and_manager_act_on_the_action_pages_in_chromium(server: Served,
                                                               tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    evidence = tmp_path / "competency-records.pdf"
    evidence.write_bytes(PDF)
    camera = Camera()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            # bypass_csp lets the test inject axe; the pages themselves never need it
            megan = browser.new_context(bypass_csp=True, accept_downloads=True).new_page()
            megan.goto(_link_in_reminder(server))
            megan.wait_for_url(f"{server.url}/actions/{A3}")
            assert "Reassess medicines competency" in megan.inner_text("h1")
            assert "this item only" in megan.inner_text("header")
            camera.shoot(megan, "action-from-link")

            megan.get_by_role("button", name="Save progress").click()  # nothing typed
            assert megan.locator(".nhsuk-error-summary").is_visible()
            assert "Enter what has been done" in megan.locator("#progress-note-error").inner_text()
            camera.shoot(megan, "action-invalid-form")

            megan.get_by_label("What has been done since the last note?").fill(
                "Four of the six senior support workers reassessed")
            megan.get_by_role("button", name="Save progress").click()
            megan.wait_for_url(f"**/actions/{A3}?done=progress")
            assert "Your progress note is recorded." in _banner(megan)
            camera.shoot(megan, "action-progress-saved")

            # a link's session does not complete: she signs in fully and comes back
            megan.get_by_role("link", name="sign in", exact=True).click()
            _sign_in_by_email(megan, server, "mjones")
            megan.wait_for_url(f"{server.url}/actions/{A3}")
            _complete(megan, A3, evidence, "Competency records, all six")
            assert "marked complete" in _banner(megan)
            assert "Competency records, all six" in megan.inner_text("#evidence")
            camera.shoot(megan, "action-completed")
            with megan.expect_download() as download:
                megan.get_by_role("link", name="Competency records, all six").click()
            saved = tmp_path / "downloaded.pdf"
            download.value.save_as(saved)
            assert saved.read_bytes() == PDF
            assert download.value.suggested_filename == "competency-records.pdf"
            megan.goto(f"{server.url}/")
            camera.shoot(megan, "my-work-owner")

            jaya = _signed_in(browser, server, "jpatel")
            assert A3 in jaya.inner_text("#verifications")
            camera.shoot(jaya, "my-work-manager")
            jaya.locator("#verifications").get_by_role("link", name=A3).click()
            assert jaya.locator("#verify").is_visible()
            camera.shoot(jaya, "action-to-verify")
            jaya.get_by_label("What you checked (optional)").fill("Checked all six records")
            jaya.get_by_role("button", name="Verify").click()
            jaya.wait_for_url(f"**/actions/{A3}?done=verified")
            assert "The action is verified." in _banner(jaya)
            assert "Jaya Patel" in jaya.inner_text("#facts")

            # Jaya completes her own A1; verifying it herself is refused, never offered
            jaya.goto(f"{server.url}/actions/{A1}")
            _complete(jaya, A1, evidence, "Weekly MAR audits")
            assert jaya.locator("#verify").count() == 0
            token = jaya.locator("input[name=csrf_token]").first.get_attribute("value")
            jaya.evaluate(  # the form the page never shows, sent anyway
                """([path, token]) => { const f = document.createElement('form');
                f.method = 'post'; f.action = path; const t = document.createElement('input');
                t.type = 'hidden'; t.name = 'csrf_token'; t.value = token; f.append(t);
                document.body.append(f); f.submit(); }""", [f"/actions/{A1}/verify", token])
            jaya.wait_for_url(f"**/actions/{A1}/verify")
            assert jaya.inner_text("h1") == "You cannot do this"
            assert "Jaya Patel owns QIP-2026-014/A1 and cannot verify it" in jaya.inner_text("main")
            assert "Ruth Mensah (rmensah)" in jaya.inner_text("#who-can")
            camera.shoot(jaya, "refused-verify-own-action")

            daniel = _signed_in(browser, server, "dadeyemi")
            # the escalation reads by the action's words and links to its page
            assert daniel.locator(f'#escalations a[href="/actions/{A2}"]').count() == 1
            camera.shoot(daniel, "my-work-escalations")
            daniel.goto(f"{server.url}/actions/{A2}")
            camera.shoot(daniel, "action-escalated")
            daniel.get_by_role("button", name="Acknowledge").click()
            daniel.wait_for_url(f"**/actions/{A2}?done=acknowledged")
            assert "the next escalation waits until 27 March 2026" in daniel.inner_text("main")
            camera.shoot(daniel, "action-acknowledged")
        finally:
            browser.close()
    assert not camera.serious(), camera.serious()
