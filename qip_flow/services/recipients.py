"""Recipients a plan names beyond its owner, sponsor and fixed groups, for the ``notify``
rules' ``to:``: its service's managers, the group its closure criteria name, and the owner of
the indicator whose measurement is due."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qip_flow.decide.decisions import NotifyDecision
from qip_flow.store.models import Plan

if TYPE_CHECKING:
    from qip_flow.services.notifications import MessageContext


def plan_recipients(context: MessageContext, plan: Plan, decision: NotifyDecision) -> list[str]:
    """The people a plan names beyond its owner and sponsor: its service's managers, the group
    its closure criteria name, the owner of the indicator whose measurement is due."""
    if decision.to == "service_managers":
        return context.service_managers(plan.service_id)
    if decision.to == "signoff_group":
        group = ((plan.closure_criteria or {}).get("signoff") or {}).get("group")
        return context.members(group) if group else []
    if decision.to == "indicator_owner":
        return [decision.facts.get("overdue_indicator_owner") or plan.owner_id]
    return []
