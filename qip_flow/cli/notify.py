"""``qip tick``, ``qip dispatch``, ``qip run`` and ``qip notifications``."""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated, Any

import typer
from rich.progress import Progress
from sqlmodel import col, func, select

from qip_flow.cli import render
from qip_flow.cli.state import state_of
from qip_flow.errors import InvalidInput
from qip_flow.store.models import Plan

notifications_app = typer.Typer(help="List notifications, or retry a failed one.",
                                invoke_without_command=True)

EVERY_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_every(text: str) -> float:
    """``15m`` → 900 seconds."""
    unit = text[-1:].lower()
    try:
        value = float(text[:-1]) if unit in EVERY_UNITS else float(text)
    except ValueError:
        raise InvalidInput(f"--every: '{text}' is not a period; write e.g. 30s, 15m or 1h") from None
    if value <= 0:
        raise InvalidInput("--every: the period must be positive")
    return value * EVERY_UNITS.get(unit, 1)


def _tick(ctx: typer.Context) -> dict[str, Any]:
    from qip_flow.services import notifications as outbox

    st = state_of(ctx)
    rt = st.runtime()
    if st.json or not sys.stdout.isatty():
        return outbox.tick(rt).as_dict()
    with rt.db.read() as session:
        due = session.exec(select(func.count()).select_from(Plan).where(
            col(Plan.next_check_at) <= rt.clock.now())).one()
    with Progress(transient=True) as bar:
        task = bar.add_task("checking due plans", total=due or None)
        return outbox.tick(rt, progress=lambda n: bar.advance(task, n)).as_dict()


def _dispatch(ctx: typer.Context, stop: Any = lambda: False) -> dict[str, Any]:
    from qip_flow.services import notifications as outbox

    st = state_of(ctx)
    return outbox.dispatch(st.runtime(), stop=stop).as_dict()


def _print(ctx: typer.Context, title: str, summary: dict[str, Any]) -> None:
    if state_of(ctx).json:
        render.emit_json(summary)
    else:
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()
                          if not isinstance(v, list))
        render.console.print(f"{title}: {shown}")
        for error in summary.get("errors", []):
            render.errors.print(f"  failed: {error}")
        for plan in summary.get("failing", []):
            render.errors.print(f"  plan {plan['plan']} skipped (failing since "
                                f"{plan['first_failed'][:16]}, {plan['attempts']} attempts): "
                                f"{plan['error']}")


def tick(ctx: typer.Context) -> None:
    """Decide what is due for --now and put it in the outbox; running it twice sends nothing
    twice."""
    _print(ctx, "tick", _tick(ctx))


def dispatch(ctx: typer.Context) -> None:
    """Send what is in the outbox and due, retrying failures with back-off."""
    _print(ctx, "dispatch", _dispatch(ctx))


def run(
    ctx: typer.Context,
    every: Annotated[str, typer.Option(help="How often: e.g. 30s, 15m, 1h.")] = "15m",
    once: Annotated[bool, typer.Option(help="One tick and one dispatch, then exit.")] = False,
) -> None:
    """Tick and dispatch in a loop. SIGTERM or Ctrl-C finishes the current batch and exits."""
    period = parse_every(every)
    stopping = {"now": False}

    def stop(*_: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        _print(ctx, "tick", _tick(ctx))
        _print(ctx, "dispatch", _dispatch(ctx, stop=lambda: stopping["now"]))
        if once or stopping["now"]:
            break
        deadline = time.monotonic() + period
        while time.monotonic() < deadline and not stopping["now"]:
            time.sleep(min(0.2, deadline - time.monotonic()))
        if stopping["now"]:
            break
    render.errors.print("qip run: stopped cleanly")


@notifications_app.callback()
def notifications(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(
        help="queued, held, digested, sent, partial or failed.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest last.")] = 100,
    failing: Annotated[bool, typer.Option(
        "--failing", help="List the plans the tick cannot evaluate instead.")] = False,
) -> None:
    """List notifications with each channel's state, attempts and last error, and the plans
    the tick cannot evaluate."""
    if ctx.invoked_subcommand:
        return
    from qip_flow.services import failures
    from qip_flow.services import notifications as outbox

    st = state_of(ctx)
    with st.runtime().db.read() as session:
        rows = [] if failing else outbox.list_notifications(session, state=state, limit=limit)
        plans = failures.failing(session)
    if st.json:
        render.emit_json(plans if failing else rows)
        return
    if plans:
        render.table("plans the tick cannot evaluate (skipped and tried again on every tick)",
                     ["plan", "failing since", "last", "attempts", "error"],
                     [[p["plan"], p["first_failed"][:16].replace("T", " "),
                       p["last_failed"][:16].replace("T", " "), p["attempts"], p["error"]]
                      for p in plans])
    if failing:
        return
    render.table(None, ["id", "created", "kind", "to", "about", "subject", "state", "channels"],
                 [[r["id"], r["created"][:16].replace("T", " "), r["kind"], r["to"], r["about"],
                   r["subject"], r["state"],
                   "; ".join(f"{c['channel']} {c['state']} ×{c['attempts']}"
                             + (f" (with #{c['carried_by']})" if c["carried_by"] else "")
                             + (f" ({c['error'][:80]})" if c["error"] else "")
                             for c in r["channels"]) or r["problem"]] for r in rows])


@notifications_app.command("retry")
def notifications_retry(
    ctx: typer.Context,
    notification_id: Annotated[int, typer.Argument(metavar="ID")],
    by: Annotated[str, typer.Option(help="Who asks for the retry (audit trail).")] = "operator",
) -> None:
    """Queue a failed notification's deliveries again."""
    from qip_flow.services import notifications as outbox

    st = state_of(ctx)
    count = outbox.retry(st.runtime(), notification_id, by=by)
    if st.json:
        render.emit_json({"id": notification_id, "requeued": count})
    else:
        render.console.print(f"notification {notification_id}: {count} deliveries queued again")


def register(app: typer.Typer) -> None:
    app.command()(tick)
    app.command()(dispatch)
    app.command()(run)
    app.add_typer(notifications_app, name="notifications")
