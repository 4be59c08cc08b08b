"""The global options of every ``qip`` command, turned into a Runtime on first use."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from qip_flow.runtime import Runtime


class State:
    """Global options, turned into a Runtime when a command first needs one."""

    def __init__(self, db: str | None, config: str | None, now: str | None, json_out: bool,
                 channels: str | None = None):
        self.db_url, self.config, self.now, self.json = db, config, now, json_out
        self.channels = channels
        self.settings: dict[str, Any] = {}  # key → settings.Value, for `qip config show`
        self._rt: Runtime | None = None

    def runtime(self, *, schema_required: bool = True, writes: bool = False) -> Runtime:
        """The runtime; for a command that ``writes``, refused up front (before any work)
        when its clock or files may not write here; every write transaction checks again."""
        if self._rt is None:
            from qip_flow.clock import Clock, parse_when
            from qip_flow.runtime import Runtime, config_folder
            from qip_flow.store.db import Database

            clock = Clock(parse_when(self.now) if self.now else None)
            self._rt = Runtime(db=Database(self.db_url), clock=clock,
                               config_dir=config_folder(self.config),
                               channels_file=self.channels)
        if schema_required:
            self._rt.db.require_schema()
        if writes:
            self._rt.check_write()
        return self._rt


def state_of(ctx: typer.Context) -> State:
    return ctx.ensure_object(State)


def login_name() -> str:
    """Who is at the terminal, for the audit trail when ``--by`` is not given."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
