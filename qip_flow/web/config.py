"""The web server's settings, in one object built once when the server starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qip_flow.errors import InvalidInput
from qip_flow.services.identity import Lifetimes

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class WebSettings:
    """``base_url`` is where people reach the pages (links in messages and emails use it;
    cookies are Secure when it is https); ``dev_login`` offers "choose a demo person", only on
    a loopback address; ``oidc_file`` names the single sign-on settings, if any."""

    base_url: str
    host: str = "127.0.0.1"
    dev_login: bool = False
    oidc_file: Path | None = None
    lifetimes: Lifetimes = field(default_factory=Lifetimes)
    api_rate_per_minute: int = 600  # each API caller's requests a minute, per server process
    api_max_body: int = 26 * 1024 * 1024  # the largest API request body, in bytes

    def __post_init__(self) -> None:
        if self.dev_login and self.host not in LOOPBACK:
            raise InvalidInput(f"--dev-login: the development sign-in lets anyone act as anyone, "
                               f"so it is offered only on a loopback address; --host is "
                               f"{self.host}. Leave out --dev-login, or use --host 127.0.0.1")
        if not 1 <= self.api_rate_per_minute <= 1_000_000:
            raise InvalidInput(f"QIP_API_RATE: {self.api_rate_per_minute} requests a minute; "
                               "give 1 to 1000000")
        if not 1024 <= self.api_max_body <= 1024 ** 3:
            raise InvalidInput(f"QIP_API_MAX_BODY: {self.api_max_body} bytes; give 1 KB to 1 GB")
        if not self.base_url.startswith(("http://", "https://")):
            raise InvalidInput(f"QIP_BASE_URL: '{self.base_url}' must start with https:// "
                               "(or http:// for a server on this machine only)")

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")
