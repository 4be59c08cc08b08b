"""The closure of the safeguarding QIP in Debian's Chromium, against `qip serve` as a real
process (one for the module) with the SMTP sink and a real OpenID Connect provider on loopback:
a senior manager outside the safeguarding group signs in by email link and is refused closure
with each reason shown; the safeguarding lead signs in with single sign-on, lands on her work,
and closes the plan with the sign-off record. Every plan page is photographed at phone and
desktop widths (test-artifacts/web/) and checked with axe-core; hostile text never runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from notify_servers import SmtpServer, smtp_server
from web_plans import CLOSURE_DAY, GROUP, SAFEGUARDING, played_to_closure_review
from web_servers import Served, emailed_link, served

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "web"
RUTH = "ruth.mensah@riverside-care.example"
LOLA = "lola.okafor@riverside-care.example"
SIZES = {"phone": {"width": 375, "height": 812}, "desktop": {"width": 1280, "height": 900}}
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
HOSTILE = "<script>alert('meeting')</script>{{ 7*7 }}"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("Debian's chromium is not installed (apt install chromium)")
    return found


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer,
           provider: str) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("web-plans")
    oidc = folder / "oidc.toml"
    oidc.write_text(f'[oidc]\nissuer = "{provider}"\nclient_id = "qip-test"\n'
                    'label = "Sign in with Riverside"\n')
    env = {"QIP_OIDC": str(oidc), "QIP_OIDC_CLIENT_SECRET": "a-test-secret",
           "QIP_NOW": CLOSURE_DAY}
    with served(folder / "site", smtp, env=env, prepare=closure_review_of) as running:
        yield running


def closure_review_of(db_file: Path, channels: Path, url: str) -> None:
    """The served database played to the safeguarding QIP's closure review."""
    from notify_servers import make_runtime

    from qip_flow.store.db import Database

    db = Database(f"sqlite:///{db_file}")
    try:
        played_to_closure_review(make_runtime(db, channels))
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Looker:
    """Photographs a page at both widths and runs axe-core on it; a dialog (an injected
    script running) is recorded as a failure."""

    def __init__(self, browser: Any) -> None:
        self.browser, self.found, self.dialogs = browser, {}, []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def axe(self, page: Any) -> list[dict[str, Any]]:
        page.add_script_tag(path=str(REPO / "tests" / "assets" / "axe.min.js"))
        return page.evaluate(  # type: ignore[no-any-return]
            "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: tags}}))"
            ".violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,"
            " where: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))", AXE_TAGS)

    def look(self, page: Any, name: str) -> None:
        """The page as it is now, at both widths (the same session, the same document)."""
        for size, viewport in SIZES.items():
            page.set_viewport_size(viewport)
            page.screenshot(path=str(ARTIFACTS / f"{name}-{size}.png"), full_page=True)
        self.found[name] = self.axe(page)

    def watch(self, page: Any) -> Any:
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        return page

    def serious(self) -> dict[str, list[dict[str, Any]]]:
        (ARTIFACTS / "axe-plans.json").write_text(json.dumps(self.found, indent=2))
        return {name: [v for v in found if v["impact"] in ("serious", "critical")]
                for name, found in self.found.items() if found}


def email_sign_in(server: Served, page: Any, email: str, next_path: str) -> None:
    page.goto(f"{server.url}/sign-in?next={next_path}")
    before = len(server.smtp.messages)
    page.get_by_label("Your work email address").fill(email)
    page.get_by_role("button", name="Send me a sign-in link").click()
    page.wait_for_url("**/sign-in/email/sent")
    page.goto(emailed_link(server.smtp, before + 1))
    page.get_by_role("button", name="Continue").click()


def closure_record(page: Any, *, meeting: str) -> None:
    page.get_by_label("Meeting").fill(meeting)
    for box in page.locator("input[name=evidence]").all():
        box.check()
    page.get_by_label("Other evidence reviewed (optional)").fill("Incident panel outcomes")
    page.get_by_label("Residual risks").fill(
        "Agency night staff :: threshold guide in the agency induction pack")
    page.get_by_label("Where the learning is embedded").fill("Induction\nSupervision framework")


