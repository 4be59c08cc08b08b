"""The error tree. Every message says what was wrong and what to do; the CLI maps classes to
exit codes (``Refused`` → 1, ``Unavailable`` → 3, everything else → 2; 4 is kept for a bug)."""

from __future__ import annotations


class QipError(Exception):
    """Base of every error qip_flow raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details or [])

    def __str__(self) -> str:
        if not self.details:
            return self.message
        return self.message + "".join(f"\n  - {d}" for d in self.details)


class InvalidDefinition(QipError):
    """A governance file (workflow, rules, channels) is malformed; it was refused whole."""


class InvalidInput(QipError):
    """A data file, an argument or an id is wrong; nothing was changed."""


class NotFound(InvalidInput):
    """An id names nothing in the database."""


class InvalidRows(InvalidInput):
    """Several items of one batch (a list pushed to the API, the rows of a spreadsheet) are
    wrong: each is named with where it is and what is wrong; none was recorded."""

    def __init__(self, message: str, problems: list[tuple[str, str]]) -> None:
        super().__init__(message, details=[f"{where}: {what}" for where, what in problems])
        self.problems = problems


class NotInitialised(QipError):
    """The database has no schema, or an older one: run ``qip init``."""


class Refused(QipError):
    """A guard, a rule or missing authority refused the change; nothing was changed. When a
    workflow's guards refused, ``guards`` names the guard behind each of ``details``, so a page
    can put each reason beside the field or criterion it is about."""

    exit_code = 1

    def __init__(self, message: str, *, details: list[str] | None = None,
                 guards: list[str] | None = None) -> None:
        super().__init__(message, details=details)
        self.guards = list(guards or [])


class NotPermitted(Refused):
    """The policy refused: the person (or system) has no authority for this act. The message
    says why and who can; ``reason`` and ``who_can`` give them apart (for a 403 page)."""

    def __init__(self, message: str, *, details: list[str] | None = None, reason: str = "",
                 who_can: tuple[str, ...] = ()) -> None:
        super().__init__(message, details=details)
        self.reason, self.who_can = reason or message, tuple(who_can)


class Conflict(Refused):
    """Someone else changed the plan since the person acting saw it (``expected_version``):
    nothing was changed; look again (``current_version``) and try again."""

    def __init__(self, message: str, *, plan_id: str, expected_version: int,
                 current_version: int, details: list[str] | None = None) -> None:
        super().__init__(message, details=details)
        self.plan_id = plan_id
        self.expected_version = expected_version
        self.current_version = current_version


class NotAuthenticated(QipError):
    """A request to the API that does not prove who sent it: no token, an unknown, expired or
    revoked one, or no live session. Nothing was changed."""


class Unavailable(QipError):
    """Something qip_flow needs is busy or out of reach (a locked database, a server that does
    not answer, a full disk); nothing was changed, and the same command may work later."""

    exit_code = 3
