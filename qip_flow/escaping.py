"""People's text in Markdown: reports (``*.md.j2``) and Teams cards (``*.card.j2``) show a
title, a note or a name as typed — never as a link, an image, emphasis, a table cell break or
raw HTML. HTML templates stay escaped by Jinja's autoescape; this is the Markdown twin.

Templates mark their own Markdown (``**bold**``, tables) by writing it in the template; every
``{{ value }}`` is escaped by :func:`finalize` unless it is already :class:`~markupsafe.Markup`
(the output of :func:`markdown_text`, :func:`markdown_cell` or ``| safe``)."""

from __future__ import annotations

import re
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

#: Characters that start Markdown (CommonMark and GitHub's tables and strike-through) or HTML.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
#: Templates whose output is Markdown.
MARKDOWN_TEMPLATES = (".md.j2", ".card.j2")


def markdown_text(value: Any) -> Markup:
    """``value`` as literal Markdown text on one line: specials backslash-escaped (links,
    images, emphasis, code, HTML, entities, table cells), line breaks folded (a new line could
    start a heading or a list)."""
    text = " ".join(str("" if value is None else value).split())
    text = _SPECIAL.sub(r"\\\1", text)
    if text[:1] in ("-", "+", "=", "#"):  # a list, an underline or a heading
        text = "\\" + text
    text = re.sub(r"^(\d+)([.)])", r"\1\\\2", text)  # a numbered list
    return Markup(text)


def markdown_cell(value: Any) -> Markup:
    """A Markdown table cell: :func:`markdown_text` (which escapes ``|`` too)."""
    return markdown_text(value)


@pass_context
def finalize(context: Context, value: Any) -> Any:
    """Jinja's ``finalize``: every value printed into a Markdown template is escaped; other
    templates are left to autoescape (HTML) or are plain text (an email's text part)."""
    if isinstance(value, Markup) or not (context.name or "").endswith(MARKDOWN_TEMPLATES):
        return value
    if value is None:
        return ""
    return markdown_text(value)