def test_closure_refused_outside_the_group_then_signed_by_a_member_after_single_sign_on(
        server: Served, browser: Any) -> None:
    import sqlite3

    looker = Looker(browser)
    # --- Ruth Mensah, senior, outside the safeguarding group: refused with each reason -----
    ruth = looker.watch(browser.new_context(viewport=SIZES["desktop"], bypass_csp=True).new_page())
    email_sign_in(server, ruth, RUTH, "/plans")
    ruth.wait_for_url(f"{server.url}/plans")
    assert SAFEGUARDING in ruth.inner_text("main")
    looker.look(ruth, "plans")
    ruth.get_by_label("State").select_option("closure_review")
    ruth.get_by_role("button", name="Show plans").click()
    ruth.wait_for_url("**/plans?*state=closure_review*")
    looker.look(ruth, "plans-filtered")
    ruth.get_by_role("link", name=SAFEGUARDING).click()
    ruth.wait_for_url(f"{server.url}/plans/{SAFEGUARDING}")
    main = ruth.inner_text("main")
    assert "Closure review" in main and "Not met" in main and "Sign-off group" in main, main[:3000]
    chart = ruth.locator("img.qip-chart").first
    chart.scroll_into_view_if_needed()
    ruth.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=chart.element_handle(), timeout=30_000)
    looker.look(ruth, "plan")
    ruth.get_by_role("link", name="Sign off closure").click()
    ruth.wait_for_url(f"{server.url}/plans/{SAFEGUARDING}/sign-off/closure")
    looker.look(ruth, "sign-off")
    closure_record(ruth, meeting=f"Quality committee {HOSTILE}")
    ruth.get_by_role("button", name="Sign as Ruth Mensah").click()
    summary = ruth.locator(".nhsuk-error-summary")
    summary.wait_for()
    said = summary.inner_text()
    assert "The closure was not signed" in said
    assert "Closure criterion not met — sign-off group" in said
    assert GROUP in said and "belongs to the required group" in said
    assert ruth.get_by_label("Meeting").input_value() == f"Quality committee {HOSTILE}"
    looker.look(ruth, "sign-off-refused")
    with sqlite3.connect(server.db_file) as conn:
        assert conn.execute("select state from plan where id = ?",
                            (SAFEGUARDING,)).fetchone()[0] == "closure_review"
    # an empty form: each missing part of the record beside its field
    ruth.goto(f"{server.url}/plans/{SAFEGUARDING}/sign-off/closure")
    ruth.get_by_role("button", name="Sign as Ruth Mensah").click()
    ruth.locator(".nhsuk-error-summary").wait_for()
    assert ruth.locator(".nhsuk-error-message").count() >= 4
    looker.look(ruth, "sign-off-incomplete")
    ruth.goto(f"{server.url}/rules")
    assert "closure.signoff-group" in ruth.inner_text("main")
    looker.look(ruth, "rules")
    ruth.context.close()

    # --- Lola Okafor, safeguarding lead, in the group: single sign-on, then closure ---------
    lola = looker.watch(browser.new_context(viewport=SIZES["desktop"], bypass_csp=True).new_page())
    lola.goto(f"{server.url}/")
    lola.wait_for_url("**/sign-in?*")
    lola.get_by_role("link", name="Sign in with Riverside").click()
    lola.locator("input[name=sub]").fill(LOLA)
    lola.get_by_role("button", name="Authorize").click()
    lola.wait_for_url(f"{server.url}/")
    assert "Lola Okafor" in lola.inner_text("main") and "single sign-on" in lola.inner_text("main")
    lola.get_by_role("link", name="Plans").click()
    lola.get_by_role("link", name=SAFEGUARDING).click()
    lola.get_by_role("link", name="Sign off closure").click()
    lola.wait_for_url(f"{server.url}/plans/{SAFEGUARDING}/sign-off/closure")
    assert "Not met" not in lola.inner_text("main")  # every criterion holds for her
    closure_record(lola, meeting="Safeguarding governance group 2026-07-28")
    lola.get_by_role("button", name="Sign as Lola Okafor").click()
    lola.wait_for_url(f"{server.url}/plans/{SAFEGUARDING}?done=closure")
    banner = lola.locator(".nhsuk-notification-banner").inner_text()
    assert "You signed the closure on 28 July 2026; the plan is now closed" in banner
    assert "Safeguarding governance group 2026-07-28" in lola.inner_text("main")
    looker.look(lola, "plan-closed")
    lola.context.close()

    with sqlite3.connect(server.db_file) as conn:
        state = conn.execute("select state from plan where id = ?", (SAFEGUARDING,)).fetchone()
        signed = conn.execute("select by_id, \"group\", meeting_reference, learning_embedded "
                              "from signoff where plan_id = ? and purpose = 'closure'",
                              (SAFEGUARDING,)).fetchall()
        via = conn.execute("select detail from auditevent where entity_id = ? and what = "
                           "'close'", (SAFEGUARDING,)).fetchone()
    assert state[0] == "closed"
    assert signed == [("lokafor", GROUP, "Safeguarding governance group 2026-07-28",
                       '["Induction", "Supervision framework"]')]
    assert json.loads(via[0])["via"] == {"door": "web", "signin": "oidc"}
    assert looker.dialogs == []
    assert not any(looker.serious().values()), looker.serious()
