"""``qip token create|list|revoke``: API tokens for other systems (docs/api.md). A token is
printed once, when made; only its hash is kept."""

from __future__ import annotations

from typing import Annotated

import typer

from qip_flow.cli import render
from qip_flow.cli.state import state_of
from qip_flow.clock import parse_day

token_app = typer.Typer(no_args_is_help=True, help="API tokens for other systems: a named "
                        "service account with scopes, the plans it may touch, and a last day.")


@token_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="The service account's name, e.g. emar-feed.")],
    scope: Annotated[list[str], typer.Option(
        help="What it may do: measurements:write, plans:read, reports:read, export:read, "
        "webhooks:write (repeatable or comma-separated).")],
    plans: Annotated[list[str], typer.Option(
        help="Which plans: 'service:Maple House', 'plan:QIP-2026-014' or 'all' (repeatable).")],
    by: Annotated[str, typer.Option(help="The administrator issuing it (their id).")],
    expires: Annotated[str | None, typer.Option(
        metavar="DATE", help="Its last day (default: a year from today).")] = None,
) -> None:
    """Make a token and print it once (only its hash is kept): give it to the system that
    will use it, as `Authorization: Bearer TOKEN`."""
    from qip_flow.services import tokens

    st = state_of(ctx)
    token, row = tokens.create(st.runtime(writes=True), name=name, scopes=scope, plans=plans,
                               by=by, expires=parse_day(expires, field="--expires")
                               if expires else None)
    if st.json:
        render.emit_json({"name": row.name, "token": token, "scopes": row.scopes,
                          "expires": row.expires.isoformat() if row.expires else None})
        return
    render.console.print(f"token for {render.esc(row.name)} (scopes "
                         f"{render.esc(', '.join(row.scopes))}; last day {row.expires}):")
    typer.echo(token)
    render.errors.print("It is shown this once: store it in the other system's secrets now.")


@token_app.command("list")
def list_tokens(ctx: typer.Context) -> None:
    """Every token: name, scopes, plans, state (live, expired, revoked), last use."""
    from qip_flow.services import tokens

    st = state_of(ctx)
    rows = tokens.listing(st.runtime())
    if st.json:
        render.emit_json(rows)
        return
    render.table(None, ["name", "token", "scopes", "for", "state", "last day", "last used"],
                 [[r["name"], r["hint"], ", ".join(r["scopes"]), r["for"], r["state"],
                   r["expires"] or "", (r["last_used"] or "never")[:16]] for r in rows])


@token_app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The token's name.")],
    by: Annotated[str, typer.Option(help="The administrator revoking it (their id).")],
) -> None:
    """Revoke a token at once: its next request is refused (401)."""
    from qip_flow.services import tokens

    st = state_of(ctx)
    count = tokens.revoke(st.runtime(writes=True), name, by=by)
    if st.json:
        render.emit_json({"name": name, "revoked": count})
    else:
        render.console.print(render.esc(f"{name}: {count} token(s) revoked"))


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
