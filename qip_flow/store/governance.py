"""What the database says about itself: whether it was made for simulation, and which
governance files are published (in force for every change)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from qip_flow.config.files import GovernanceFiles
from qip_flow.store.models import DatabaseSetting, PublishedConfig

SIMULATION = "simulation"


def is_simulation(session: Session) -> bool:
    """True only on a database created with ``qip init --simulation``."""
    row = session.get(DatabaseSetting, SIMULATION)
    return row is not None and row.value == "true"


def mark_created(session: Session, *, simulation: bool) -> None:
    """Record, once, what kind of database this is."""
    if session.get(DatabaseSetting, SIMULATION) is None:
        session.add(DatabaseSetting(key=SIMULATION, value="true" if simulation else "false"))


def published(session: Session) -> PublishedConfig | None:
    """The publication in force: the newest."""
    return session.exec(select(PublishedConfig).order_by(col(PublishedConfig.id).desc())
                        ).first()


def published_version(session: Session) -> str | None:
    """The version in force, without reading the files (asked before every write)."""
    return session.exec(select(PublishedConfig.version)
                        .order_by(col(PublishedConfig.id).desc())).first()


def published_files(row: PublishedConfig) -> GovernanceFiles:
    return GovernanceFiles(dict(row.files), f"published {row.version}")


def store_publication(session: Session, files: GovernanceFiles, *, by: str, at: datetime
                      ) -> PublishedConfig:
    row = PublishedConfig(version=files.version, files=dict(files.texts), published_at=at,
                          published_by=by, source=files.origin)
    session.add(row)
    session.flush()
    return row
