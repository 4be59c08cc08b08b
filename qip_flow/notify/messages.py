"""Messages rendered from Jinja2 templates: email as text and HTML, Teams as a short card
(Power Automate Workflows cards carry about 1000 characters of body)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from qip_flow import escaping

CARD_LIMIT = 1000
TAIL_LIMIT = 250  # kept for the lines added at dispatch: who it is for, how to update


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("qip_flow.notify", "templates"),
        # the HTML templates are *.html.j2: escape them (people's text goes into them)
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=escaping.finalize,  # Teams cards are Markdown: people's text shown as typed
    )


@dataclass
class Rendered:
    subject: str
    text: str
    html: str
    card: str


@cache
def _template(name: str) -> Template:
    return environment().get_template(name)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def render(template: str, context: dict[str, Any]) -> Rendered:
    """``template`` is ``notice``, ``digest`` or ``plan_failure``. The card says what and why
    for everyone who reads the channel; who it is for is added when it is sent
    (:func:`channel_card`), because a shared channel is known only then."""
    subject = " ".join(_template(f"{template}.subject.j2").render(context).split())
    text = _template(f"{template}.txt.j2").render(context)
    html = _template(f"{template}.html.j2").render(context)
    card = _cut(_template(f"{template}.card.j2").render(context).strip(),
                CARD_LIMIT - TAIL_LIMIT)
    return Rendered(subject, text, html, card)


def channel_card(card: str, *, names: list[str], others: list[str], by: str,
                 action_id: str | None) -> str:
    """The card as a channel receives it: for one person, who else was told and how they
    update the action; for several people reading one channel, their names."""
    tail = _template("tail.card.j2").render(
        names=names, others=others, action_id=action_id,
        by=by if len(names) <= 1 else "YOUR-ID").strip()
    return _cut(f"{card}\n{tail}".strip() if tail else card, CARD_LIMIT)
