"""ASGI middleware that caps request bodies (MAX_REQUEST_BYTES)."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Answer 413 to a request body over MAX_REQUEST_BYTES, declared (Content-Length) or chunked.

    The body is read here, at most `max_bytes` of it kept, and handed to the app in one piece (FastAPI
    reads it whole anyway). A body over the limit is drained, not kept, before the 413 goes out, so an
    HTTP client still sending it reads the answer instead of a reset connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        too_large = False
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not too_large:
                body += message.get("body", b"")
                too_large = len(body) > self.max_bytes
                if too_large:
                    body = bytearray()
            more_body = message.get("more_body", False)
        if too_large:
            error = f"request body over the limit of {self.max_bytes} bytes (MAX_REQUEST_BYTES)"
            await JSONResponse({"error": error}, status_code=413)(scope, receive, send)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the client to go away
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)
