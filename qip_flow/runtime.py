"""Everything a use case needs, built once per command: the database, the clock and the
governance files in force (read lazily, so a command that needs no workflow never parses one).

The files in force are the ones published in the database; ``--config`` chooses others only
for checking, testing and previewing: a write under files other than the published ones is
refused, and so is a write with a simulated clock (``--now``) on a real database."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.errors import InvalidInput, Refused
from qip_flow.store.db import Database

if TYPE_CHECKING:  # each part is imported when first asked for: a command pays for what it uses
    from qip_flow.config.files import GovernanceFiles
    from qip_flow.config.rules import RuleBook
    from qip_flow.decide.decisions import Decide
    from qip_flow.decide.schedule import Schedule
    from qip_flow.decide.vocabulary import EngineVocabulary
    from qip_flow.notify.channels import Channels
    from qip_flow.notify.webhooks import Subscriber
    from qip_flow.workflow.machines import Workflows


def config_folder(value: str | Path | None) -> Path | None:
    """The folder chosen with ``--config`` or ``QIP_CONFIG``, if any (None: the published
    files, or the shipped ones where there is no database)."""
    chosen = value or os.environ.get("QIP_CONFIG")
    if not chosen:
        return None
    folder = Path(chosen)
    if not (folder / "workflows").is_dir():
        raise InvalidInput(f"--config: {folder} has no workflows/ folder; point it at the folder "
                           "that holds workflows/ and rules/")
    return folder


def now_refused() -> Refused:
    return Refused(
        "--now/QIP_NOW: this database is a real record, so every change takes its time from "
        "the server's clock; --now may only read here ('as at': reports, show, explain, plans). "
        "To play time forward, use a database created with `qip init --simulation`")


@dataclass
class Runtime:
    db: Database
    clock: Clock = field(default_factory=Clock)
    config_dir: Path | None = None
    channels_file: str | None = None

    def __post_init__(self) -> None:
        self.db = self.db.with_write_gate(self.check_write)

    @cached_property
    def files(self) -> GovernanceFiles:
        """``--config``'s files if chosen, else the published ones, else (no database yet)
        the shipped ones."""
        from qip_flow.config.files import GovernanceFiles
        from qip_flow.store import governance

        if self.config_dir is not None:
            return GovernanceFiles.from_folder(self.config_dir)
        row = None
        try:
            if self.db.has_schema():
                with self.db.read() as session:
                    row = governance.published(session)
        except InvalidInput:  # no database to ask: checking files needs none
            row = None
        return governance.published_files(row) if row else GovernanceFiles.from_folder(SHIPPED_CONFIG)

    @cached_property
    def workflows(self) -> Workflows:
        from qip_flow.workflow.machines import Workflows

        files = self.files
        return Workflows.from_folder(files.folder / "workflows", texts=dict(files.part("workflows")))

    @cached_property
    def rules(self) -> RuleBook:
        from qip_flow.config.rules import load_rules

        files = self.files
        return load_rules(files.folder / "rules", self.vocabulary, texts=files.part("rules"))

    @cached_property
    def vocabulary(self) -> EngineVocabulary:
        from qip_flow.decide.vocabulary import EngineVocabulary

        defs = self.workflows.defs
        return EngineVocabulary(defs["plan"].state_names(), defs["action"].state_names())

    @cached_property
    def decide(self) -> Decide:
        from qip_flow.decide.decisions import Decide

        return Decide(self.rules)

    @cached_property
    def schedule(self) -> Schedule:
        from qip_flow.decide.schedule import Schedule

        return Schedule.from_rules(self.rules)

    @cached_property
    def simulation(self) -> bool:
        """Fixed when the database was created, so read once."""
        return self.db.is_simulation()

    def check_clock(self) -> None:
        """A simulated clock writes only to a simulation database."""
        if self.clock.fixed is not None and not self.simulation:
            raise now_refused()

    def check_write(self) -> None:
        """Asked before every write: the clock may write here, and the files in force are the
        published ones."""
        from qip_flow.store import governance

        self.check_clock()
        with self.db.read() as session:
            version = governance.published_version(session)
        if version is None:
            raise Refused("no rules or workflows are published in this database; run "
                          "`qip rules publish DIR --by PERSON` (or `qip init`) first")
        files = self.files
        if files.version == version:
            return
        if self.config_dir is None:
            raise Refused(f"the rules and workflows were published again ({files.version} → "
                          f"{version}) after this process read them; run the command again "
                          "(restart long-running workers) to use the published version")
        with self.db.read() as session:
            row = governance.published(session)
            assert row is not None
        differ = files.differences(governance.published_files(row))
        raise Refused(
            f"--config {self.config_dir} holds {files.version}, but the rules and workflows "
            f"published in this database are {version}: changes are made only under the "
            f"published version. Run `qip rules preview {self.config_dir}` and `qip rules "
            f"publish {self.config_dir} --by PERSON` to put these files in force, or leave out "
            "--config (and QIP_CONFIG)", details=[f"differs: {name}" for name in differ])

    @cached_property
    def channels(self) -> Channels:  # Apprise is imported only by commands that send
        """``QIP_CHANNELS``, else ``channels.yaml`` in the config folder, else a local file
        beside the database."""
        from qip_flow.notify.channels import Channels

        return Channels.load(self.channels_path(), default_file=self.outbox_file())

    def channels_path(self) -> Path | None:
        folder = self.config_dir or SHIPPED_CONFIG
        path = self.channels_file or os.environ.get("QIP_CHANNELS")
        if not path and (folder / "channels.yaml").exists():
            path = str(folder / "channels.yaml")
        return Path(path) if path else None

    @cached_property
    def webhooks(self) -> list[Subscriber]:
        """The channels file's webhook subscribers, read without Apprise: every change to a
        plan asks whether someone wants to hear of it."""
        from qip_flow.notify.webhooks import read_subscribers

        return read_subscribers(self.channels_path())

    def outbox_file(self) -> Path:
        folder = self.db.sqlite_folder() or Path.cwd()
        return folder / "qip-notifications.log"
