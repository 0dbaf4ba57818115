"""Run a real Label Studio 1.23.2 from the test suite, and talk to its REST API.

Label Studio lives in its own virtualenv (its pins differ from ours), created by
``.ci/install_label_studio.sh`` at ``${LS_VENV:-$HOME/.cache/ylsb/ls-venv-1.23.2}``.
:class:`LabelStudioServer` starts ``label-studio start`` from it on a free port of 127.0.0.1 with a
throw-away data directory, and stops it (its whole process group) at the end. :class:`LabelStudioAPI`
is a small ``requests`` client for what the tests do. :class:`RecordingMLBackend` is a stub ML backend
(stdlib ``http.server``) that records every request Label Studio makes to it.

API authentication in Label Studio 1.23.2 (verified against the running server)
===============================================================================
Two kinds of API key exist; which ones the API accepts is a per-organization setting,
``GET/POST /api/jwt/settings`` -> ``{"api_tokens_enabled": bool, "legacy_api_tokens_enabled": bool}``.
A fresh install answers ``{"api_tokens_enabled": true, "legacy_api_tokens_enabled": false}``.

1. **Personal access token (PAT)** - the default, and what the UI's "Account & Settings" page shows.
   It is a JWT *refresh* token (three dot-separated base64url parts; payload
   ``{"token_type": "refresh", "exp": <now + 200 years>, "iat", "jti", "user_id": "1"}``, signed with
   the instance's ``SECRET_KEY``). It is NOT accepted on API calls directly: ``Authorization: Bearer
   <PAT>`` and ``Authorization: Token <PAT>`` both answer 401. Exchange it first::

       POST /api/token/refresh/   {"refresh": "<PAT>"}   (no Authorization header needed)
       -> 200 {"access": "<JWT access token>"}         (payload token_type "access", exp = iat + 300 s)

   then send ``Authorization: Bearer <access>``. The refresh does not rotate the PAT (no new
   ``refresh`` in the answer; the same PAT can be exchanged again and again), so a client keeps the PAT
   and asks for a new access token shortly before ``exp`` (or after a 401). A JWT whose
   ``token_type`` is ``refresh`` is a PAT; anything else is a legacy key.

   Creating a PAT needs an authenticated user: ``POST /api/token/`` (empty body) -> 201
   ``{"token": "<PAT>"}``; the full token is shown only this once (``GET /api/token/`` lists
   truncated tokens without signatures), and a second ``POST`` answers 409 "You already have a valid
   token. Please revoke it before creating a new one." until the existing one is revoked
   (``POST /api/token/blacklist/ {"refresh": PAT}``; ``POST /api/token/rotate/ {"refresh": PAT}``
   blacklists it and answers ``{"refresh": <new PAT>}``). There is no environment variable that sets a
   PAT, so the harness obtains one non-interactively with the user's email and password:

       GET  /user/login/                      -> cookies csrftoken + sessionid, and the HTML form's
                                                 hidden ``csrfmiddlewaretoken``
       POST /user/login/  form: email, password, csrfmiddlewaretoken (+ Referer header)
                                              -> 302 to "/" and an authenticated session cookie
                                                 (without the CSRF token: 403)
       POST /api/token/   with that session (X-CSRFToken header, Referer) -> 201 {"token": PAT}

   (:meth:`LabelStudioServer.create_personal_access_token`). The same session can also read the
   legacy key: ``GET /api/current-user/token`` -> ``{"token": "<legacy key>"}``.

2. **Legacy token** - ``Authorization: Token <key>``, a fixed 40-hex key per user
   (``LABEL_STUDIO_USER_TOKEN`` sets it for the user created at start, if longer than 5 characters).
   With the defaults above every request with it answers **401** "Authentication token no longer
   valid: legacy token authentication has been disabled for this organization". It works when the
   organization was created with ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true`` in the environment of
   the FIRST start (or ``label-studio start --enable-legacy-api-token``; it only matters when the
   organization is created), or after ``POST /api/jwt/settings {"api_tokens_enabled": true,
   "legacy_api_tokens_enabled": true}`` made with any valid auth (takes effect at once; both key kinds
   then work). Label Studio itself sends the project creator's legacy key to a backend as
   ``access_token`` in ``POST /setup``; it is useless while legacy tokens are off.

Unauthenticated API calls and media fetches (``/data/upload/...``) answer 401.

What the harness sets up
========================
``LabelStudioServer`` creates the user ``username``/``password`` non-interactively through
``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD`` / ``LABEL_STUDIO_USER_TOKEN`` (the last one is
``legacy_token``, the user's legacy key), keeps legacy tokens disabled unless
``legacy_api_tokens=True`` (which sets ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``), and after the
server is healthy creates a PAT as described above (``server.personal_access_token``) and an API client
using it (``server.api``). Other environment: no telemetry / Sentry / version check,
``LABEL_STUDIO_ML_BLOCK_LOCAL_IP=false`` and ``LABEL_STUDIO_SSRF_PROTECTION_ENABLED=false`` (else a
backend on 127.0.0.1 is refused), local file serving enabled with the document root
``server.document_root`` (a local storage must point at a directory strictly below it), the working
directory inside the throw-away folder. ``label-studio start`` silently moves to the next free port when
the requested one is taken; the harness reads the real port from the "Starting development server at
http://127.0.0.1:PORT/" line of its log. The first start on an empty data dir runs the migrations
(about 1 min on 2 busy cores); ``seed_database=<other server>.database`` starts on a copy of a migrated
database instead (about 10 s).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

LABEL_STUDIO_VERSION = "1.23.2"
INSTALL_SCRIPT = ".ci/install_label_studio.sh"

DEFAULT_USERNAME = "e2e@example.com"
DEFAULT_PASSWORD = "e2e-password-123"
DEFAULT_LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"

_SERVER_LINE = re.compile(r"Starting development server at http://([^:/\s]+):(\d+)/")
_PORT_TAKEN = re.compile(r"port is already in use|Address already in use")
_START_ATTEMPTS = 3


class LabelStudioNotInstalledError(RuntimeError):
    """The Label Studio virtualenv is missing or broken."""


class LabelStudioStartError(RuntimeError):
    """Label Studio did not come up; the message holds the tail of its log."""


def default_venv() -> Path:
    """Where ``.ci/install_label_studio.sh`` puts the Label Studio virtualenv (``$LS_VENV`` wins)."""
    env = os.environ.get("LS_VENV")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ylsb" / f"ls-venv-{LABEL_STUDIO_VERSION}"


def check_installation(venv: Path | str | None = None) -> Path:
    """Return the ``label-studio`` executable of ``venv``; raise :class:`LabelStudioNotInstalledError`.

    Checks with ``python -c "import label_studio"`` (never ``label-studio --version``: that starts a
    server).
    """
    venv = Path(venv) if venv is not None else default_venv()
    python = venv / "bin" / "python"
    executable = venv / "bin" / "label-studio"
    hint = f"Run `{INSTALL_SCRIPT}` (it creates {venv}; set LS_VENV to use another location)."
    if not python.exists() or not executable.exists():
        raise LabelStudioNotInstalledError(f"Label Studio virtualenv not found at {venv}. {hint}")
    probe = subprocess.run(
        [str(python), "-c", "import label_studio, importlib.metadata as m; print(m.version('label-studio'))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        raise LabelStudioNotInstalledError(
            f"`import label_studio` fails in {venv}: {probe.stderr.strip()[-2000:]}\n{hint}"
        )
    version = probe.stdout.strip()
    if version != LABEL_STUDIO_VERSION:
        raise LabelStudioNotInstalledError(
            f"{venv} holds label-studio {version}, the tests need {LABEL_STUDIO_VERSION}. {hint}"
        )
    return executable


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (on ``host`` and on localhost, which Label Studio checks)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("localhost", port)) != 0:
                return port
    raise RuntimeError("no free port found")


def stop_process_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM the process group `process` leads, SIGKILL it after `grace_seconds`, and kill any child
    that outlived the leader (same process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def jwt_payload(token: str) -> dict[str, Any] | None:
    """Decode (without verifying) a JWT's payload; ``None`` if ``token`` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def is_personal_access_token(key: str) -> bool:
    """True for a Label Studio personal access token (a JWT refresh token), False for a legacy key."""
    payload = jwt_payload(key)
    return bool(payload) and payload.get("token_type") == "refresh"


