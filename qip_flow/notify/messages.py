"""Messages rendered from Jinja2 templates: email as text and HTML, Teams as a short card
(Power Automate Workflows cards carry about 1000 characters of body)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from qip_flow import escaping

CARD_LIMIT = 1000


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


def render(template: str, context: dict[str, Any]) -> Rendered:
    """``template`` is ``notice`` or ``digest``."""
    subject = " ".join(_template(f"{template}.subject.j2").render(context).split())
    text = _template(f"{template}.txt.j2").render(context)
    html = _template(f"{template}.html.j2").render(context)
    card = _template(f"{template}.card.j2").render(context).strip()
    if len(card) > CARD_LIMIT:
        card = card[: CARD_LIMIT - 1].rstrip() + "…"
    return Rendered(subject, text, html, card)
