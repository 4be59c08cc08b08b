"""The database the plan pages' tests share: the shipped examples with the safeguarding QIP
played to its closure review on 28 July 2026 (three months sustained, two re-audits, the
learning written down), plus a governance lead and a commissioner (a guest of Willow Lodge);
and the web application over it, in this process, with a session per person. Nothing here is
a pytest plugin."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import snapshot
from test_closure_scenarios import (
    record_safeguarding_learning,
    safeguarding_sustaining,
    safeguarding_third_month,
)

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.runtime import Runtime
from qip_flow.services import identity, loading
from qip_flow.store.db import Database
from qip_flow.store.keys import ensure_key
from qip_flow.store.models import Person

SAFEGUARDING = "QIP-2026-021"
MEDICATION = "QIP-2026-014"
GROUP = "Safeguarding governance group"
CLOSURE_DAY = "2026-07-28T10:00"
LEAD, GUEST = "glead", "cguest"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_lead_and_guest(rt: Runtime) -> None:
    """A governance lead, and a commissioner whose guest access covers Willow Lodge until the
    end of 2026 (rows written as a governance lead's organisation file would leave them)."""
    with rt.db.write(gated=False) as session:
        session.add(Person(id=LEAD, name="Grace Lead", email="grace.lead@riverside-care.example",
                           role="Head of Governance", level="manager", roles=["governance_lead"]))
        session.add(Person(id=GUEST, name="Colin Commissioner",
                           email="colin@council.example", role="Contract monitoring officer",
                           roles=["guest"], services=["willow-lodge"],
                           expires=date(2026, 12, 31)))


def closure_review(rt: Runtime) -> None:
    """The safeguarding QIP before the group on 28 July, ready to close but for the signing."""
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [SHIPPED_CONFIG / "examples"], actor="test")
    played_to_closure_review(rt)


def played_to_closure_review(rt: Runtime) -> None:
    """On the examples already loaded: the lead and the guest added, the safeguarding QIP
    played to its closure review with the learning written down."""
    add_lead_and_guest(rt)
    safeguarding_sustaining(rt)
    safeguarding_third_month(rt)
    record_safeguarding_learning(rt)
    rt.clock.set(CLOSURE_DAY)


def build(folder: Path) -> Path:
    """A SQLite file at the closure review, with its key file beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    db_file = folder / "qip.db"
    db = Database(f"sqlite:///{db_file}")
    db.init(simulation=True)
    closure_review(Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG))
    with pytest.MonkeyPatch.context() as env:  # beside the database, whatever leaked before
        env.delenv("QIP_SECRET_KEY", raising=False)
        env.delenv("QIP_KEY_FILE", raising=False)
        ensure_key(db)
    db.dispose()
    return db_file


def copy(template: Path, folder: Path) -> Path:
    """A fresh copy of a built database (and its key), for a test that changes it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("qip.db", "qip.key"):
        if (template.parent / name).exists():
            shutil.copy2(template.parent / name, folder / name)
    return folder / "qip.db"


def runtime(db_file: Path) -> Runtime:
    rt = Runtime(db=Database(f"sqlite:///{db_file}"), clock=Clock())
    rt.clock.set(CLOSURE_DAY)
    return rt


@contextmanager
def app_client(rt: Runtime) -> Iterator[Any]:
    """The web application over ``rt``, in this process (no server, no network)."""
    from fastapi.testclient import TestClient

    from qip_flow.web.app import create_app
    from qip_flow.web.config import WebSettings

    app = create_app(rt, WebSettings(base_url="http://testserver"))
    with TestClient(app, follow_redirects=False) as client:
        yield client


def signed_in(client: Any, rt: Runtime, person: str, method: str = "dev", *,
              scope: str | None = None) -> Any:
    """``client`` carrying a new session of ``person``."""
    client.cookies.set("qip_session", identity.open_session(rt, person, method, scope=scope))
    return client


def token_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form token"
    return found.group(1)


def unchanged(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row but the sessions' last-seen times: what a refused form must leave as it was."""
    rows = snapshot(db)
    rows.pop("websession", None)
    return rows


def closure_form(evidence: list[int], **changes: Any) -> dict[str, Any]:
    """The closure sign-off as the group would fill it in."""
    return {"meeting": "Safeguarding governance group 2026-07-28",
            "evidence": [str(i) for i in evidence],
            "evidence_notes": "Incident panel outcomes\nSupervision evidence",
            "residual_risks": "Agency night staff :: threshold guide in agency induction pack",
            "learning_embedded": "Induction\nSupervision framework", **changes}