def copy_sqlite_database(source: Path | str, target: Path | str) -> None:
    """Consistent copy of a (possibly live) SQLite database, e.g. to skip the ~1 min of migrations.

    A server started on a copy skips the migrations and keeps the source's users, organization,
    projects and tasks (not their uploaded files); it generates its own ``SECRET_KEY``, so PATs of the
    source are invalid there. The copy's personal access tokens are dropped, else ``POST /api/token/``
    would answer 409 (one valid PAT per user) and the harness could not create its own.
    """
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
        dst.execute("DELETE FROM token_blacklist_blacklistedtoken")
        dst.execute("DELETE FROM token_blacklist_outstandingtoken")
        dst.commit()


class LabelStudioAPIError(RuntimeError):
    def __init__(self, response: requests.Response, expected: Iterable[int]):
        self.response = response
        self.status_code = response.status_code
        super().__init__(
            f"{response.request.method} {response.url} answered {response.status_code} "
            f"(expected {sorted(expected)}): {response.text[:2000]}"
        )


class LabelStudioAPI:
    """Minimal Label Studio REST client.

    ``api_key`` is either a personal access token (exchanged at ``/api/token/refresh/`` for a 5-minute
    ``Bearer`` access token, renewed 30 s before it expires and once after a 401) or a legacy key
    (``Authorization: Token <key>``, only accepted when legacy tokens are enabled).
    """

    ACCESS_TOKEN_MARGIN_S = 30.0

    def __init__(self, url: str, api_key: str, *, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.session = requests.Session()
        self.uses_personal_access_token = is_personal_access_token(api_key)
        self._access_token: str | None = None
        self._access_expires_at = 0.0
        self._lock = threading.Lock()

    # --- auth -------------------------------------------------------------------------------------
    def refresh_access_token(self) -> str:
        """Exchange the personal access token for a new access token."""
        response = self.session.post(
            f"{self.url}/api/token/refresh/", json={"refresh": self.api_key}, timeout=self.timeout
        )
        if response.status_code != 200:
            raise LabelStudioAPIError(response, [200])
        access = response.json()["access"]
        exp = (jwt_payload(access) or {}).get("exp")
        # exp is absolute (server clock); fall back to the documented 300 s
        lifetime = float(exp) - time.time() if exp else 300.0
        self._access_token = access
        self._access_expires_at = time.monotonic() + min(max(lifetime, 0.0), 300.0)
        return access

    def auth_headers(self) -> dict[str, str]:
        if not self.uses_personal_access_token:
            return {"Authorization": f"Token {self.api_key}"}
        with self._lock:
            if (
                self._access_token is None
                or time.monotonic() > self._access_expires_at - self.ACCESS_TOKEN_MARGIN_S
            ):
                self.refresh_access_token()
            return {"Authorization": f"Bearer {self._access_token}"}

    def absolute_url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.url}/{path_or_url.lstrip('/')}"

    def request(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> requests.Response:
        """Raw request (``path`` relative to the server, or absolute); no status check."""
        kwargs.setdefault("timeout", self.timeout)
        url = self.absolute_url(path)
        headers = dict(kwargs.pop("headers", None) or {})
        if not auth:
            return self.session.request(method, url, headers=headers, **kwargs)
        response = self.session.request(method, url, headers={**headers, **self.auth_headers()}, **kwargs)
        if response.status_code == 401 and self.uses_personal_access_token:
            with self._lock:
                self.refresh_access_token()
            response = self.session.request(method, url, headers={**headers, **self.auth_headers()}, **kwargs)
        return response

    def call(self, method: str, path: str, *, expected: Iterable[int] = (200, 201), **kwargs: Any) -> Any:
        """Request, check the status, return the decoded JSON (``None`` for an empty body)."""
        expected = tuple(expected)
        response = self.request(method, path, **kwargs)
        if response.status_code not in expected:
            raise LabelStudioAPIError(response, expected)
        if not response.content:
            return None
        return response.json()

    # --- users / auth settings --------------------------------------------------------------------
    def whoami(self) -> dict:
        return self.call("GET", "/api/current-user/whoami")

    def legacy_token(self) -> str:
        """The current user's legacy key (readable whatever the JWT settings)."""
        return self.call("GET", "/api/current-user/token")["token"]

    def jwt_settings(self) -> dict:
        return self.call("GET", "/api/jwt/settings")

    def set_jwt_settings(self, *, api_tokens_enabled: bool = True, legacy_api_tokens_enabled: bool) -> dict:
        """Enable/disable legacy ``Token`` auth for the organization (takes effect immediately)."""
        return self.call(
            "POST",
            "/api/jwt/settings",
            json={
                "api_tokens_enabled": api_tokens_enabled,
                "legacy_api_tokens_enabled": legacy_api_tokens_enabled,
            },
        )

    # --- projects ---------------------------------------------------------------------------------
    def create_project(self, title: str, label_config: str, **extra: Any) -> dict:
        return self.call(
            "POST", "/api/projects", json={"title": title, "label_config": label_config, **extra}
        )

    def list_projects(self) -> list[dict]:
        answer = self.call("GET", "/api/projects", params={"page_size": 1000})
        return answer["results"] if isinstance(answer, dict) else answer

    def get_project(self, project_id: int) -> dict:
        return self.call("GET", f"/api/projects/{project_id}")

    def update_project(self, project_id: int, **fields: Any) -> dict:
        return self.call("PATCH", f"/api/projects/{project_id}", json=fields)

    def delete_project(self, project_id: int) -> None:
        self.call("DELETE", f"/api/projects/{project_id}", expected=(204,))

    # --- import / tasks ---------------------------------------------------------------------------
    def import_files(self, project_id: int, paths: Iterable[Path | str]) -> dict:
        """Upload files as a task import: one task per image, ``data`` holds ``/data/upload/...``.

        Returns Label Studio's answer (``task_count``, ``file_upload_ids``, ...). Label Studio reads
        ONE file per multipart field name (``request.FILES.items()``), so each file gets its own field.
        """
        with contextlib.ExitStack() as stack:
            files = [
                (f"file{i}", (Path(p).name, stack.enter_context(open(p, "rb")), "application/octet-stream"))
                for i, p in enumerate(paths)
            ]
            return self.call("POST", f"/api/projects/{project_id}/import", files=files, expected=(201,))

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        """Import tasks given as JSON (``[{"data": {...}}, ...]`` or plain data dicts)."""
        return self.call("POST", f"/api/projects/{project_id}/import", json=tasks, expected=(201,))

    def list_tasks(self, project_id: int, *, all_fields: bool = True, page_size: int = 100) -> list[dict]:
        """All tasks of a project (``all_fields`` adds annotations and predictions)."""
        tasks: list[dict] = []
        page = 1
        while True:
            params: dict[str, Any] = {"project": project_id, "page": page, "page_size": page_size}
            if all_fields:
                params["fields"] = "all"
            answer = self.call("GET", "/api/tasks", params=params)
            tasks.extend(answer["tasks"])
            if not answer["tasks"] or len(tasks) >= answer.get("total", len(tasks)):
                return tasks
            page += 1

    def get_task(self, task_id: int) -> dict:
        """Open a task like the UI does; Label Studio asks the ML backend if it has no prediction yet."""
        return self.call("GET", f"/api/tasks/{task_id}")

    def list_file_uploads(self, project_id: int) -> list[dict]:
        return self.call("GET", f"/api/projects/{project_id}/file-uploads", params={"all": "true"})

    def delete_file_upload(self, file_upload_id: int) -> None:
        """Delete an uploaded file (``DELETE /api/import/file-upload/ID``); its tasks stay."""
        self.call("DELETE", f"/api/import/file-upload/{file_upload_id}", expected=(200, 204))

    def fetch(self, path_or_url: str, *, auth: bool = True, **kwargs: Any) -> requests.Response:
        """GET a media URL from task data (``/data/upload/...``, ``/data/local-files/?d=...``)."""
        return self.request("GET", path_or_url, auth=auth, **kwargs)

    # --- local storage ----------------------------------------------------------------------------
    def create_local_storage(
        self,
        project_id: int,
        path: Path | str,
        *,
        regex_filter: str = r".*\.(jpe?g|png|bmp|webp)$",
        use_blob_urls: bool = True,
        title: str = "local",
    ) -> dict:
        """Source storage on ``path`` (strictly below ``server.document_root``): URLs ``/data/local-files/?d=``."""
        return self.call(
            "POST",
            "/api/storages/localfiles",
            json={
                "project": project_id,
                "path": str(path),
                "regex_filter": regex_filter,
                "use_blob_urls": use_blob_urls,
                "title": title,
            },
        )

    def sync_local_storage(self, storage_id: int) -> dict:
        return self.call("POST", f"/api/storages/localfiles/{storage_id}/sync")

    # --- ML backends / predictions ----------------------------------------------------------------
    def connect_ml_backend(
        self,
        project_id: int,
        url: str,
        *,
        title: str = "ML backend",
        is_interactive: bool = False,
        **extra: Any,
    ) -> dict:
        """``POST /api/ml``: Label Studio calls ``/health`` and ``/setup`` and adds a ``<url>/webhook`` webhook."""
        return self.call(
            "POST",
            "/api/ml",
            json={
                "url": url,
                "project": project_id,
                "title": title,
                "is_interactive": is_interactive,
                **extra,
            },
        )

    def list_ml_backends(self, project_id: int) -> list[dict]:
        return self.call("GET", "/api/ml", params={"project": project_id})

    def get_ml_backend(self, ml_backend_id: int) -> dict:
        return self.call("GET", f"/api/ml/{ml_backend_id}")

    def delete_ml_backend(self, ml_backend_id: int) -> None:
        self.call("DELETE", f"/api/ml/{ml_backend_id}", expected=(200, 204))

    def train_ml_backend(self, ml_backend_id: int) -> Any:
        """ "Start training": Label Studio POSTs ``{"action": "START_TRAINING", ...}`` to ``<url>/webhook``."""
        return self.call("POST", f"/api/ml/{ml_backend_id}/train")

    def retrieve_predictions(self, project_id: int, task_ids: Iterable[int] | None = None) -> Any:
        """Data Manager action "Retrieve Predictions" on all tasks (or on ``task_ids``)."""
        if task_ids is None:
            selected: dict[str, Any] = {"all": True, "excluded": []}
        else:
            selected = {"all": False, "included": list(task_ids)}
        return self.call(
            "POST",
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": project_id},
            json={"selectedItems": selected},
        )

    def list_predictions(self, *, task_id: int | None = None, project_id: int | None = None) -> list[dict]:
        params = {}
        if task_id is not None:
            params["task"] = task_id
        if project_id is not None:
            params["project"] = project_id
        return self.call("GET", "/api/predictions", params=params)

    def list_webhooks(self, project_id: int) -> list[dict]:
        return self.call("GET", "/api/webhooks", params={"project": project_id})

    # --- annotations ------------------------------------------------------------------------------
    def create_annotation(self, task_id: int, result: list[dict], **extra: Any) -> dict:
        return self.call("POST", f"/api/tasks/{task_id}/annotations", json={"result": result, **extra})

    def list_annotations(self, task_id: int) -> list[dict]:
        return self.call("GET", f"/api/tasks/{task_id}/annotations")

    def update_annotation(self, annotation_id: int, result: list[dict], **extra: Any) -> dict:
        return self.call("PATCH", f"/api/annotations/{annotation_id}", json={"result": result, **extra})

    def delete_annotation(self, annotation_id: int) -> None:
        self.call("DELETE", f"/api/annotations/{annotation_id}", expected=(200, 204))


class LabelStudioServer:
    """A ``label-studio start`` process with a throw-away data directory.

    Use as a context manager (or ``start()`` / ``stop()``). After ``start()``: ``url``, ``port``,
    ``personal_access_token``, ``legacy_token``, ``api`` (a :class:`LabelStudioAPI` with the PAT),
    ``document_root`` (local files root), ``data_dir``, ``log_path``.
    """

    def __init__(
        self,
        venv: Path | str | None = None,
        *,
        port: int | None = None,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        legacy_token: str = DEFAULT_LEGACY_TOKEN,
        legacy_api_tokens: bool = False,
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 600.0,
        keep_files: bool = False,
        seed_database: Path | str | None = None,
    ):
        self.venv = Path(venv) if venv is not None else default_venv()
        self.requested_port = port
        self.username = username
        self.password = password
        self.legacy_token = legacy_token
        self.legacy_api_tokens = legacy_api_tokens
        self.extra_env = dict(extra_env or {})
        self.startup_timeout = startup_timeout
        self.keep_files = keep_files
        self.seed_database = Path(seed_database) if seed_database is not None else None

        self.host = "127.0.0.1"
        self.port: int | None = None
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None
        self.personal_access_token: str | None = None
        self.api: LabelStudioAPI | None = None
        self.startup_seconds: float | None = None
        self._log_file = None

    # --- paths ------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "data"

    @property
    def database(self) -> Path:
        """The SQLite database (``label_studio.sqlite3`` in the data dir)."""
        return self.data_dir / "label_studio.sqlite3"

    @property
    def document_root(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "files"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "not started"
        return self.root / "label_studio.log"

    @property
    def url(self) -> str:
        assert self.port is not None, "not started"
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
        for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "DJANGO_SETTINGS_MODULE"):
            env.pop(key, None)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            {
                "VIRTUAL_ENV": str(self.venv),
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                # offline
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
                "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
                # allow an ML backend (and its /webhook) on 127.0.0.1
                "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
                "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
                # local storage
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                # non-interactive user
                "LABEL_STUDIO_USERNAME": self.username,
                "LABEL_STUDIO_PASSWORD": self.password,
                "LABEL_STUDIO_USER_TOKEN": self.legacy_token,
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true" if self.legacy_api_tokens else "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    # --- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> LabelStudioServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LabelStudioServer:
        """Start on the requested port, or on a free one; a start that finds its free port taken by the
        time Django binds it (another process got there between the two) is tried again on another."""
        if self.process is not None:
            raise RuntimeError("already started")
        for attempt in range(_START_ATTEMPTS):
            try:
                return self._start_once()
            except LabelStudioStartError as error:
                retry = self.requested_port is None and _PORT_TAKEN.search(str(error))
                if not retry or attempt == _START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> LabelStudioServer:
        self.port = None  # read from the log of this start
        executable = check_installation(self.venv)
        self.root = Path(tempfile.mkdtemp(prefix="ylsb-label-studio-"))
        self.data_dir.mkdir()
        self.document_root.mkdir()
        if self.seed_database is not None:
            copy_sqlite_database(self.seed_database, self.database)
        port = self.requested_port or free_port(self.host)
        command = [
            str(executable),
            "start",
            "--internal-host",
            self.host,
            "--port",
            str(port),
            "--no-browser",
        ]
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        started = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=self.root,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, stopped as a whole
        )
        try:
            self._wait_until_healthy(started)
            self.startup_seconds = time.monotonic() - started
            self.personal_access_token = self.create_personal_access_token()
            self.api = LabelStudioAPI(self.url, self.personal_access_token)
            self.api.whoami()
        except BaseException as error:
            tail = self.log_tail()
            self.stop()
            if isinstance(error, LabelStudioStartError | KeyboardInterrupt):
                raise
            raise LabelStudioStartError(
                f"Label Studio setup failed: {error!r}\n--- tail of the Label Studio log ---\n{tail}"
            ) from error
        return self

    def _wait_until_healthy(self, started: float) -> None:
        assert self.process is not None
        deadline = started + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabelStudioStartError(
                    f"label-studio exited with code {self.process.returncode} during startup\n"
                    f"--- tail of {self.log_path} ---\n{self.log_tail()}"
                )
            if self.port is None:
                match = _SERVER_LINE.search(self.log_path.read_text(errors="replace"))
                if match:
                    # label-studio moves to another port silently if the requested one is taken
                    self.port = int(match.group(2))
            if self.port is not None:
                with contextlib.suppress(requests.RequestException):
                    response = requests.get(f"{self.url}/health", timeout=5)
                    if response.status_code == 200 and response.json().get("status") == "UP":
                        return
            time.sleep(0.5)
        raise LabelStudioStartError(
            f"Label Studio not healthy after {self.startup_timeout:.0f} s\n"
            f"--- tail of {self.log_path} ---\n{self.log_tail()}"
        )

    def create_personal_access_token(self) -> str:
        """Log in with username/password (session + CSRF) and create a PAT (``POST /api/token/``)."""
        with requests.Session() as session:
            page = session.get(f"{self.url}/user/login/", timeout=60)
            page.raise_for_status()
            match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            form = {"email": self.username, "password": self.password}
            if match:
                form["csrfmiddlewaretoken"] = match.group(1)
            login = session.post(
                f"{self.url}/user/login/",
                data=form,
                headers={"Referer": f"{self.url}/user/login/"},
                allow_redirects=False,
                timeout=60,
            )
            if login.status_code != 302 or "sessionid" not in session.cookies:
                raise LabelStudioStartError(f"login as {self.username} failed: {login.status_code}")
            created = session.post(
                f"{self.url}/api/token/",
                headers={"X-CSRFToken": session.cookies.get("csrftoken", ""), "Referer": f"{self.url}/"},
                timeout=60,
            )
            if created.status_code != 201:
                raise LabelStudioStartError(
                    f"POST /api/token/ answered {created.status_code}: {created.text[:500]}"
                )
            return created.json()["token"]

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        if self.root is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process, grace_seconds=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.api is not None:
            self.api.session.close()
        if self.root is not None and not self.keep_files:
            shutil.rmtree(self.root, ignore_errors=True)


class RecordingMLBackend:
    """A stub ML backend on 127.0.0.1 that records every request Label Studio makes.

    ``/health`` -> ``{"status": "UP", "model_class": "Stub"}``; ``/setup`` -> ``{"model_version":
    model_version}``; ``/predict`` -> ``{"results": [predict(task) for task in tasks]}``; ``/webhook``
    -> ``{}``. ``requests`` holds ``{"method", "path", "query", "headers", "body"}`` dicts.
    """

    def __init__(
        self,
        predict: Callable[[dict], dict] | None = None,
        *,
        model_version: str = "stub-v1",
        host: str = "127.0.0.1",
    ):
        self.predict = predict or (lambda task: {"result": [], "score": 0.0, "model_version": model_version})
        self.model_version = model_version
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                record = {
                    "method": self.command,
                    "path": split.path,
                    "query": parse_qs(split.query),
                    "headers": dict(self.headers.items()),
                    "body": body,
                }
                with backend._lock:
                    backend.requests.append(record)
                path = split.path.rstrip("/") or "/"
                if path in ("/health", "/"):
                    self._answer(200, {"status": "UP", "model_class": "Stub"})
                elif path == "/setup":
                    self._answer(200, {"model_version": backend.model_version})
                elif path == "/predict":
                    tasks = (body or {}).get("tasks", []) if isinstance(body, dict) else []
                    self._answer(200, {"results": [backend.predict(task) for task in tasks]})
                elif path == "/webhook":
                    self._answer(200, {})
                else:
                    self._answer(404, {"error": f"unknown path {split.path}"})

            do_GET = _handle
            do_POST = _handle

        return Handler

    def calls(self, path: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait_for(self, condition: Callable[[list[dict]], bool], timeout: float = 30.0) -> list[dict]:
        """Wait until ``condition(requests)`` holds (webhooks may arrive after the API call answers)."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls()
            if condition(calls) or time.monotonic() > deadline:
                return calls
            time.sleep(0.1)

    def start(self) -> RecordingMLBackend:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RecordingMLBackend:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
