"""How ``qip --help`` reads: commands grouped by purpose, option types named for people (``URL``,
``DATE``, ``PATH``), never as Python types (``<str>``), and no type at all for flags."""

from __future__ import annotations

import inspect
from typing import Any

import typer
from typer.core import TyperArgument, TyperOption

#: Each command's group in ``qip --help``; a test fails when a command has none.
PANELS: dict[str, str] = {
    **dict.fromkeys(("init", "new", "config", "load", "schema", "demo", "health", "backup",
                     "restore", "serve", "token"), "Setting up and running"),
    **dict.fromkeys(("plans", "show", "explain", "lint", "audit"), "Looking"),
    **dict.fromkeys(("do", "signoff", "close", "measure", "learning", "learning-review",
                     "vary", "reassess", "add-action"), "Doing"),
    **dict.fromkeys(("tick", "dispatch", "run", "notifications", "channels"),
                    "Reminders and escalations"),
    **dict.fromkeys(("report", "export"), "Reports"),
    **dict.fromkeys(("workflow", "rules"), "Governance files"),
}

_TYPE_WORDS = {"str": "TEXT", "int": "NUMBER", "float": "NUMBER", "Path": "PATH",
               "list[str]": "TEXT", "list[Path]": "PATH", "list[int]": "NUMBER"}


def _display_type(self: TyperOption, ctx: Any) -> str | None:
    """Typer 0.29 prints ``<str>`` and ``<bool>``; people read ``TEXT`` and nothing for a flag."""
    if self.metavar is not None:
        return self.metavar
    if self.is_flag:
        return None
    label = TyperOption.display_type(self, ctx).strip("<>")
    return _TYPE_WORDS.get(label, label.upper() if "|" not in label else label)


def reflow(doc: str | None) -> str | None:
    """A docstring as help: lines joined within each paragraph (rich markup keeps the source's
    line breaks, which read as ragged lines in a terminal)."""
    if not doc:
        return doc
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _name(info: Any) -> str:
    return info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")


def _argument_type(self: TyperArgument, ctx: Any) -> str | None:
    """An argument is shown by its name (``PLAN``, ``ID``); its Python type adds nothing."""
    return self.metavar if self.metavar is not None else None


def apply(app: typer.Typer) -> None:
    """Group the registered commands and sub-apps into their panels, in the order of PANELS,
    reflow their help, and name option types for people. Called once, after every command is
    registered (sub-apps' own commands are reflowed too)."""
    TyperOption.display_type_rich = _display_type  # type: ignore[method-assign]
    TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]
    order = list(dict.fromkeys(PANELS.values()))

    names = list(PANELS)

    def rank(info: Any) -> tuple[int, int]:
        name = _name(info)
        panel = PANELS.get(name)
        if panel is None:
            return len(order), 0
        return order.index(panel), names.index(name)

    for info in app.registered_commands:
        info.rich_help_panel = PANELS.get(_name(info), info.rich_help_panel)
        info.help = info.help or reflow(info.callback.__doc__ if info.callback else None)
    app.registered_commands.sort(key=rank)
    for group in app.registered_groups:
        group.rich_help_panel = PANELS.get(group.name or "", group.rich_help_panel)
        if group.typer_instance is not None:
            for info in group.typer_instance.registered_commands:
                info.help = info.help or reflow(info.callback.__doc__ if info.callback else None)
    app.registered_groups.sort(key=rank)


def ungrouped(app: typer.Typer) -> list[str]:
    """The commands that have no panel (for the test that keeps ``--help`` tidy)."""
    names = [info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
             for info in app.registered_commands]
    names += [group.name or "" for group in app.registered_groups]
    return [n for n in names if n not in PANELS]
