"""A Mermaid state diagram drawn from a workflow definition, for `qip workflow show` and docs."""

from __future__ import annotations

from qip_flow.config.workflow import WorkflowDef


def mermaid(wf: WorkflowDef) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {wf.initial}"]
    for ev in wf.events:
        guards = f" [{', '.join(g.name for g in ev.guards)}]" if ev.guards else ""
        for src in ev.source:
            lines.append(f"    {src} --> {ev.dest or src} : {ev.name}{guards}")
    lines += [f"    {s.name} --> [*]" for s in wf.states if s.final]
    return "\n".join(lines)
