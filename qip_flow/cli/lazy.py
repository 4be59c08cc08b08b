"""The ``qip`` app, built for the command line at hand: a person waiting for ``qip plans`` should
not pay for importing the report charts, the notification channels or the migrations. Each
command lives in a module with a ``register(app)`` function; :data:`COMMANDS` names it, and
:func:`app_for` registers only the module of the command being run. The whole app (every
module) is built only to list the commands: ``qip --help``, shell completion, an unknown
command (so click can say so)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import cache
from importlib import import_module
from typing import Annotated

import typer

from qip_flow import __version__, logs, settings
from qip_flow.cli import help as command_help
from qip_flow.cli.state import State

#: Each command (or command group) and the module of ``qip_flow.cli`` that registers it.
COMMANDS: dict[str, str] = {
    **dict.fromkeys(("init", "load", "schema", "demo", "workflow"), "setting_up"),
    **dict.fromkeys(("new", "config", "health", "backup", "restore"), "operate"),
    "serve": "serve",
    "token": "tokens",
    **dict.fromkeys(("plans", "show", "explain", "lint", "audit"), "looking"),
    **dict.fromkeys(("do", "signoff", "close", "measure", "learning", "learning-review",
                     "vary", "reassess", "add-action"), "doing"),
    **dict.fromkeys(("tick", "dispatch", "run", "notifications", "channels"), "notify"),
    **dict.fromkeys(("report", "export"), "reports"),
    "rules": "rules",
}

GLOBAL_FLAGS = ("--json", "--verbose", "-v", "--quiet", "-q")
GLOBAL_OPTIONS = ("--db", "--config", "--now", "--channels", "--log-format")
COMPLETION_VARIABLE = "_QIP_COMPLETE"  # click's shell-completion request for prog "qip"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"qip_flow {__version__}")
        raise typer.Exit()


def main_options(
    ctx: typer.Context,
    db: Annotated[str | None, typer.Option(metavar="URL", envvar="QIP_DATABASE_URL",
                                           help="Database URL or SQLite file (default: ./qip.db)")] = None,
    config: Annotated[str | None, typer.Option(metavar="DIR", envvar="QIP_CONFIG",
                                               help="Folder holding workflows/ and rules/.")] = None,
    now: Annotated[str | None, typer.Option(metavar="WHEN", envvar="QIP_NOW",
                                            help="Pretend it is this date or date-time (ISO).")] = None,
    channels: Annotated[str | None, typer.Option(
        metavar="FILE", envvar="QIP_CHANNELS", help="Apprise YAML channels file (default: "
        "CONFIG/channels.yaml, else a local file beside the database)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    log_format: Annotated[str | None, typer.Option(
        metavar="text|json", envvar="QIP_LOG_FORMAT", help="Log lines as text or JSON.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log everything.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log only errors.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print qip_flow's version and exit.")] = False,
) -> None:
    given = {"database": db, "config": config, "now": now, "channels": channels,
             "log_format": log_format}
    names = {"database": "db"}
    in_force = settings.resolve({
        key: (value, getattr(ctx.get_parameter_source(names.get(key, key)), "name", "") == "COMMANDLINE")
        for key, value in given.items()})
    logs.configure(in_force["log_format"].value, in_force["log_level"].value,
                   verbose=verbose, quiet=quiet)
    ctx.obj = State(in_force["database"].value, in_force["config"].value, in_force["now"].value,
                    json_out, in_force["channels"].value)
    ctx.obj.settings = in_force


@cache
def build(modules: frozenset[str] | None = None) -> typer.Typer:
    """The ``qip`` app with the commands of ``modules`` (None: every module), built once per
    process for each choice (tests run many commands in one process)."""
    app = typer.Typer(add_completion=True, pretty_exceptions_enable=False, no_args_is_help=True,
                      rich_markup_mode="rich",
                      help="qip_flow: Quality Improvement Plans that commissioners and CQC can "
                           "trust.")
    app.callback()(main_options)
    chosen = dict.fromkeys(COMMANDS.values()) if modules is None else sorted(modules)
    for module in chosen:
        import_module(f"qip_flow.cli.{module}").register(app)
    command_help.apply(app)
    return app


def command_name(argv: Iterable[str]) -> str | None:
    """The command a command line runs (global options already before it), or None when it
    asks for the list of commands (no command, ``--help`` before one, an unknown option)."""
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in GLOBAL_FLAGS or (arg.split("=", 1)[0] in GLOBAL_OPTIONS and "=" in arg):
            i += 1
        elif arg in GLOBAL_OPTIONS:
            i += 2
        elif arg == "--version":
            return "--version"
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def app_for(argv: list[str]) -> typer.Typer:
    """The app to run ``argv`` (global options hoisted before the command): the root and the
    module of its command only, unless the whole list of commands is wanted."""
    if os.environ.get(COMPLETION_VARIABLE):
        return build()
    name = command_name(argv)
    if name == "--version":
        return build(frozenset())
    if name not in COMMANDS:
        return build()
    return build(frozenset({COMMANDS[name]}))
