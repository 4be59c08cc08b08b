"""The web server as a real process: security headers on every response, /healthz, the CSRF
check on every form, the development sign-in only on loopback, links from messages scoped to
their item. Protocol-level tests with httpx; the browser tests are in test_web_signin.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import contents
from notify_servers import SmtpServer, qip, smtp_server
from web_servers import Served, form_token, served, sign_in_by_email

from qip_flow.runtime import Runtime
from qip_flow.services import identity
from qip_flow.store.db import Database

pytestmark = pytest.mark.slow

JAYA = "jaya.patel@riverside-care.example"
AUDIT = ("auditevent", "audithead")


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Served]:
    with served(tmp_path_factory.mktemp("web"), smtp, "--dev-login") as running:
        yield running


def _audit_whats(db_file: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(db_file) as conn:
        return [r[0] for r in conn.execute("select what from auditevent order by seq")]


def _without_audit(tables: dict[str, list[tuple[object, ...]]]) -> dict[str, list[tuple[object, ...]]]:
    return {name: rows for name, rows in tables.items() if name not in AUDIT}


def test_every_response_sends_the_security_headers(server: Served) -> None:
    with server.client() as client:
        responses = [client.get("/"), client.get("/sign-in"), client.get("/no-such-page"),
                     client.get("/static/nhsuk/nhsuk-frontend.min.css"), client.get("/healthz"),
                     client.post("/sign-out", data={}), client.get("/sign-in/dev")]
    assert [r.status_code for r in responses] == [303, 200, 404, 200, 503, 403, 200]
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-frame-options"] == "DENY"
    page = responses[1].text
    assert "<script>" not in page and " on" not in page.split("<body", 1)[1].split(">", 1)[0]
    assert 'href="#maincontent"' in page and 'id="maincontent"' in page


def test_healthz_gives_the_checks_of_qip_health(server: Served) -> None:
    answer = httpx.get(f"{server.url}/healthz")
    cli = qip("--db", str(server.db_file), "--json", "health")
    assert answer.status_code == 503 and cli.returncode == 1  # no tick has run yet
    assert answer.json()["problems"] == json.loads(cli.stdout)["problems"]
    assert answer.json()["schema"] == answer.json()["schema_expected"]


def test_a_post_without_its_form_token_is_refused_and_changes_nothing(server: Served) -> None:
    with server.client() as client:
        sign_in_by_email(server, client, JAYA)
        home = client.get("/")
        assert "Jaya Patel" in home.text
        before = contents(server.db_file)
        for data in ({}, {"csrf_token": "forged"}, {"csrf_token": form_token(home.text) + "x"}):
            refused = client.post("/sign-out", data={"everywhere": "yes", **data})
            assert refused.status_code == 403, data
            assert "did not come from qip_flow" in refused.text
        after = contents(server.db_file)
        assert _without_audit(after) == _without_audit(before)
        assert _audit_whats(server.db_file)[-3:] == ["request refused"] * 3
        assert "Jaya Patel" in client.get("/").text  # still signed in
        # with its token the same form works
        assert client.post("/sign-out", data={"everywhere": "yes",
                                              "csrf_token": form_token(home.text)}).status_code == 200
        assert client.get("/").status_code == 303


def test_a_form_token_of_one_session_is_refused_in_another(server: Served) -> None:
    with server.client() as first, server.client() as second:
        sign_in_by_email(server, first, JAYA)
        sign_in_by_email(server, second, JAYA)
        token = form_token(first.get("/").text)
        assert second.post("/sign-out", data={"csrf_token": token}).status_code == 403
        assert first.post("/sign-out", data={"csrf_token": token}).status_code == 200


def test_sign_out_everywhere_ends_every_session_of_the_person(server: Served) -> None:
    with server.client() as phone, server.client() as desk:
        sign_in_by_email(server, phone, JAYA)
        sign_in_by_email(server, desk, JAYA)
        answer = desk.post("/sign-out", data={"everywhere": "yes",
                                              "csrf_token": form_token(desk.get("/").text)})
        assert "signed out on every device" in answer.text
        assert phone.get("/").status_code == 303 and desk.get("/").status_code == 303
        assert answer.headers["set-cookie"].startswith("qip_session=\"\"") or \
            "qip_session=;" in answer.headers["set-cookie"] or "Max-Age=0" in answer.headers["set-cookie"]


def test_the_dev_sign_in_chooses_a_demo_person(server: Served) -> None:
    with server.client() as client:
        page = client.get("/sign-in/dev")
        assert "Helen Wright" in page.text and "Development only" in page.text
        signed = client.post("/sign-in/dev", data={"person": "hwright", "next": "//evil.example/",
                                                    "csrf_token": form_token(page.text)})
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Secure" not in cookie
        assert "Helen Wright" in client.get("/").text
    assert _audit_whats(server.db_file)[-1] == "signed in"


def test_dev_login_is_refused_unless_the_host_is_loopback(server: Served) -> None:
    refused = qip("--db", str(server.db_file), "serve", "--host", "0.0.0.0", "--port", "9",
                  "--dev-login", timeout=60)
    assert refused.returncode == 2
    assert "--dev-login" in refused.stderr and "loopback" in refused.stderr


def _runtime(server: Served) -> Runtime:
    return Runtime(db=Database(f"sqlite:///{server.db_file}"))


def test_a_link_from_a_message_opens_a_session_for_its_item_only(
        server: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QIP_BASE_URL", server.url)
    monkeypatch.setenv("QIP_KEY_FILE", str(server.db_file.parent / "qip.key"))
    rt = _runtime(server)
    link = identity.deep_link(rt, "jpatel", "QIP-2026-014/A2", "reminder")
    assert link is not None and link.startswith(f"{server.url}/link/")
    path = "/" + link.split("/", 3)[3]
    with server.client() as client:
        opened = client.get(path)
        assert opened.status_code == 303
        assert opened.headers["location"] == "/actions/QIP-2026-014/A2"
        home = client.get("/")
        assert "QIP-2026-014/A2 only" in home.text and "a link in a message" in home.text
    with server.client() as client:  # a link is tampered with or forged
        body, mac = path.removeprefix("/link/").split(".")
        for bad in (f"/link/{body}.{mac[:-2]}AA", f"/link/{body[:-2]}AA.{mac}", "/link/x.y",
                    "/link/" + identity.sign(b"k" * 32, "deep-link", {"p": "jpatel", "i": "x",
                                                                     "x": 4102444800})):
            answer = client.get(bad)
            assert answer.status_code == 403 and "not valid" in answer.text, bad
            assert "qip_session" not in answer.headers.get("set-cookie", "")
        # an email sign-in link's signature is not a message link's
        key = identity.key_of(rt)
        other = identity.sign(key, "email-link", {"p": "jpatel", "i": "QIP-2026-014", "x": 4102444800})
        assert client.get(f"/link/{other}").status_code == 403
    monkeypatch.setenv("QIP_LINK_DAYS", "0")
    with pytest.raises(Exception, match="QIP_LINK_DAYS"):
        identity.deep_link(rt, "jpatel", "QIP-2026-014/A2", "reminder")
    rt.db.dispose()
