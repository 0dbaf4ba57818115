"""HTTP Basic auth for every route, on when BASIC_AUTH_USER and BASIC_AUTH_PASS are set."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from core.errors import AuthError
from core.settings import Settings


def basic_auth_dependency(settings: Settings) -> Callable[[Request], Awaitable[None]]:
    user = settings.basic_auth_user.encode()
    password = settings.basic_auth_pass.get_secret_value().encode()

    async def check(request: Request) -> None:  # async: never waits for a thread busy predicting
        if not (user and password):
            return
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        given_user, given_password = b"", b""
        if scheme.lower() == "basic":
            with contextlib.suppress(binascii.Error, ValueError):
                given_user, _, given_password = base64.b64decode(encoded, validate=True).partition(b":")
        # Compare both parts always, in constant time, so timing tells nothing about which was wrong.
        user_ok = hmac.compare_digest(given_user, user)
        password_ok = hmac.compare_digest(given_password, password)
        if not (user_ok and password_ok):
            raise AuthError("authentication required: this backend uses HTTP Basic auth")

    return check
