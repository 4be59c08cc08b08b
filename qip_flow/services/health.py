"""Is qip_flow working? The scheduler's heartbeat and the checks behind ``qip health`` (and the
web server's ``/healthz`` when it lands): the database answers, its schema is this version's,
the tick and the dispatch ran recently, and nothing has waited too long in the outbox."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, func, select

from qip_flow.clock import as_aware
from qip_flow.errors import QipError
from qip_flow.runtime import Runtime
from qip_flow.store.models import Delivery, Heartbeat

log = logging.getLogger("qip_flow.scheduler")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record_run(rt: Runtime, job: str, started: datetime, seconds: float,
               counts: dict[str, Any] | None = None, error: str = "") -> None:
    """Write the job's heartbeat (one row per job) and log the run with its counts and
    duration; a failed run keeps the last success's time."""
    with rt.db.write() as session:
        beat = session.get(Heartbeat, job) or Heartbeat(job=job, last_run_at=started)
        beat.last_run_at, beat.seconds, beat.worker = started, round(seconds, 3), worker_name()
        beat.counts, beat.last_error = dict(counts or {}), error[:2000]
        if not error:
            beat.last_ok_at = started
        session.add(beat)
    shown = ", ".join(f"{k} {v}" for k, v in (counts or {}).items() if not isinstance(v, list))
    if error:
        log.error("%s failed after %.2f s: %s", job, seconds, error,
                  extra={"job": job, "seconds": round(seconds, 3)})
    else:
        log.info("%s done in %.2f s: %s", job, seconds, shown,
                 extra={"job": job, "seconds": round(seconds, 3), "counts": counts or {}})


@dataclass
class HealthReport:
    database: str
    schema: str | None = None
    schema_expected: str | None = None
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    oldest_waiting: datetime | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "database": self.database, "schema": self.schema,
                "schema_expected": self.schema_expected, "jobs": self.jobs,
                "oldest_waiting": self.oldest_waiting.isoformat() if self.oldest_waiting else None,
                "problems": self.problems}


def check(rt: Runtime, *, stale_after: timedelta, waiting_after: timedelta) -> HealthReport:
    """Each check that fails adds a problem in words; the report is healthy when none did."""
    from qip_flow.store.db import head_revision

    report = HealthReport(database=rt.db.shown_url)
    try:
        report.schema = rt.db.current_revision()
    except QipError as exc:
        report.problems.append(f"database: {exc}")
        return report
    report.schema_expected = head_revision()
    if report.schema != report.schema_expected:
        report.problems.append(f"schema is {report.schema or 'missing'}, this version needs "
                               f"{report.schema_expected}: run `qip init`")
        return report
    now = rt.clock.now()
    with rt.db.read() as session:
        beats = {b.job: b for b in session.exec(select(Heartbeat)).all()}
        oldest = session.exec(select(func.min(Delivery.next_attempt_at))
                              .where(col(Delivery.state) == "pending")).one()
    for job in ("tick", "dispatch"):
        beat = beats.get(job)
        ok_at = as_aware(beat.last_ok_at) if beat and beat.last_ok_at else None
        report.jobs[job] = {"last_ok": ok_at.isoformat() if ok_at else None,
                            "last_error": beat.last_error if beat else "",
                            "seconds": beat.seconds if beat else None,
                            "counts": beat.counts if beat else {}}
        if ok_at is None:
            report.problems.append(f"{job} has never succeeded: is `qip run` running?")
        elif now - ok_at > stale_after:
            report.problems.append(f"{job} last succeeded {ok_at:%Y-%m-%d %H:%M} UTC, more than "
                                   f"{_span(stale_after)} ago")
        if beat and beat.last_error:
            report.problems.append(f"{job}'s last run failed: {beat.last_error}")
    if oldest is not None:
        report.oldest_waiting = as_aware(oldest)
        if now - report.oldest_waiting > waiting_after:
            report.problems.append(f"a message has waited in the outbox since "
                                   f"{report.oldest_waiting:%Y-%m-%d %H:%M} UTC, more than "
                                   f"{_span(waiting_after)}: see `qip notifications`")
    return report


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
