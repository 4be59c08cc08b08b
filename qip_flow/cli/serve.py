"""``qip serve``: the web pages (FastAPI on uvicorn) over the same services as the commands."""

from __future__ import annotations

from typing import Annotated

import typer

from qip_flow.cli import render
from qip_flow.cli.notify import parse_every
from qip_flow.cli.state import state_of
from qip_flow.errors import InvalidInput


def _period(value: str | None, setting: str, default: str) -> float:
    try:
        return parse_every(value or default)
    except InvalidInput:
        raise InvalidInput(f"{setting}: '{value}' is not a period; write e.g. 30m or 12h") from None


def _whole(value: str | None, setting: str, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        raise InvalidInput(f"{setting}: '{value}' is not a whole number") from None


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="NUMBER", help="Port to listen on.")] = 8000,
    dev_login: Annotated[bool, typer.Option("--dev-login", help="Offer \"choose a demo person\" "
                                            "(a loopback --host only; never in production).")] = False,
) -> None:
    """Serve the web pages: sign-in, people's work, plans and actions. Put a reverse proxy with
    TLS in front of it (docs/web.md); set QIP_BASE_URL to the address people use."""
    from datetime import timedelta

    import uvicorn

    from qip_flow.services.identity import Lifetimes, key_of, link_days
    from qip_flow.web.app import create_app
    from qip_flow.web.config import WebSettings

    st = state_of(ctx)
    if not 0 < port < 65536:
        raise InvalidInput(f"--port: {port} is not a port number (1-65535)")
    values = {key: value.value for key, value in st.settings.items()}
    rt = st.runtime()
    key_of(rt)  # refuse to start without a secret key, before listening
    base_url = values.get("base_url") or f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    oidc = values.get("oidc")
    from pathlib import Path

    settings = WebSettings(
        base_url=base_url, host=host, dev_login=dev_login, oidc_file=Path(oidc) if oidc else None,
        lifetimes=Lifetimes(
            idle=timedelta(seconds=_period(values.get("session_idle"), "QIP_SESSION_IDLE", "30m")),
            absolute=timedelta(seconds=_period(values.get("session_max"), "QIP_SESSION_MAX", "12h")),
            deep_link=timedelta(days=link_days(values.get("link_days")))),
        api_rate_per_minute=_whole(values.get("api_rate"), "QIP_API_RATE", 600),
        api_max_body=_whole(values.get("api_max_body"), "QIP_API_MAX_BODY", 26) * 1024 * 1024)
    app = create_app(rt, settings)
    render.errors.print(f"qip_flow serving {rt.db.shown_url} on http://{host}:{port} "
                        f"(links use {base_url}){' with the development sign-in' if dev_login else ''}")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=True,
                forwarded_allow_ips="127.0.0.1", server_header=False)


def register(app: typer.Typer) -> None:
    app.command()(serve)
