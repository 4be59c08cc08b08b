"""Microsoft Teams messages as real Adaptive Cards (version 1.4), built here rather than by
Apprise's Markdown conversion: a coloured title by severity, a FactSet of what, who and when,
the ask, and an ``Action.OpenUrl`` button to the item's page.

People's words are inert in a card: Markdown specials are backslash-escaped and line breaks
folded (:func:`qip_flow.escaping.markdown_text`), and the Adaptive Card functions
``{{DATE(…)}}`` / ``{{TIME(…)}}`` and template expressions ``${…}`` are broken with a zero-width
space, so a description can neither format, link nor run anything. Every value is cut to a
length, so a card stays far below Teams' 28 KB whatever people wrote."""

from __future__ import annotations

import json
from typing import Any

from qip_flow import escaping

VERSION = "1.4"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
#: the URL of the card's button until the message is sent (a signed link is made per send)
LINK_SLOT = "https://link.qip-flow.invalid/"
#: severity → (container style, title colour)
STYLES = {"attention": ("attention", "Attention"), "warning": ("warning", "Warning"),
          "accent": ("accent", "Accent"), "good": ("good", "Good"),
          "emphasis": ("emphasis", "Default")}
TITLE_LIMIT, VALUE_LIMIT, TEXT_LIMIT = 200, 300, 600
ZERO_WIDTH = "\u200b"


def inert(value: Any, limit: int = VALUE_LIMIT) -> str:
    """People's text as literal card text: cut to ``limit``, Markdown escaped, card
    functions and template expressions broken."""
    text = " ".join(str("" if value is None else value).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = str(escaping.markdown_text(text))
    return text.replace("{{", "{" + ZERO_WIDTH + "{").replace("${", "$" + ZERO_WIDTH + "{") \
        .replace("}}", "}" + ZERO_WIDTH + "}")


def card(*, title: str, severity: str, lead: str = "", facts: list[tuple[str, Any]] = (),
         notes: list[str] = (), link_label: str = "", items: list[str] = (),
         url: str | None = None) -> dict[str, Any]:
    """An Adaptive Card's content. ``title``, ``lead``, ``notes``, ``items`` and the facts'
    values are people's text (made inert here); fact titles and ``link_label`` are ours. The
    button opens ``url``, or the link made when the card is sent (:func:`for_channel`)."""
    style, colour = STYLES.get(severity, STYLES["emphasis"])
    body: list[dict[str, Any]] = [{
        "type": "Container", "style": style, "bleed": True,
        "items": [{"type": "TextBlock", "id": "title", "text": inert(title, TITLE_LIMIT),
                   "wrap": True, "weight": "Bolder", "size": "Medium", "color": colour}]}]
    if lead:
        body.append({"type": "TextBlock", "id": "lead", "text": inert(lead, TEXT_LIMIT),
                     "wrap": True, "weight": "Bolder"})
    shown = [{"title": name, "value": inert(value)} for name, value in facts
             if value not in (None, "")]
    if shown:
        body.append({"type": "FactSet", "id": "facts", "facts": shown})
    for item in items:
        body.append({"type": "TextBlock", "text": "• " + inert(item, VALUE_LIMIT), "wrap": True,
                     "spacing": "Small"})
    for note in notes:
        body.append({"type": "TextBlock", "text": inert(note, TEXT_LIMIT), "wrap": True,
                     "isSubtle": True, "size": "Small"})
    content: dict[str, Any] = {"$schema": SCHEMA, "type": "AdaptiveCard", "version": VERSION,
                               "body": body, "msteams": {"width": "Full"}}
    if link_label:
        content["actions"] = [{"type": "Action.OpenUrl", "title": link_label,
                               "url": url or LINK_SLOT}]
    return content


def dumps(content: dict[str, Any]) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


def for_channel(stored: str, *, link: str | None, names: list[str],
                others: list[str]) -> str:
    """The message a Teams channel receives (the Workflows trigger's payload): the stored
    card with who it is for — several people reading one channel are named — and its button
    pointing at ``link`` (removed when there is none). A card stored before cards were
    Adaptive Cards of our own (Markdown text) is carried in one text block."""
    try:
        content = json.loads(stored)
    except ValueError:
        content = None
    if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
        content = {"$schema": SCHEMA, "type": "AdaptiveCard", "version": VERSION,
                   "body": [{"type": "TextBlock", "text": stored, "wrap": True}],
                   "msteams": {"width": "Full"}}
    body = list(content.get("body", []))
    if len(names) > 1:
        body.append({"type": "TextBlock", "id": "for", "wrap": True, "isSubtle": True,
                     "size": "Small", "text": "For: " + inert(", ".join(names), TEXT_LIMIT)})
    elif others:
        body.append({"type": "TextBlock", "id": "for", "wrap": True, "isSubtle": True,
                     "size": "Small", "text": "Also told: " + inert(", ".join(others), TEXT_LIMIT)})
    content = {**content, "body": body}
    actions = [dict(a) for a in content.get("actions", [])]
    for action in actions:
        if action.get("url") == LINK_SLOT:
            action["url"] = link
    actions = [a for a in actions if a.get("url")]
    if actions:
        content["actions"] = actions
    else:
        content.pop("actions", None)
    return json.dumps({"type": "message", "attachments": [{
        "contentType": CONTENT_TYPE, "contentUrl": None, "content": content}]},
        ensure_ascii=False)
