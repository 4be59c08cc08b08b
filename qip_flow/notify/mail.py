"""Email as qip_flow writes it: a multipart/alternative message whose text part is our own
text (not a conversion of the HTML) beside the HTML part, sent to the relay of the channels
file's ``mailto://`` / ``mailtos://`` URL. Apprise reads the URL (host, port, TLS mode, login,
sender) when the channels file is read; the message is built here (:func:`build`) and sent
with ``smtplib`` on a :class:`Connection` kept for a batch, so sending email needs no Apprise
and pays one handshake per batch, not per message."""

from __future__ import annotations

import base64
import contextlib
import secrets
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr, make_msgid
from functools import cache
from typing import Any

SENDER_NAME = "qip_flow"
#: SMTP replies a retry will not change: the mailbox or the sender is refused
PERMANENT_CODES = range(550, 555)
#: seconds a relay that could not be reached is left alone before the next message tries again
#: (a dispatch run can outlast a relay's restart; its back-off must not spend every try at once)
RETRY_CONNECT_AFTER = 30.0


@dataclass(frozen=True)
class Relay:
    """Where and how to reach the SMTP relay, as Apprise reads its URL."""

    host: str
    port: int
    mode: str  # insecure, starttls or ssl
    user: str | None
    password: str | None
    sender: str
    sender_name: str
    verify: bool
    timeout: float

    @classmethod
    def from_service(cls, service: Any) -> Relay | None:
        """The relay of Apprise's email service as it read the channels file's URL (read once,
        with the file: sending needs no Apprise)."""
        if not hasattr(service, "smtp_host"):
            return None
        name, address = service.from_addr
        return cls(service.smtp_host, int(service.port), str(service.secure_mode),
                   service.user or None, service.password or None, address,
                   name or SENDER_NAME, bool(service.verify_certificate),
                   float(service.socket_connect_timeout))


@dataclass(frozen=True)
class Email:
    """One message ready for the relay: its envelope and its bytes (CRLF lines, 7-bit)."""

    sender: str
    to: str
    data: bytes


def build(relay: Relay, *, to: str, subject: str, text: str, html: str,
          headers: dict[str, str] | None = None) -> Email:
    """One message to ``to``: a multipart/alternative, our text part first and the HTML part
    as the alternative, each UTF-8 in base64. Written out directly rather than through
    :mod:`email`'s generator, whose header folding cost more than the rest of a send (a long
    non-ASCII subject alone ~3 ms); :func:`header` keeps the spaces between encoded words."""
    boundary = f"=_qip_{secrets.token_hex(12)}"
    lines = [f"From: {formataddr((relay.sender_name, relay.sender))}",
             f"To: {to if to.isascii() else 'undisclosed-recipients:;'}",  # envelope has it
             f"Subject: {header(subject)}",
             f"Date: {format_datetime(datetime.now(UTC))}",  # the real time it is written
             f"Message-ID: {make_msgid(domain=relay.sender.rsplit('@', 1)[-1] or None)}",
             "Auto-Submitted: auto-generated",  # RFC 3834: no out-of-office replies
             *(f"{name}: {header(value)}" for name, value in (headers or {}).items()),
             "MIME-Version: 1.0",
             f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
    for kind, body in (("plain", text), ("html", html)):
        lines += [f"--{boundary}", f'Content-Type: text/{kind}; charset="utf-8"',
                  "Content-Transfer-Encoding: base64", "",
                  base64.encodebytes(body.encode()).decode("ascii").replace("\n", "\r\n")]
    lines += [f"--{boundary}--", ""]
    return Email(relay.sender, to, "\r\n".join(lines).encode("ascii"))


def header(value: str) -> str:
    """A header value in 7-bit lines of at most 78 characters: printable ASCII folded at its
    spaces; anything else as RFC 2047 encoded words (base64 of UTF-8, whole characters, at
    most 75 characters each), the spaces inside the words so that none is lost. Line breaks in
    the value become spaces: a value never starts a header of its own, and printable ASCII that
    holds ``=?`` is encoded too, so it cannot pass for an encoded word of ours."""
    value = value.replace("\r", " ").replace("\n", " ")
    if value.isascii() and value.isprintable() and "=?" not in value:  # "=?" would decode
        if len(value) <= 64:
            return value
        lines, line = [], ""
        for word in value.split(" "):
            if line.strip() and word and len(line) + 1 + len(word) > 64:  # no blank lines
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        return "\r\n ".join([*lines, line])
    words, chunk, size = [], [], 0
    for char in value:
        length = len(char.encode())
        if size + length > 42:  # 42 bytes → 56 base64 characters: a 68-character word
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += length
    words.append("".join(chunk))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w.encode()).decode('ascii')}?="
                          for w in words)


