"""The ``qip`` command: a thin layer over the services. Exit codes: 0 done, 1 refused (a guard,
a rule, missing authority), 2 bad input (unknown id, bad file, bad arguments), 3 unavailable
(the database is locked or out of reach: try again), 4 a bug.

This module stays light: the commands live in modules of their own, and :mod:`.lazy` builds
only the one being run (``app`` here is the whole app, built when asked for)."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import typer
from rich.markup import escape

from qip_flow.cli import render
from qip_flow.cli.lazy import GLOBAL_FLAGS, GLOBAL_OPTIONS, app_for, build
from qip_flow.config.limits import check_text
from qip_flow.errors import InvalidInput, QipError, Unavailable
from qip_flow.store.db import mask_secrets

INTERNAL_ERROR = 4


def __getattr__(name: str) -> Any:
    """``main.app``: the whole ``qip`` app (every command), for help, docs and tests."""
    if name == "app":
        return build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept the global options anywhere on the line (people type ``qip explain PLAN --json``
    or ``qip plans --db riverside.db``): they move before the command. ``--`` ends the search."""
    cut = argv.index("--") if "--" in argv else len(argv)
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < cut:
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg in GLOBAL_FLAGS or (name in GLOBAL_OPTIONS and "=" in arg):
            hoisted.append(arg)
        elif arg in GLOBAL_OPTIONS and i + 1 < cut:
            hoisted += [arg, argv[i + 1]]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return [*hoisted, *rest, *argv[cut:]]


def refuse_overlong_arguments(argv: list[str]) -> None:
    """No argument longer than any text qip_flow keeps (a note, a reason): refused before any
    command runs, naming the option it was given to."""
    for i, arg in enumerate(argv):
        field = argv[i - 1] if i and argv[i - 1].startswith("--") else f"argument {i + 1}"
        check_text(arg, field=field)


def expected_failure(exc: BaseException) -> QipError | None:
    """The clear message for a failure that is not a bug — a database that is locked or out of
    reach, a file that cannot be written — or None for a bug."""
    from sqlalchemy.exc import DatabaseError

    from qip_flow.store.db import database_problem

    if isinstance(exc, DatabaseError):
        return database_problem(exc)
    if isinstance(exc, OSError):
        name = exc.filename or "a file"
        reason = exc.strerror or str(exc)
        if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError,
                            NotADirectoryError, FileExistsError)):
            return InvalidInput(f"{name}: {reason}; check the path and its permissions")
        return Unavailable(f"{name}: {reason}; nothing was changed: fix it and try again")
    return None


def main() -> None:
    """Entry point: map qip_flow errors to exit codes and readable messages. 0 done, 1 refused,
    2 bad input, 3 unavailable (try again), 4 a bug (with its traceback, to report)."""
    argv = hoist_global_flags(sys.argv[1:])
    as_json = "--json" in (argv[:argv.index("--")] if "--" in argv else argv)
    try:
        refuse_overlong_arguments(argv)
        code = app_for(argv)(args=argv, prog_name="qip", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:
        # Usage errors: click's, or the copies typer vendors (not subclasses of click's).
        if not isinstance(exc, QipError) and callable(getattr(exc, "show", None)) \
                and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(2)
        error = exc if isinstance(exc, QipError) else expected_failure(exc)
        if as_json:  # a script reads the error as it reads the result
            kind = {1: "refused", 3: "unavailable"}.get(getattr(error, "exit_code", 0), "error")
            sys.stderr.write(json.dumps({
                kind: mask_secrets(error.message if error else f"internal error: {exc!r}"),
                "details": [mask_secrets(d) for d in error.details] if error else [],
                "type": type(error or exc).__name__,
                "exit_code": error.exit_code if error else INTERNAL_ERROR}) + "\n")
            sys.exit(error.exit_code if error else INTERNAL_ERROR)
        if error is None:
            render.errors.print("[bold red]internal error:[/bold red] this is a bug in qip_flow; "
                                "nothing was changed. Please report it with the trace below.")
            render.errors.print(escape(mask_secrets("".join(traceback.format_exception(exc)))))
            sys.exit(INTERNAL_ERROR)
        label = {1: "[bold yellow]refused:[/bold yellow]",
                 3: "[bold yellow]unavailable:[/bold yellow]"}.get(error.exit_code,
                                                                 "[bold red]error:[/bold red]")
        render.errors.print(f"{label} {escape(mask_secrets(str(error)))}")
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
