"""Outbound webhooks through the outbox: a receiver on loopback that fails, then answers 200,
gets each event exactly once (by its webhook-id), every signature verifies (Standard Webhooks,
checked here from the specification), and the events are visible as notifications. Subscribers
come from the channels file and from an administrator through the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_client import Hook, client, receiver, session_of, verify
from conftest import EXAMPLES
from sqlmodel import select

from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading, notifications
from qip_flow.store.models import Delivery, Notification

PLAN = "QIP-2026-014"
FILE_SECRET = "a-long-shared-secret-for-the-bi-feed"


def test_a_failing_receiver_gets_each_event_once_and_every_signature_verifies(
        runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QIP_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("QIP_BI_SECRET", FILE_SECRET)
    with receiver() as hooks:
        channels = tmp_path / "channels.yaml"
        channels.write_text("version: 1\nwebhooks:\n"
                            f"  - name: bi-feed\n    url: {hooks.url}?from=file\n"
                            "    secret: ${QIP_BI_SECRET}\n"
                            "    events: [plan.state_changed, plan.rag_changed]\n",
                            encoding="utf-8")
        runtime.channels_file = str(channels)
        runtime.clock.set("2026-01-15T09:00")
        loading.load_files(runtime, [EXAMPLES], actor="test")
        web = client(runtime)
        csrf = session_of(runtime, web, "cevans")  # an administrator, just signed in
        made = web.post("/api/v1/webhooks", headers=csrf, json={
            "name": "care-record", "url": f"{hooks.url}?from=api",
            "plans": ["service:Maple House"]})
        assert made.status_code == 201, made.text
        api_secret = made.json()["secret"]
        assert api_secret.startswith("whsec_")
        listed = web.get("/api/v1/webhooks").json()["items"]
        assert {w["name"]: w["source"] for w in listed} == {"bi-feed": "channels file",
                                                           "care-record": "api"}

        runtime.clock.set("2026-01-22T10:00")
        lifecycle.sign_off(runtime, PLAN, "approval", by="dadeyemi")
        lifecycle.fire_event(runtime, PLAN, "start", by="jpatel")
        hooks.answer(500, 503)  # the first two tries fail
        notifications.dispatch(runtime, worker="test")
        assert len(hooks.hooks) >= 3 and hooks.hooks[0].status == 500
        runtime.clock.set("2026-01-22T10:03")  # after the first back-off
        notifications.dispatch(runtime, worker="test")
        runtime.clock.set("2026-01-22T11:00")
        notifications.dispatch(runtime, worker="test")
        notifications.dispatch(runtime, worker="test")  # nothing left to send

    delivered = hooks.delivered()
    by_receiver: dict[str, list[str]] = {"file": [], "api": []}
    # each subscriber got each event exactly once, signed with its own secret
    with runtime.db.read() as session:
        events = session.exec(select(Notification).where(Notification.kind == "webhook")).all()
        deliveries = session.exec(select(Delivery).where(
            Delivery.notification_id.in_([n.id for n in events]))).all()  # type: ignore[union-attr]
    assert {n.rule_id for n in events} >= {"plan.state_changed", "plan.rag_changed"}
    assert all(n.state == "sent" for n in events)
    assert {d.channel for d in deliveries} == {"webhook:bi-feed", "webhook:care-record"}
    assert all(d.state == "sent" for d in deliveries)
    ids = {n.detail["webhook_id"] for n in events}
    for hook in delivered:
        which = _from(hook)
        by_receiver[which].append(hook.headers["webhook-id"])
        assert verify(FILE_SECRET if which == "file" else api_secret, hook), hook.headers
        assert not verify(api_secret if which == "file" else FILE_SECRET, hook)
    assert sorted(by_receiver["file"]) == sorted(ids) == sorted(by_receiver["api"])
    retried = [h for h in hooks.hooks if h.status >= 500]
    assert {h.headers["webhook-id"] for h in retried} <= ids  # a retry keeps its id
    states = [h.event["data"]["to"] for h in delivered
              if h.event["type"] == "plan.state_changed" and _from(h) == "file"]
    assert sorted(states) == ["approved", "in_progress"]
    assert all(h.event["data"]["plan"] == PLAN for h in delivered)
    with runtime.db.read() as session:  # what `qip notifications` lists
        shown = notifications.list_notifications(session, limit=50)
    webhook_rows = [n for n in shown if n["kind"] == "webhook"]
    assert webhook_rows and all(n["state"] == "sent" for n in webhook_rows)
    assert any(c["attempts"] == 2 for n in webhook_rows for c in n["channels"])


def _from(hook: Hook) -> str:
    return "file" if "from=file" in hook.path else "api"
