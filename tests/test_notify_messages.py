"""Messages carry people's own words (action descriptions, names): the HTML email escapes
them, and the Teams card stays within its limit."""

from types import SimpleNamespace

from qip_flow.notify.messages import CARD_LIMIT, render


def context(text: str) -> dict[str, object]:
    action = SimpleNamespace(id="QIP-1/A1", ref="A1", description=text, due="2026-03-13",
                             baseline_due="2026-03-13")
    return {"person": SimpleNamespace(name="Ann <Ops>", id="ann"), "headline": "Due soon",
            "kind": "reminder", "plan": SimpleNamespace(id="QIP-1", title="Plan & more"),
            "service": "Maple House", "action": action, "finding": None, "owner_name": "Ann",
            "why": "rule", "rule_id": "remind.due-7", "others": [], "rules_version": "v1"}


def test_html_email_escapes_what_people_wrote() -> None:
    message = render("notice", context('<script>alert("x")</script> retrain staff'))
    assert "<script>" not in message.html
    assert "&lt;script&gt;" in message.html
    assert "Ann &lt;Ops&gt;" in message.html and "Plan &amp; more" in message.html
    assert "<script>" in message.text  # plain text is sent as text, unchanged


def test_the_teams_card_stays_within_its_limit() -> None:
    message = render("notice", context("retrain staff " * 400))
    assert len(message.card) <= CARD_LIMIT
