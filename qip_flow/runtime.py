"""Everything a use case needs, built once per command: the database, the clock and the
governance files in force (read lazily, so a command that needs no workflow never parses one)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.config.rules import RuleBook, load_rules
from qip_flow.decide.decisions import Decide
from qip_flow.decide.schedule import Schedule
from qip_flow.decide.vocabulary import EngineVocabulary
from qip_flow.errors import InvalidInput
from qip_flow.store.db import Database
from qip_flow.workflow.machines import Workflows

if TYPE_CHECKING:
    from qip_flow.notify.channels import Channels


def config_folder(value: str | Path | None) -> Path:
    """The folder holding ``workflows/`` and ``rules/``: ``--config``, ``QIP_CONFIG``, or the
    shipped ones."""
    folder = Path(value or os.environ.get("QIP_CONFIG") or SHIPPED_CONFIG)
    if not (folder / "workflows").is_dir():
        raise InvalidInput(f"--config: {folder} has no workflows/ folder; point it at the folder "
                           "that holds workflows/ and rules/")
    return folder


@dataclass
class Runtime:
    db: Database
    clock: Clock = field(default_factory=Clock)
    config_dir: Path = SHIPPED_CONFIG
    channels_file: str | None = None

    @cached_property
    def workflows(self) -> Workflows:
        return Workflows.from_folder(self.config_dir / "workflows")

    @cached_property
    def rules(self) -> RuleBook:
        return load_rules(self.config_dir / "rules", self.vocabulary)

    @cached_property
    def vocabulary(self) -> EngineVocabulary:
        defs = self.workflows.defs
        return EngineVocabulary(defs["plan"].state_names(), defs["action"].state_names())

    @cached_property
    def decide(self) -> Decide:
        return Decide(self.rules)

    @cached_property
    def schedule(self) -> Schedule:
        return Schedule.from_rules(self.rules)

    @cached_property
    def channels(self) -> Channels:  # Apprise is imported only by commands that send
        """``QIP_CHANNELS``, else ``channels.yaml`` in the config folder, else a local file
        beside the database."""
        from qip_flow.notify.channels import Channels

        path = self.channels_file or os.environ.get("QIP_CHANNELS")
        if not path and (self.config_dir / "channels.yaml").exists():
            path = str(self.config_dir / "channels.yaml")
        return Channels.load(Path(path) if path else None, default_file=self.outbox_file())

    def outbox_file(self) -> Path:
        folder = self.db.sqlite_folder() or Path.cwd()
        return folder / "qip-notifications.log"
