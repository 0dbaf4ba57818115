"""Which Label Studio (address and key) a project's media and jobs are fetched with.

The environment's (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY) first; without an environment key, what a
project's own /setup brought, kept per project (the newest `_MAX_PROJECTS`). Never another project's:
anyone who can reach /setup could otherwise point every project's media (and its key) at a host of
their choosing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from core.settings import Settings
from core.tasks import project_key
from media.label_studio_client import LabelStudioClient

_MAX_PROJECTS = 256


class LabelStudioCredentials:
    """The credentials cache of one backend process, thread-safe (its own lock)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._env_auth = LabelStudioClient.from_settings(settings)
        # Credentials /setup brought, per Label Studio project (used when the environment has none).
        self._setup_auths: OrderedDict[str, LabelStudioClient] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, project: Any, hostname: str | None, access_token: str | None) -> None:
        """What /setup brought for `project`; ignored when the environment has a key (it always wins)."""
        if hostname and access_token and not self.settings.label_studio_api_key.get_secret_value():
            with self._lock:
                key = project_key(project) or ""
                self._setup_auths.pop(key, None)
                self._setup_auths[key] = LabelStudioClient(hostname, access_token)
                while len(self._setup_auths) > _MAX_PROJECTS:
                    self._setup_auths.popitem(last=False)

    def for_project(self, project: Any = None) -> LabelStudioClient | None:
        """Environment first (LABEL_STUDIO_URL/API_KEY); else what this project's own /setup brought."""
        if self._env_auth is not None and self._env_auth.configured:
            return self._env_auth
        with self._lock:
            auth = self._setup_auths.get(project_key(project) or "")
        return auth or self._env_auth
