"""The shipped examples load and the medication plan can be approved on both databases."""

from qip_flow.services import lifecycle, queries
from qip_flow.store import audit


def test_examples_load_and_plan_is_approved_by_a_senior(loaded):
    loaded.clock.set("2026-01-22")
    result = lifecycle.sign_off(loaded, "QIP-2026-014", "approval", by="dadeyemi")
    assert (result.move.source, result.move.dest) == ("draft", "approved")
    with loaded.db.read() as session:
        plan = queries.show(session, "QIP-2026-014")
        assert plan["state"] == "approved"
        assert plan["closure_criteria"]["pinned_at"].startswith("2026-01-22")
        assert audit.verify(session).ok
