"""Authenticated access to Label Studio's REST API.

Label Studio 1.23 accepts two kinds of API key:
- a legacy token (40 hex characters), sent as `Authorization: Token <key>` (only when legacy tokens
  are enabled in the organisation);
- a personal access token, which is a JWT *refresh* token: it is exchanged at `/api/token/refresh/`
  for an access token that lives 5 minutes, sent as `Authorization: Bearer <access>`.
`LabelStudioAuth` tells them apart by their shape and renews access tokens before they expire.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import requests

from core.errors import LabelStudioAccessError

# Renew an access token this many seconds before Label Studio would refuse it.
_RENEW_MARGIN_S = 30.0


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (unverified: we only use it to know when to renew), or None."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return float(json.loads(base64.urlsafe_b64decode(payload))["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def is_personal_access_token(api_key: str) -> bool:
    return api_key.count(".") == 2 and _jwt_expiry(api_key) is not None


class LabelStudioAuth:
    """Authorization headers for one Label Studio URL and API key, thread-safe."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._access_token = ""
        self._access_expiry = 0.0
        self._lock = threading.Lock()
        self._sessions = threading.local()  # a requests.Session per thread: kept-alive connections

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioAuth({self.base_url!r})"

    @property
    def api_key(self) -> str:
        """The key as given (handed to a training job's process through its environment only)."""
        return self._api_key

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self._api_key)

    def headers(self) -> dict[str, str]:
        if not self._api_key:
            return {}
        if not is_personal_access_token(self._api_key):
            return {"Authorization": f"Token {self._api_key}"}
        with self._lock:
            if time.time() > self._access_expiry - _RENEW_MARGIN_S:
                self._refresh()
            return {"Authorization": f"Bearer {self._access_token}"}

    def _refresh(self) -> None:
        try:
            # Never redirected: a 307/308 would send the personal access token, in the body, elsewhere.
            response = self._session().post(
                f"{self.base_url}/api/token/refresh/",
                json={"refresh": self._api_key},
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise LabelStudioAccessError(
                f"Label Studio at {self.base_url} is not reachable ({type(error).__name__})"
            ) from None
        if response.is_redirect:
            raise LabelStudioAccessError(
                f"Label Studio at {self.base_url} answered the token exchange with a redirect (HTTP "
                f"{response.status_code}), which is not followed with the key; set LABEL_STUDIO_URL to the "
                "address Label Studio answers on itself"
            )
        if response.status_code != 200:
            raise LabelStudioAccessError(
                "Label Studio refused the personal access token in LABEL_STUDIO_API_KEY "
                f"(HTTP {response.status_code}); create a new one in Account & Settings"
            )
        try:
            access = response.json()["access"]
        except (ValueError, TypeError, KeyError):
            access = None
        if not isinstance(access, str) or not access:
            raise LabelStudioAccessError(
                f"Label Studio at {self.base_url} answered the token exchange without an access token; "
                "is LABEL_STUDIO_URL the address of Label Studio?"
            )
        self._access_token = access
        self._access_expiry = _jwt_expiry(access) or (time.time() + 240)

    def _session(self) -> requests.Session:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session
