"""Messages rendered for people: each email has qip_flow's own text part and an HTML part
(from Jinja2 templates) whose call to action is a button to the item's page; each Teams message
is an Adaptive Card (:mod:`qip_flow.notify.cards`). Subjects lead with the action's (or plan's)
own words; dates are written the UK way.

The link in a message is signed for its recipient when it is sent, not when it is decided, so
the stored bodies hold :data:`LINK_SLOT` where the link goes (:func:`with_link`). People's text
can never make that slot: it is taken out of every value a template prints."""

from __future__ import annotations

import html as html_lib
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import (
    Environment,
    PackageLoader,
    StrictUndefined,
    Template,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context
from markupsafe import Markup

from qip_flow import escaping
from qip_flow.notify import cards
from qip_flow.notify.dates import clock_time, local, long_date

LINK_SLOT = cards.LINK_SLOT
SUBJECT_WORDS = 60  # characters of the action's (or plan's) words that lead a subject
SUBJECT_LIMIT = 160
PREFIXES = {"reminder": "Reminder", "escalation": "Escalation", "learning": "Learning"}


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """What a template prints: the link slot never comes from people's text, and Markdown
    templates escape it (:func:`qip_flow.escaping.finalize`)."""
    if isinstance(value, str) and not isinstance(value, Markup) and LINK_SLOT in value:
        value = value.replace(LINK_SLOT, "")
    return escaping.finalize(context, value)


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("qip_flow.notify", "templates"),
        # the HTML templates are *.html.j2: escape them (people's text goes into them)
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )


@dataclass
class Rendered:
    subject: str
    text: str
    html: str
    card: str  # the Adaptive Card's content, as JSON


@cache
def _template(name: str) -> Template:
    return environment().get_template(name)


def load_templates() -> None:
    """Compile every message template now: a long-running worker pays this once per process,
    so benchmarks put it beside the other setup, outside the timer."""
    for name in environment().list_templates():
        _template(name)


def cut_words(text: str, limit: int = SUBJECT_WORDS) -> str:
    """``text`` on one line, cut at a word boundary to about ``limit`` characters."""
    words = " ".join(str(text).split())
    if len(words) <= limit:
        return words
    head = words[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.-–—")
    return (head or words[:limit]) + "…"


def subject_line(kind: str, words: str, headline: str) -> str:
    """"Escalation: Recruit 3 night staff — 20 working days overdue (due Tue 31 March)": the
    kind once, the item's own words, then what the rule says. A rules file's older headline
    that says "Escalation:" itself is not doubled."""
    headline = " ".join(headline.split())
    for prefix in ("[escalation]", "board escalation:", "escalation:"):
        if headline.lower().startswith(prefix):
            headline = headline[len(prefix):].lstrip()
    prefix = PREFIXES.get(kind, "Reminder")
    line = f"{prefix}: {cut_words(words)} — {headline}" if words else f"{prefix}: {headline}"
    return cut_words(line, SUBJECT_LIMIT)


#: every value the notice templates print, as a message without it says it (a message about a
#: plan has no action, a reminder no "already told")
NOTICE_DEFAULTS: dict[str, Any] = {
    "roles": [], "ask": "", "also": [], "action": None, "finding": "", "owner_name": "",
    "due": "", "original_due": "", "overdue": "", "slipped": "", "last_update": "",
    "request": "", "told": [], "others": [], "link": None, "link_label": "", "page_label": "",
    "colour": "#212b32"}


def render(template: str, context: dict[str, Any], *, subject: str,
           card: dict[str, Any]) -> Rendered:
    """``template`` is ``notice``, ``digest`` or ``plan_failure`` (its ``.txt.j2`` and
    ``.html.j2``); ``card`` is its Adaptive Card (:func:`qip_flow.notify.cards.card`)."""
    values = {**(NOTICE_DEFAULTS if template == "notice" else {}), **context, "subject": subject}
    if values.get("link"):
        values["link"] = Markup(LINK_SLOT)
    text = _template(f"{template}.txt.j2").render(values)
    html = _template(f"{template}.html.j2").render(values)
    return Rendered(subject, text, html, cards.dumps(card))


def with_link(text: str, html: str, link: str | None) -> tuple[str, str]:
    """The bodies as sent: the slot replaced by ``link`` (escaped for HTML); with no link
    (no base URL), the slot's lines were never written (the template said where to go)."""
    if LINK_SLOT not in text and LINK_SLOT not in html:
        return text, html
    link = link or ""
    return text.replace(LINK_SLOT, link), html.replace(LINK_SLOT, html_lib.escape(link))


def plan_failure(plan_id: str, error: str, since: datetime) -> Rendered:
    """The operators' report of a plan the tick cannot evaluate."""
    shown = f"{long_date(local(since))} at {clock_time(since)}"
    return render("plan_failure", {"plan_id": plan_id, "error": error, "since": shown},
                  subject=f"qip_flow: the tick cannot evaluate {plan_id}",
                  card=cards.card(
                      title=f"The tick cannot evaluate {plan_id} (skipped; retried on every tick)",
                      severity="attention", facts=[("Error", error), ("Since", shown)],
                      notes=["See the failing plans with: qip notifications --failing"]))
