"""Messages carry people's own words (action descriptions, names): the HTML email escapes
them, the text part shows them as written, the link to the item's page is put in only when the
message is sent (and never where people's text put something that looks like it), subjects say
their kind once and lead with the action's words, and dates are written the UK way."""

import shutil
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qip_flow.notify import cards
from qip_flow.notify.dates import long_date, short_date, uk_dates
from qip_flow.notify.messages import LINK_SLOT, cut_words, render, subject_line, with_link

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
AXE = REPO / "tests" / "assets" / "axe.min.js"
HOSTILE = '<script>alert("x")</script> {{ 7*7 }} {% raw %} **bold** [x](http://evil.example)'


def context(description: str, **extra: Any) -> dict[str, Any]:
    action = SimpleNamespace(id="QIP-1/A1", ref="A1", description=description)
    values: dict[str, Any] = {
        "person": SimpleNamespace(name="Ann <Ops>", id="ann"), "kind": "escalation",
        "sentence": "Escalation: retrain staff — 5 working days overdue", "roles": ["its owner"],
        "ask": "Chase <b>now</b>", "also": [], "plan": SimpleNamespace(id="QIP-1", title="Plan & more"),
        "service": "Maple House", "action": action, "finding": "", "owner_name": "Ann",
        "due": "Friday 13 March 2026", "original_due": "", "overdue": "5 working days overdue",
        "slipped": "", "last_update": "", "request": "", "why": "rule", "rule_id": "escalate.x",
        "told": [], "others": [], "rules_version": "v1", "link": "https://q.example/actions/x",
        "link_label": "Open action A1", "page_label": "action QIP-1/A1", "colour": "#d5281b"}
    return {**values, **extra}


def rendered(description: str, **extra: Any) -> Any:
    return render("notice", context(description, **extra), subject="Escalation: x",
                  card=cards.card(title="x", severity="attention"))


def test_html_email_escapes_what_people_wrote_and_the_text_part_keeps_it() -> None:
    message = rendered(HOSTILE)
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html
    assert "Ann &lt;Ops&gt;" in message.html and "Plan &amp; more" in message.html
    assert "Chase &lt;b&gt;now&lt;/b&gt;" in message.html
    assert "{{ 7*7 }}" in message.html and "49" not in message.html  # Jinja is not run twice
    assert 'href="http://evil.example"' not in message.html
    assert HOSTILE in message.text  # plain text is sent as text, unchanged


def test_the_link_goes_in_when_sent_and_people_cannot_place_it() -> None:
    """The stored bodies hold a slot for the link; a description that contains the slot's
    text is printed without it, so only the template's own places get the signed link."""
    message = rendered(f"retrain {LINK_SLOT} staff")
    assert message.text.count(LINK_SLOT) == 1  # "Open action A1: …", nothing from people
    text, html = with_link(message.text, message.html, "https://q.example/link/a&b")
    assert "retrain  staff" in text and LINK_SLOT not in text + html
    assert text.count("https://q.example/link/a&b") == 1
    assert 'href="https://q.example/link/a&amp;b"' in html
    assert html.count("https://q.example/link/a&amp;b") == 3  # button, and the copyable address

    without = rendered("retrain staff", link=None)
    assert LINK_SLOT not in without.text + without.html
    assert "Open action QIP-1/A1 in qip_flow" in without.text
    assert with_link(without.text, without.html, None) == (without.text, without.html)


def test_the_html_button_is_accessible_and_the_page_says_its_language() -> None:
    html = rendered("retrain staff").html
    assert '<html lang="en-GB">' in html and 'role="article"' in html
    assert 'role="presentation"' in html  # the button's layout table is not read as data
    assert '<th scope="row"' in html  # the facts are a real table with row headers
    assert ">Open action A1</a>" in html and "background: #005eb8" in html


def test_subjects_say_their_kind_once_and_lead_with_the_actions_words() -> None:
    assert subject_line("escalation", "Recruit 3 night staff", "20 working days overdue "
                        "(due Tue 31 March)") == \
        "Escalation: Recruit 3 night staff — 20 working days overdue (due Tue 31 March)"
    for headline in ("Escalation: A2 is late", "[ESCALATION] Escalation: A2 is late",
                     "Board escalation: A2 is late"):
        assert subject_line("escalation", "Recruit", headline) == "Escalation: Recruit — A2 is late"
    assert subject_line("reminder", "", "due today") == "Reminder: due today"
    long = "Retrain the night team and bank staff group (14 named staff) in medicines"
    assert cut_words(long) == "Retrain the night team and bank staff group (14 named…"
    assert len(subject_line("learning", "x", "y " * 200)) <= 160


def test_dates_are_written_the_uk_way() -> None:
    today = date(2026, 3, 1)
    assert short_date("2026-03-31", today) == "Tue 31 March"
    assert short_date(date(2027, 1, 5), today) == "Tue 5 January 2027"
    assert long_date(datetime(2026, 3, 13, 9, 0)) == "Friday 13 March 2026"
    assert uk_dates("due 2026-03-31, not 2026-13-45", today) == "due Tue 31 March, not 2026-13-45"


def test_the_email_reads_well_in_chromium_with_no_serious_accessibility_finding(
        tmp_path: Path) -> None:
    """The escalation email and a digest, opened in Chromium on a 320 px phone and on a
    desktop: axe-core finds nothing serious or critical (WCAG 2.2 AA); screenshots are kept."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    message = rendered("Retrain the night team")
    pages = {"escalation": with_link(message.text, message.html, "https://q.example/link/t")[1],
             "digest": render("digest", {
                 "person": SimpleNamespace(name="Helen Wright"), "intro": "The Board's week.",
                 "week": "week to Monday 20 April 2026", "home": "https://q.example/",
                 "sections": [SimpleNamespace(title="Escalations for you to decide on", items=[
                     SimpleNamespace(title="Escalation: Recruit — 20 working days overdue",
                                     detail="Decide at Board level", url="https://q.example/a")])]},
                 subject="Board weekly digest", card=cards.card(title="x", severity="emphasis")
             ).html}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    found = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            for name, html in pages.items():
                path = tmp_path / f"{name}.html"
                path.write_text(html, encoding="utf-8")
                for size, width in (("phone", 320), ("desktop", 800)):
                    page = browser.new_page(viewport={"width": width, "height": 900})
                    page.goto(path.as_uri())
                    page.screenshot(path=str(ARTIFACTS / f"email-{name}-{size}.png"),
                                    full_page=True)
                    assert page.evaluate("document.documentElement.scrollWidth") <= width
                    page.add_script_tag(path=str(AXE))
                    found[f"{name}-{size}"] = page.evaluate(
                        "async () => (await axe.run(document, {runOnly: {type: 'tag', values: "
                        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})).violations"
                        ".map(v => ({id: v.id, impact: v.impact}))")
                    page.close()
        finally:
            browser.close()
    serious = {k: [v for v in found[k] if v["impact"] in ("serious", "critical")] for k in found}
    assert serious == {k: [] for k in found}
