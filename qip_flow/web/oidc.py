"""Single sign-on with OpenID Connect (Microsoft Entra ID, Google Workspace or any provider),
through Authlib. The provider is named in a small TOML file (``QIP_OIDC``)::

    [oidc]
    issuer = "https://login.microsoftonline.com/<tenant id>/v2.0"
    client_id = "<application (client) id>"
    client_secret_env = "QIP_OIDC_CLIENT_SECRET"   # the variable holding the secret
    label = "Sign in with your work account"

The secret stays in the environment. The state, nonce and PKCE verifier of a sign-in in progress
live in a short-lived cookie signed with its own subkey; the person is the organisation file's
person with the ID token's email address."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.middleware.sessions import SessionMiddleware

from qip_flow.errors import InvalidDefinition, Refused
from qip_flow.store.keys import subkey

STATE_COOKIE = "qip_oidc"


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    label: str = "Sign in with your work account"
    scopes: str = "openid email profile"

    @classmethod
    def load(cls, path: Path) -> OidcSettings:
        """Read the file; each missing or wrong value is named with the file and key."""
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8")).get("oidc")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise InvalidDefinition(f"{path}: cannot read the OIDC file ({exc})") from None
        if not isinstance(table, dict):
            raise InvalidDefinition(f"{path}: has no [oidc] table (docs/web.md shows one)")
        problems = [f"{path}: [oidc] {key}: missing; {hint}" for key, hint in (
            ("issuer", "the provider's issuer URL"), ("client_id", "the application's id"))
            if not isinstance(table.get(key), str) or not table[key]]
        unknown = set(table) - {"issuer", "client_id", "client_secret_env", "label", "scopes"}
        problems += [f"{path}: [oidc] {key}: unknown key" for key in sorted(unknown)]
        if "client_secret" in table:
            problems.append(f"{path}: [oidc] client_secret: the secret does not belong in a "
                            "file; name its environment variable in client_secret_env")
        variable = str(table.get("client_secret_env", "QIP_OIDC_CLIENT_SECRET"))
        secret = os.environ.get(variable, "")
        if not secret:
            problems.append(f"{path}: [oidc] client_secret_env: the environment variable "
                            f"{variable} is not set")
        if problems:
            raise InvalidDefinition(f"{path}: the OIDC file is refused", details=problems)
        return cls(table["issuer"].rstrip("/"), table["client_id"], secret,
                   str(table.get("label", cls.label)), str(table.get("scopes", cls.scopes)))


class OidcClient:
    def __init__(self, settings: OidcSettings) -> None:
        from authlib.integrations.starlette_client import OAuth

        self.settings, self.label = settings, settings.label
        self.oauth = OAuth()
        self.oauth.register(
            "provider", client_id=settings.client_id, client_secret=settings.client_secret,
            server_metadata_url=f"{settings.issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": settings.scopes, "code_challenge_method": "S256"})

    @classmethod
    def install(cls, app: FastAPI, path: Path | None, key: bytes, *, secure: bool
                ) -> OidcClient | None:
        if path is None:
            return None
        client = cls(OidcSettings.load(path))
        app.add_middleware(SessionMiddleware, secret_key=subkey(key, "oidc-state").hex(),
                           session_cookie=STATE_COOKIE, max_age=600, same_site="lax",
                           https_only=secure)
        return client

    async def start(self, request: Request, redirect_uri: str, next_path: str) -> Response:
        request.session["next"] = next_path
        return await self.oauth.provider.authorize_redirect(request, redirect_uri)

    async def finish(self, request: Request) -> tuple[str, str]:
        """The signed-in email address and where to go next."""
        from authlib.integrations.starlette_client import OAuthError

        try:
            token: dict[str, Any] = await self.oauth.provider.authorize_access_token(request)
        except OAuthError as exc:
            raise Refused(f"single sign-on did not complete ({exc.error}); try again") from None
        claims = token.get("userinfo") or {}
        email = claims.get("email") or claims.get("preferred_username") or ""
        if not isinstance(email, str) or "@" not in email:
            raise Refused("single sign-on gave no email address; ask your administrator to "
                          "release the email claim to qip_flow")
        return email, str(request.session.pop("next", "/"))
