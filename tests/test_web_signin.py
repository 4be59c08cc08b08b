"""Signing in to the web pages, against `qip serve` as a real process and the SMTP sink: an
email link signs in once; reused, expired, tampered or forged links are refused; an unknown
address gets the same page; sessions end when idle and at their absolute limit; single sign-on
against a real OpenID Connect provider on loopback; and, in Debian's Chromium, the email sign-in
with screenshots and axe-core."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from notify_servers import SmtpServer, smtp_server
from web_servers import Served, ask_for_link, emailed_link, served, sign_in_by_email, use_link

from qip_flow.services import identity

pytestmark = pytest.mark.slow

JAYA = "jaya.patel@riverside-care.example"
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "web"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("web"), smtp) as running:
        yield running


def _sessions(db_file: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db_file) as conn:
        return conn.execute("select person_id, method from websession order by id").fetchall()


def _audit(db_file: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db_file) as conn:
        return conn.execute("select what, reason, detail from auditevent order by seq").fetchall()


def test_an_email_link_signs_in_once(server: Served) -> None:
    with server.client() as client:
        before = len(server.smtp.messages)
        sent = ask_for_link(client, "  Jaya.PATEL@riverside-care.example ")
        assert sent.headers["location"] == "/sign-in/email/sent"
        link = emailed_link(server.smtp, before + 1)
        mail = server.smtp.messages[before]
        assert mail.to == JAYA and "works once" in mail.text
        scanner = client.get("/" + link.split("/", 3)[3])  # opening the page signs no one in
        assert scanner.status_code == 200 and "qip_session" not in scanner.headers.get("set-cookie", "")
        signed = use_link(client, link)
        assert signed.status_code == 303 and "qip_session=" in signed.headers["set-cookie"]
        assert "Jaya Patel" in client.get("/").text and "an email link" in client.get("/").text
    with server.client() as other:
        again = use_link(other, link)
        assert again.status_code == 403 and "not valid" in again.text
        assert other.get("/").status_code == 303
    events = _audit(server.db_file)
    assert (events[-2][0], events[-1][0]) == ("signed in", "sign-in failed")
    assert "used again" in events[-1][1]
    token = link.rsplit("/", 1)[1]
    for what, reason, detail in events:  # no token or link is ever written down
        assert token not in what + reason + detail and token[:20] not in detail


def test_tampered_forged_and_expired_email_links_are_refused(server: Served,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with server.client() as client:
        before = len(server.smtp.messages)
        ask_for_link(client, JAYA)
        link = emailed_link(server.smtp, before + 1)
        base, token = link.rsplit("/", 1)
        body, mac = token.split(".")
        payload = json.loads(identity._unb64(body))
        forged_body = identity._b64(json.dumps({**payload, "p": "hwright"}).encode())
        key = (server.db_file.parent / "qip.key").read_text().strip().encode()
        expired = identity.sign(key, "email-link", {**payload, "x": int(time.time()) - 1})
        wrong_key = identity.sign(b"x" * 40, "email-link", payload)
        deep = identity.sign(key, "deep-link", payload)  # another purpose's signature
        for bad in (f"{forged_body}.{mac}", f"{body}.{mac[:-3]}abc", expired, wrong_key, deep,
                    "nonsense", "a.b"):
            answer = use_link(client, f"{base}/{bad}")
            assert answer.status_code == 403 and "not valid" in answer.text, bad
        assert client.get("/").status_code == 303
        assert use_link(client, link).status_code == 303  # the real one still works once


def test_an_unknown_email_gets_the_same_page_and_no_mail(server: Served) -> None:
    with server.client() as client:
        known = ask_for_link(client, JAYA)
        emailed_link(server.smtp, len(server.smtp.messages))
        count = len(server.smtp.messages)
        unknown = ask_for_link(client, "nobody@riverside-care.example")
        assert (known.status_code, known.headers["location"]) == \
            (unknown.status_code, unknown.headers["location"])
        page = client.get(unknown.headers["location"])
        assert "If the address belongs" in page.text
        time.sleep(1)
        assert len(server.smtp.messages) == count
    assert _audit(server.db_file)[-1][0] == "sign-in failed"


def test_sessions_end_when_idle_and_at_their_absolute_limit(tmp_path: Path, smtp: SmtpServer) -> None:
    env = {"QIP_SESSION_IDLE": "2s", "QIP_SESSION_MAX": "5s"}
    with served(tmp_path, smtp, env=env) as short:
        with short.client() as idle:
            sign_in_by_email(short, idle, JAYA)
            assert idle.get("/").status_code == 200
            time.sleep(2.5)
            assert idle.get("/").status_code == 303
        with short.client() as busy:
            sign_in_by_email(short, busy, JAYA)
            started = time.monotonic()
            while time.monotonic() - started < 3:  # past the idle limit, never idle 2 s
                assert busy.get("/").status_code == 200
                time.sleep(0.5)
            time.sleep(max(0.0, 5.5 - (time.monotonic() - started)))
            assert busy.get("/").status_code == 303


def test_without_dev_login_there_is_no_dev_sign_in(server: Served) -> None:
    """This module's server runs without --dev-login (test_web_server's has it)."""
    with server.client() as client:
        assert client.get("/sign-in/dev").status_code == 404
        assert "demo person" not in client.get("/sign-in").text


def test_a_deep_link_session_is_not_a_recent_full_sign_in() -> None:
    from qip_flow.store.models import Person

    now = datetime.now(UTC)
    person = Person(id="p", name="P")
    full = identity.SignIn(1, "h", person, "oidc", None, now, now - timedelta(minutes=10))
    stale = identity.SignIn(1, "h", person, "oidc", None, now, now - timedelta(minutes=16))
    link = identity.SignIn(1, "h", person, "deep-link", "QIP-1/A1", now, None)
    assert full.recent(now) and not stale.recent(now) and not link.recent(now)


def test_single_sign_on_with_a_real_openid_provider(tmp_path: Path, smtp: SmtpServer) -> None:
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread() as provider:
        issuer = f"http://localhost:{provider.server_port}"
        oidc = tmp_path / "oidc.toml"
        oidc.write_text(f'[oidc]\nissuer = "{issuer}"\nclient_id = "qip-test"\n'
                        'label = "Sign in with Riverside"\n')
        env = {"QIP_OIDC": str(oidc), "QIP_OIDC_CLIENT_SECRET": "a-test-secret"}
        with served(tmp_path / "site", smtp, env=env) as site, site.client() as client:
            assert "Sign in with Riverside" in client.get("/sign-in").text
            start = client.get("/sign-in/oidc?next=/")
            assert start.status_code == 302 and start.headers["location"].startswith(issuer)
            import httpx

            with httpx.Client(follow_redirects=False, timeout=30) as browser:
                consent = browser.post(start.headers["location"], data={"sub": JAYA.upper()})
            assert consent.status_code == 302, consent.text
            callback = consent.headers["location"]
            assert callback.startswith(f"{site.url}/sign-in/oidc/callback")
            signed = client.get(callback.removeprefix(site.url))
            assert signed.status_code == 303, signed.text
            assert "Jaya Patel" in client.get("/").text and "single sign-on" in client.get("/").text
            assert _sessions(site.db_file)[-1] == ("jpatel", "oidc")
            # the same callback again (a replayed code and state) signs no one in
            with site.client() as replay:
                assert replay.get(callback.removeprefix(site.url)).status_code == 403
            # someone the organisation file does not know
            with site.client() as stranger:
                start = stranger.get("/sign-in/oidc")
                with httpx.Client(follow_redirects=False, timeout=30) as browser:
                    consent = browser.post(start.headers["location"],
                                           data={"sub": "stranger@elsewhere.example"})
                refused = stranger.get(consent.headers["location"].removeprefix(site.url))
                assert refused.status_code == 403 and "no one in the organisation" in refused.text
                assert stranger.get("/").status_code == 303


def test_a_secret_in_the_oidc_file_is_refused(tmp_path: Path, smtp: SmtpServer) -> None:
    from notify_servers import qip
    from web_servers import prepare_database

    db_file, _ = prepare_database(tmp_path, smtp)
    oidc = tmp_path / "oidc.toml"
    oidc.write_text('[oidc]\nissuer = "https://login.example"\nclient_id = "x"\n'
                    'client_secret = "oops"\n')
    refused = qip("--db", str(db_file), "serve", "--port", "9", env={"QIP_OIDC": str(oidc)})
    assert refused.returncode == 2
    assert "client_secret" in refused.stderr and "oops" not in refused.stderr


AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def _axe(page: object) -> list[dict[str, object]]:
    page.add_script_tag(path=str(REPO / "tests" / "assets" / "axe.min.js"))  # type: ignore[attr-defined]
    return page.evaluate(  # type: ignore[attr-defined, no-any-return]
        "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: tags}}))"
        ".violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))", AXE_TAGS)


def test_in_chromium_an_email_link_signs_in_with_screenshots_and_no_serious_axe_findings(
        server: Served) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[dict[str, object]]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for size, viewport in (("phone", {"width": 390, "height": 844}),
                                   ("desktop", {"width": 1280, "height": 900})):
                # bypass_csp lets the test inject axe; the pages themselves never need it
                context = browser.new_context(viewport=viewport, bypass_csp=True)
                page = context.new_page()
                page.goto(f"{server.url}/sign-in")
                page.screenshot(path=str(ARTIFACTS / f"sign-in-{size}.png"), full_page=True)
                found[f"sign-in-{size}"] = _axe(page)
                before = len(server.smtp.messages)
                page.get_by_label("Your work email address").fill(JAYA)
                page.get_by_role("button", name="Send me a sign-in link").click()
                page.wait_for_url("**/sign-in/email/sent")
                page.screenshot(path=str(ARTIFACTS / f"email-sent-{size}.png"), full_page=True)
                found[f"email-sent-{size}"] = _axe(page)
                page.goto(emailed_link(server.smtp, before + 1))
                page.get_by_role("button", name="Continue").click()
                page.wait_for_url(f"{server.url}/")
                assert "Jaya Patel" in page.inner_text("main")
                page.screenshot(path=str(ARTIFACTS / f"home-{size}.png"), full_page=True)
                found[f"home-{size}"] = _axe(page)
                context.close()
        finally:
            browser.close()
    (ARTIFACTS / "axe.json").write_text(json.dumps(found, indent=2))
    serious = {name: [v for v in violations if v["impact"] in ("serious", "critical")]
               for name, violations in found.items()}
    assert not any(serious.values()), serious
