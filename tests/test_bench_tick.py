"""The tick, re-evaluation and workers benchmarks run at tiny sizes, so they never rot. No
time is asserted; their own correctness checks are: qip_flow and the raw-SQL floor write the
same outbox keys, and several PostgreSQL workers send every message exactly once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import require_postgres

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))


@pytest.fixture(autouse=True)
def _no_saved_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QIP_BENCH_NO_SAVE", "1")


def test_tick_and_floor_write_the_same_messages_on_sqlite() -> None:
    import tick

    (row,) = tick.main(["--sizes", "600", "--backends", "sqlite"])
    assert row[0] == "sqlite" and row[1] == 600
    assert row[3] >= 1, "the generated day has plans due"
    assert row[-1] == "yes", "qip_flow and the floor wrote different outbox keys"


@pytest.mark.postgres
def test_tick_and_floor_agree_and_two_workers_send_once_on_postgres() -> None:
    require_postgres()
    import tick
    import workers

    (row,) = tick.main(["--sizes", "600", "--backends", "postgres"])
    assert row[-1] == "yes"
    rows = workers.main(["--actions", "600", "--workers", "2"])
    assert rows[0][-1] == "yes", f"not every delivery was sent exactly once: {rows[0]}"
    assert rows[0][-2] == 0


def test_reevaluation_runs_in_steady_state() -> None:
    import reevaluate

    (row,) = reevaluate.main(["--actions", "600"])
    assert row[2] >= 1  # plans re-decided
    assert row[5] == 0  # steady state: nothing new to send after the first tick
