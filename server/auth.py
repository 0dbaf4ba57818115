"""HTTP Basic auth for every route, on when BASIC_AUTH_USER and BASIC_AUTH_PASS are set.

An ASGI middleware, outermost: a request without the credentials is answered 401 from its headers
alone, before any of its body is read or parsed (so an anonymous client cannot make the server buffer
and parse MAX_REQUEST_BYTES), and without waiting for a thread that runs a prediction.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from core.settings import Settings

AUTH_REQUIRED = "authentication required: this backend uses HTTP Basic auth"


class BasicAuth:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self._user = settings.basic_auth_user.encode()
        self._password = settings.basic_auth_pass.get_secret_value().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._user or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        answer = JSONResponse(
            {"error": AUTH_REQUIRED}, status_code=401, headers={"WWW-Authenticate": "Basic"}
        )
        await answer(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, encoded = header.partition(" ")
        given_user, given_password = b"", b""
        if scheme.lower() == "basic":
            with contextlib.suppress(binascii.Error, ValueError):
                given_user, _, given_password = base64.b64decode(encoded, validate=True).partition(b":")
        # Compare both parts always, in constant time, so timing tells nothing about which was wrong.
        user_ok = hmac.compare_digest(given_user, self._user)
        password_ok = hmac.compare_digest(given_password, self._password)
        return user_ok and password_ok
