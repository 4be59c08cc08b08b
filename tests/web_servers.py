"""`qip serve` as a real process on a free loopback port, over a SQLite file with the examples
loaded and a channels file pointing at the SMTP sink, plus the steps the web tests share
(read a form's token, sign in by email link). Nothing here is a pytest plugin."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from notify_servers import SmtpServer, clean_env, load_examples, make_runtime, write_channels

from qip_flow.store.db import Database
from qip_flow.store.keys import ensure_key

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SIGN_IN_LINK = re.compile(r"http://127\.0\.0\.1:\d+/sign-in/email/[A-Za-z0-9_.%-]+")


@dataclass
class Served:
    """A running server: its address, database file, SMTP sink and process."""

    url: str
    db_file: Path
    smtp: SmtpServer
    process: subprocess.Popen[str]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30)


def prepare_database(folder: Path, smtp: SmtpServer) -> tuple[Path, Path]:
    """A simulation SQLite file with the examples loaded, its key file, and a channels file
    whose email relay is the SMTP sink."""
    db_file = folder / "qip.db"
    db = Database(f"sqlite:///{db_file}")
    db.init(simulation=True)
    channels = write_channels(folder / "channels.yaml", [(smtp.url(), "email")])
    load_examples(make_runtime(db, channels))
    with pytest.MonkeyPatch.context() as env:  # beside the database, whatever leaked before
        env.delenv("QIP_SECRET_KEY", raising=False)
        env.delenv("QIP_KEY_FILE", raising=False)
        ensure_key(db)
    db.dispose()
    return db_file, channels


def start_server(db_file: Path, port: int, *args: str, env: dict[str, str] | None = None,
                 log: Path) -> subprocess.Popen[str]:
    out = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "qip_flow", "--db", str(db_file), "serve", "--port", str(port),
         *args], stdout=out, stderr=subprocess.STDOUT, text=True, env=clean_env(env),
        cwd=db_file.parent)


def wait_until_up(url: str, process: subprocess.Popen[str], log: Path,
                  timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"qip serve exited {process.returncode}: {log.read_text()}")
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"qip serve did not answer within {timeout} s: {log.read_text()}")


@contextmanager
def running(db_file: Path, *args: str, env: dict[str, str] | None = None,
            port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """``qip serve`` on ``db_file`` on a free loopback port (or ``port``) until the block ends:
    its address, process and log."""
    from notify_servers import free_port

    port, log = port or free_port(), db_file.parent / "serve.log"
    url = f"http://127.0.0.1:{port}"
    process = start_server(db_file, port, *args, log=log, env={"QIP_BASE_URL": url, **(env or {})})
    try:
        wait_until_up(url, process, log)
        yield url, process, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def served(folder: Path, smtp: SmtpServer, *args: str, env: dict[str, str] | None = None,
           prepare: Callable[[Path, Path, str], None] | None = None) -> Iterator[Served]:
    """The server over a prepared database; ``prepare(db_file, channels, url)`` may play a
    scenario on it first (the server starts after it)."""
    from notify_servers import free_port

    folder.mkdir(parents=True, exist_ok=True)
    db_file, channels = prepare_database(folder, smtp)
    port = free_port()
    if prepare is not None:
        prepare(db_file, channels, f"http://127.0.0.1:{port}")
    with running(db_file, *args, port=port, env={"QIP_CHANNELS": str(channels), **(env or {})}
                 ) as (url, process, log):
        yield Served(url, db_file, smtp, process, log)


def form_token(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form token"
    return found.group(1)


def ask_for_link(client: httpx.Client, email: str) -> httpx.Response:
    page = client.get("/sign-in")
    return client.post("/sign-in/email", data={"email": email, "csrf_token": form_token(page.text)})


def emailed_link(smtp: SmtpServer, count: int) -> str:
    """The sign-in link in the ``count``-th message the sink received."""
    assert smtp.wait_for(count, timeout=30), "no sign-in email arrived"
    mail = smtp.messages[count - 1]
    found = SIGN_IN_LINK.search(mail.text + mail.html)
    assert found, mail.text
    return found.group(0)


def use_link(client: httpx.Client, link: str) -> httpx.Response:
    """Open the emailed link and press Continue."""
    path = link.split("://", 1)[1].split("/", 1)[1]
    page = client.get("/" + path)
    return client.post("/" + path, data={"csrf_token": form_token(page.text)})


def sign_in_by_email(served: Served, client: httpx.Client, email: str) -> httpx.Response:
    before = len(served.smtp.messages)
    assert ask_for_link(client, email).status_code == 303
    return use_link(client, emailed_link(served.smtp, before + 1))
