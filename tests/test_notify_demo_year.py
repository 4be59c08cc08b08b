"""The demo year, counted as its people received it (issue #13): nobody receives two messages
about one action on one day — so never two rungs of the ladder — no one above an action's
owner hears of it before the owner was reminded, and the leaders' weekly digests went out. The
count is bench/messages_per_day.py's, on the demo the report tests play once per session; the
README's demo section gives its figures (`python bench/messages_per_day.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_reports import build_demo_reports

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import messages_per_day  # noqa: E402

# the demo is played once per process, by whichever test of the group asks first: one worker
pytestmark = pytest.mark.xdist_group("demo-reports")


@pytest.fixture(scope="module")
def tally(tmp_path_factory: pytest.TempPathFactory) -> messages_per_day.Tally:
    demo = build_demo_reports(tmp_path_factory.getbasetemp())
    return messages_per_day.count(f"sqlite:///{demo.db}")


def test_nobody_receives_two_messages_about_one_action_on_one_day(
        tally: messages_per_day.Tally) -> None:
    assert tally.messages >= 100 and tally.by_kind["escalation"] >= 10
    assert tally.repeated == [], "two messages about one action to one person on one day"
    assert tally.two_rungs == []


def test_the_owner_hears_before_anyone_above_them(tally: messages_per_day.Tally) -> None:
    assert tally.escalations and tally.escalated_before_reminded == []


def test_leaders_read_a_weekly_digest(tally: messages_per_day.Tally) -> None:
    assert tally.by_kind["digest"] >= 10
    assert tally.busiest <= 2

