"""``qip tick``, ``qip dispatch``, ``qip run`` and ``qip notifications``."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qip_flow.cli import render
from qip_flow.cli.state import state_of
from qip_flow.errors import InvalidInput

if TYPE_CHECKING:
    from qip_flow.runtime import Runtime

log = logging.getLogger("qip_flow.scheduler")

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


def _timed(ctx: typer.Context, job: str, work: Callable[[Runtime], Any]) -> dict[str, Any]:
    """Run the tick or the dispatch, then write its heartbeat (for `qip health`) and log it with
    its counts and duration; a failure is logged and recorded before it is raised."""
    from qip_flow.services import health

    rt = state_of(ctx).runtime(writes=True)
    started, clock = rt.clock.now(), time.monotonic()
    try:
        summary = work(rt).as_dict()
    except Exception as exc:
        health.record_run(rt, job, started, time.monotonic() - clock, error=str(exc) or repr(exc))
        raise
    health.record_run(rt, job, started, time.monotonic() - clock, summary)
    return summary


def _tick(ctx: typer.Context) -> dict[str, Any]:
    from rich.progress import Progress
    from sqlmodel import col, func, select

    from qip_flow.services import notifications as outbox
    from qip_flow.store.models import Plan

    st = state_of(ctx)
    if st.json or not sys.stdout.isatty():
        return _timed(ctx, "tick", outbox.tick)
    rt = st.runtime()
    with rt.db.read() as session:
        due = session.exec(select(func.count()).select_from(Plan).where(
            col(Plan.next_check_at) <= rt.clock.now())).one()
    with Progress(transient=True) as bar:
        task = bar.add_task("checking due plans", total=due or None)
        return _timed(ctx, "tick", lambda r: outbox.tick(r, progress=lambda n: bar.advance(task, n)))


def _dispatch(ctx: typer.Context, stop: Any = lambda: False) -> dict[str, Any]:
    from qip_flow.services import notifications as outbox

    return _timed(ctx, "dispatch", lambda r: outbox.dispatch(r, stop=stop))


def _channels_in_force(ctx: typer.Context, *, strict: bool) -> None:
    """Say so, every run, when no channels file is configured and messages only go into a local
    file; under --strict that is an error and nothing is done."""
    channels = state_of(ctx).runtime().channels
    if any(c.kind != "file" for c in channels.channels):
        return
    message = (f"no channels file is configured: messages are only written to a local file "
               f"({channels.source.removeprefix('default: messages are written to ')}) and reach "
               "nobody. Give --channels FILE or QIP_CHANNELS (docs/notifications.md)")
    if strict:
        raise InvalidInput(message + "; or --file-outbox if a local file is what you want")
    log.warning(message)


def _print(ctx: typer.Context, title: str, summary: dict[str, Any]) -> None:
    if state_of(ctx).json:
        render.emit_json(summary)
    else:
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()
                          if not isinstance(v, list))
        render.console.print(f"{title}: {render.esc(shown)}")
        for error in summary.get("errors", []):
            render.errors.print(f"  failed: {render.esc(error)}")
        for plan in summary.get("failing", []):
            render.errors.print(f"  plan {plan['plan']} skipped (failing since "
                                f"{plan['first_failed'][:16]}, {plan['attempts']} attempts): "
                                f"{render.esc(plan['error'])}")


Strict = Annotated[bool, typer.Option("--strict", help="Refuse to run when no channels file is "
                                       "configured (messages would only go into a local file).")]


def tick(ctx: typer.Context, strict: Strict = False) -> None:
    """Decide what is due for --now and put it in the outbox; running it twice sends nothing
    twice."""
    _channels_in_force(ctx, strict=strict)
    _print(ctx, "tick", _tick(ctx))


def dispatch(ctx: typer.Context, strict: Strict = False) -> None:
    """Send what is in the outbox and due, retrying failures with back-off."""
    _channels_in_force(ctx, strict=strict)
    _print(ctx, "dispatch", _dispatch(ctx))


def run(
    ctx: typer.Context,
    every: Annotated[str, typer.Option(help="How often: e.g. 30s, 15m, 1h.")] = "15m",
    once: Annotated[bool, typer.Option(help="One tick and one dispatch, then exit.")] = False,
    file_outbox: Annotated[bool, typer.Option(
        "--file-outbox", help="Run without a channels file, writing messages to a local file "
        "(otherwise refused).")] = False,
) -> None:
    """Tick and dispatch in a loop, logging each with its counts and duration. SIGTERM or
    Ctrl-C finishes the current batch and exits."""
    from qip_flow import logs

    period = parse_every(every)
    logs.raise_to_info()
    stopping = {"now": False}

    def stop(*_: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        _channels_in_force(ctx, strict=not file_outbox)
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
        help="queued, held, digested, merged, sent, partial or failed.")] = None,
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
    count = outbox.retry(st.runtime(writes=True), notification_id, by=by)
    if st.json:
        render.emit_json({"id": notification_id, "requeued": count})
    else:
        render.console.print(f"notification {render.esc(notification_id)}: {count} deliveries "
                             "queued again")


def register(app: typer.Typer) -> None:
    app.command()(tick)
    app.command()(dispatch)
    app.command()(run)
    app.add_typer(notifications_app, name="notifications")
    app.add_typer(channels_app, name="channels")


channels_app = typer.Typer(no_args_is_help=True, help="Check the channels file by sending to it.")


@channels_app.command("test")
def channels_test(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", metavar="PERSON", help="A person id: the test goes "
                                    "through every channel that reaches them.")],
) -> None:
    """Send one test message through each channel that reaches PERSON and report each result;
    exit 1 if any failed. Nothing is written to the database."""
    from qip_flow.notify.channels import person_tags
    from qip_flow.services.lifecycle import get_person

    st = state_of(ctx)
    rt = st.runtime()
    with rt.db.read() as session:
        person = get_person(session, to, flag="--to")
    channels = rt.channels
    reach = channels.for_person(person_tags(person.id, person.level, list(person.groups)),
                                person.email)
    if not reach:
        raise InvalidInput(f"--to: no channel in {channels.source} reaches {person.id} (no email "
                           "address, and no channel tagged with their id, level or groups)")
    subject = f"qip_flow test message for {person.name}"
    text = (f"This is a test from qip_flow at {rt.clock.now():%d %B %Y %H:%M} UTC, sent with "
            f"`qip channels test --to {person.id}`. If you can read it, this channel reaches you.")
    rows = []
    for channel in reach:
        result = channels.send(channel, email=person.email, subject=subject, text=text,
                               html=f"<p>{text}</p>", card=text)
        rows.append({"channel": channel.name, "to": channel.label, "ok": result.ok,
                     "error": result.error})
    if st.json:
        render.emit_json(rows)
    else:
        render.table(None, ["channel", "address", "result"],
                     [[r["channel"], r["to"], "sent" if r["ok"] else f"FAILED: {r['error']}"]
                      for r in rows])
    if not all(r["ok"] for r in rows):
        raise typer.Exit(1)
