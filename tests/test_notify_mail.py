"""qip_flow's own email sender (notify/mail.py) against a real SMTP server on loopback: the
headers it writes read back as written, and a relay that was down is tried again."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from notify_servers import free_port, smtp_server

from qip_flow.notify import mail
from qip_flow.notify.channels import Channels

SENDER = "qip@care.example"


def relay(port: int) -> mail.Relay:
    return mail.Relay("127.0.0.1", port, "insecure", None, None, SENDER, "qip_flow", True, 5.0)


def parsed(message: mail.Email) -> email.message.EmailMessage:
    return email.message_from_bytes(message.data, policy=email.policy.default)  # type: ignore[return-value]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200))
def test_any_subject_reads_back_as_one_header_with_its_words(subject: str) -> None:
    message = mail.build(relay(25), to="a@care.example", subject=subject, text="t", html="<p>h</p>")
    head = message.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    lines = head.split("\r\n")
    assert all(line.strip() for line in lines), "a folded header line is blank"
    assert all(len(line) <= 998 for line in lines)
    names = [line.split(":", 1)[0] for line in lines if not line[:1].isspace()]
    assert names.count("Subject") == 1 and "Bcc" not in names  # nothing injected
    got = parsed(message)
    expected = " ".join(subject.replace("\r", " ").replace("\n", " ").split())
    assert " ".join(str(got["Subject"]).split()) == expected


def test_an_ascii_subject_that_looks_encoded_is_not_decoded_by_the_reader() -> None:
    message = mail.build(relay(25), to="a@care.example", subject="=?utf-8?b?SGk=?= spoof",
                         text="t", html="h")
    assert str(parsed(message)["Subject"]) == "=?utf-8?b?SGk=?= spoof"


def test_an_address_that_is_not_ascii_leaves_a_valid_to_header() -> None:
    message = mail.build(relay(25), to="jö@care.example", subject="s", text="t", html="h")
    got = parsed(message)
    assert message.to == "jö@care.example"  # the envelope carries it
    assert not got["To"].defects
    assert str(got["To"]) == "undisclosed-recipients:;"


def test_a_relay_that_was_down_is_tried_again_after_a_pause() -> None:
    port = free_port()
    connection = mail.Connection(relay(port))
    message = mail.build(relay(port), to="a@care.example", subject="s", text="t", html="h")
    sent, why, permanent = connection.send(message)
    assert not sent and not permanent and "ConnectionRefused" in why
    with smtp_server(port=port) as server:
        assert connection.send(message) == (False, why, False)  # within the pause: not retried
        connection._unreachable_until -= mail.RETRY_CONNECT_AFTER  # the pause is over
        assert connection.send(message) == (True, "", False)
        connection.close()
        assert server.wait_for(1, timeout=10)
        assert server.messages[0].envelope_to == ["a@care.example"]


def test_a_send_that_raises_is_a_failed_try_not_a_stopped_dispatcher(tmp_path: Path) -> None:
    """A password smtplib cannot encode (it sends AUTH in ASCII) raises inside the send: the
    try fails with the reason, redacted, and the sender goes on to the next message."""
    with smtp_server(password="pässwörd") as server:
        path = tmp_path / "channels.yaml"
        path.write_text("version: 1\nurls:\n  - " + server.url(user="qip", password="pässwörd")
                        + ":\n      - name: email\n        tag: email\n", encoding="utf-8")
        channels = Channels.load(path, default_file=tmp_path / "x.log")
        channel = channels.by_name("email")
        assert channel is not None
        with channels.sending() as sender:
            result = sender.send(channel, email="a@care.example", subject="s", text="t",
                                 html="h", card="{}")
        assert not result.ok and not result.permanent
        assert "UnicodeEncodeError" in result.error and "pässwörd" not in result.error
        assert server.messages == []