@cache
def _context(verify: bool) -> ssl.SSLContext:
    """One TLS context per process (building one reads the CA store: ~35 ms each)."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect(relay: Relay) -> smtplib.SMTP:
    """A connection to the relay, secured and logged in as its URL says. A TLS context is made
    only when TLS is used, once per process."""
    if relay.mode == "ssl":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(relay.host, relay.port, timeout=relay.timeout,
                                              context=_context(relay.verify))
    else:
        smtp = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
    try:
        if relay.mode == "starttls":
            smtp.starttls(context=_context(relay.verify))
        if relay.user and relay.password:
            smtp.login(relay.user, relay.password)
    except BaseException:
        smtp.close()
        raise
    return smtp


#: (sent, what went wrong, permanent: a retry will not change it)
Outcome = tuple[bool, str, bool]


class Connection:
    """One SMTP connection to a relay for a run of messages: opened at the first message and
    kept, so a run pays one handshake (and one TLS negotiation) instead of one per message.
    A refused recipient fails only its own message; a connection the relay dropped (an idle
    timeout, a per-connection message limit answered with 421) is reopened once and the
    message sent again; a relay that cannot be reached fails the next messages at once with the
    same reason for :data:`RETRY_CONNECT_AFTER` seconds, then is tried again (each message
    failed meanwhile is retried later by the outbox)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.where = f"SMTP {relay.host}:{relay.port}"
        self.opened = 0  # connections made: one per batch unless the relay dropped one
        self._smtp: smtplib.SMTP | None = None
        self._unreachable = ""
        self._unreachable_until = 0.0  # time.monotonic() after which we try to connect again

    def send(self, message: Email) -> Outcome:
        """Send one message: (sent, what went wrong, permanent)."""
        if self._unreachable and time.monotonic() < self._unreachable_until:
            return False, self._unreachable, False
        for last_try in (False, True):
            fresh = self._smtp is None
            try:
                smtp = self._open()
            except (smtplib.SMTPException, OSError) as exc:
                self._unreachable = f"{self.where}: {type(exc).__name__}: {exc}"
                self._unreachable_until = time.monotonic() + RETRY_CONNECT_AFTER
                return False, self._unreachable, False
            try:
                refused = smtp.sendmail(message.sender, [message.to], message.data,
                                        self._options(smtp, message))
            except smtplib.SMTPNotSupportedError as exc:
                return False, f"{self.where}: {exc}", True
            except smtplib.SMTPRecipientsRefused as exc:  # the connection stays usable
                code = next(iter(exc.recipients.values()))[0] if exc.recipients else 0
                return False, f"{self.where}: recipient refused ({code})", \
                    code in PERMANENT_CODES
            except smtplib.SMTPResponseException as exc:  # smtplib reset the transaction
                if exc.smtp_code != 421:
                    return False, f"{self.where}: {exc.smtp_code} {_text(exc.smtp_error)}", \
                        exc.smtp_code in PERMANENT_CODES
                self.close()  # 421: the relay is closing this connection
                if fresh or last_try:
                    return False, f"{self.where}: 421 {_text(exc.smtp_error)}", False
                continue
            except OSError as exc:  # dropped (SMTPServerDisconnected, a reset) or confused
                self.close()
                if fresh or last_try or not isinstance(
                        exc, smtplib.SMTPServerDisconnected | ConnectionError):
                    return False, f"{self.where}: {type(exc).__name__}: {exc}", False
                continue
            if refused:
                return False, f"{self.where}: recipient refused ({', '.join(refused)})", True
            return True, "", False
        raise AssertionError("unreachable")  # pragma: no cover — the loop always returns

    def _options(self, smtp: smtplib.SMTP, message: Email) -> tuple[str, ...]:
        """SMTPUTF8 for an address that is not ASCII, if the relay offers it."""
        if (message.sender + message.to).isascii():
            return ()
        smtp.ehlo_or_helo_if_needed()
        if not smtp.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError(
                f"the address {message.to!r} needs SMTPUTF8, which this relay does not offer")
        return ("SMTPUTF8",)

    def _open(self) -> smtplib.SMTP:
        if self._smtp is None:
            self._smtp = connect(self.relay)
            self.opened += 1
        return self._smtp

    def close(self) -> None:
        """Say goodbye (QUIT) if the relay still listens; a dropped connection is just let go."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            smtp.close()


def send(relay: Relay, message: Email) -> Outcome:
    """One message on a connection of its own."""
    connection = Connection(relay)
    try:
        return connection.send(message)
    finally:
        connection.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
