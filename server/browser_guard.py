"""ASGI middleware: answers no browser can be made to misuse.

- Every answer carries `X-Content-Type-Options: nosniff` (a JSON answer is never run as a script or
  shown as HTML), `X-Frame-Options: DENY` and a Content-Security-Policy with `frame-ancestors 'none'`:
  no page of another site can frame the try-it page and have a user click its buttons. The try-it page
  gets a policy that lets it load its own script, style and the user's own files (blob:) only.
- A request that changes state (POST, PUT, PATCH, DELETE) sent by a browser from another site is
  refused with 403 before anything else happens: `Sec-Fetch-Site: cross-site` or `same-site` (every
  current browser sends it), or, from a browser that does not send it, an `Origin` that is not this
  server's own (the `Host` it was called on). A browser would otherwise attach basic-auth credentials
  it remembers, or reach a backend on the user's network that has none. Label Studio's calls and
  scripts (no `Origin`, no `Sec-Fetch-Site`) are not affected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_POLICY = "default-src 'none'; frame-ancestors 'none'"
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
CROSS_SITE = "refused: a request that changes state from a page of another site ({why})"


class BrowserGuard:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = PAGE_POLICY if scope.get("path", "").startswith("/ui") else API_POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", policy.encode()),
                    (b"referrer-policy", b"no-referrer"),
                ]
            await send(message)

        why = cross_site(scope)
        if why:
            await JSONResponse({"error": CROSS_SITE.format(why=why)}, status_code=403)(
                scope, receive, with_headers
            )
            return
        await self.app(scope, receive, with_headers)


def cross_site(scope: Scope) -> str | None:
    """Why a state-changing request comes from another site's page, or None when it does not."""
    if scope.get("method", "GET").upper() not in STATE_CHANGING:
        return None
    headers = dict(scope.get("headers") or [])
    fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {fetch_site}"
    if fetch_site:  # same-origin, none (typed by the user)
        return None
    origin = headers.get(b"origin", b"").decode("latin-1").strip()
    if not origin:
        return None  # not a browser's cross-origin request (Label Studio, curl, scripts)
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    parsed = urlsplit(origin)
    if origin == "null" or not parsed.netloc or parsed.netloc.lower() != host:
        return f"Origin: {origin[:100]}"
    return None
