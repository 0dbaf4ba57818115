"""ASGI middleware that caps request bodies (MAX_REQUEST_BYTES) without holding them.

- A body whose `Content-Length` is over the limit is answered 413 at once, from the headers: nothing of
  it is read (a client that sent `Expect: 100-continue` never sends it).
- Otherwise the body streams through to the app as it arrives (the try-it page's multipart upload is
  spooled to disk part by part by Starlette, never held whole in memory here), counted on the way: once
  a chunked body passes the limit, the rest is drained unkept, the app reads a disconnect, and the
  answer is the 413, so an HTTP client still sending reads it instead of a reset connection.
- At most `max_uploads` multipart uploads are read at once per worker process; one more is answered
  429 before its body is read (each reads up to MAX_REQUEST_BYTES to disk and then decodes it).
"""

from __future__ import annotations

import threading

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_uploads: int = 4):
        self.app = app
        self.max_bytes = max_bytes
        self._uploads = threading.BoundedSemaphore(max_uploads)
        self.max_uploads = max_uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"error": self._too_large()}, status_code=413)(scope, receive, send)
            return
        is_upload = headers.get(b"content-type", b"").lower().startswith(b"multipart/")
        if is_upload and not self._uploads.acquire(blocking=False):
            error = f"{self.max_uploads} uploads are being read already (MAX_CONCURRENT_UPLOADS); try again shortly"
            await JSONResponse({"error": error}, status_code=429, headers={"Retry-After": "2"})(
                scope, receive, send
            )
            return
        try:
            await self._limited(scope, receive, send)
        finally:
            if is_upload:
                self._uploads.release()

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app on a counted body; past the limit the app reads a disconnect and its answer (it
        could not read the body) is replaced by the 413."""
        received, too_large = 0, False

        async def counted() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                too_large = True
                more = message.get("more_body", False)
                while more:  # drain what the client still sends, keeping none of it
                    message = await receive()
                    more = message["type"] == "http.request" and message.get("more_body", False)
                return {"type": "http.disconnect"}
            return message

        async def answer(message: Message) -> None:
            if not too_large:
                await send(message)

        try:
            await self.app(scope, counted, answer)
        except Exception:
            if not too_large:
                raise
        if too_large:
            await JSONResponse({"error": self._too_large()}, status_code=413)(scope, receive, send)

    def _too_large(self) -> str:
        return f"request body over the limit of {self.max_bytes} bytes (MAX_REQUEST_BYTES)"
