"""The one stand-in Label Studio of the unit tests: a local HTTP server that answers what the backend,
its jobs and cli.py ask of Label Studio, behind the API key, and records every call.

It answers `/api/projects/<id>/`, `/api/tasks/<id>/`, `/api/tasks/` (pages of 100, the Data Manager
filter on prediction model versions, 404 past the last page as Label Studio does), `POST
/api/predictions/` and `/api/projects/<id>/import/predictions`, `POST /api/token/refresh/` (a personal access token for a short-lived access token),
`/tasks/<id>/presign/?fileuri=` (a 303 to `storage_url`, as cloud storage behind Label Studio) and
uploaded media under `/data/upload/` and `/data/local-files/`; `/external/...` is the storage: it needs
no key. The real Label Studio is in `tests/e2e/`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from tests.local_http import LocalHTTPServer

LEGACY_KEY = "0123456789abcdef0123456789abcdef01234567"  # a legacy token: "Authorization: Token ..."


def fake_jwt(claims: dict) -> str:
    """A JWT with these claims and a signature nobody checks (the backend only reads `exp`)."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


PERSONAL_ACCESS_TOKEN = fake_jwt({"token_type": "refresh", "exp": time.time() + 10**8, "user_id": 1})


class StandInLabelStudio(LocalHTTPServer):
    """One project (`project`, `label_config`) with `tasks`; `media` by upload path (bytes or a file),
    `image` for any other upload path. Records `calls` (method, path, query, body) and, for every GET,
    `requests` (path with its query, Authorization header)."""

    def __init__(
        self,
        image: bytes | None = None,
        *,
        tasks: list[dict] = (),
        media: dict[str, bytes | Path] | None = None,
        project: int | str = 7,
        label_config: str = "",
        refresh_token: str = PERSONAL_ACCESS_TOKEN,
        access_lifetime: float = 300.0,
    ):
        self.image = image
        self.tasks = {task["id"]: task for task in tasks}
        self.media = dict(media or {})
        self.project, self.label_config = str(project), label_config
        self.refresh_token = refresh_token
        self.access_lifetime = access_lifetime
        self.access_tokens: set[str] = set()
        self.refreshes = 0
        self.storage_url = ""  # where presigned URLs point: "" is this server, as MinIO behind Label Studio
        self.predictions: list[dict] = []
        self.refuse_upload_for: set[int] = set()  # task ids whose prediction upload gets a 400
        self.calls: list[tuple[str, str, dict, object]] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._listen(_handler(self))

    def paths(self, method: str) -> list[str]:
        return [path for m, path, _, _ in self.calls if m == method]

    def task_queries(self) -> list[dict]:
        """The query of every task list request, in order."""
        return [query for m, path, query, _ in self.calls if (m, path) == ("GET", "/api/tasks/")]

    def authorized(self, header: str) -> bool:
        return header == f"Token {LEGACY_KEY}" or (
            header.startswith("Bearer ") and header[len("Bearer ") :] in self.access_tokens
        )

    def refresh(self, body: object) -> str | None:
        """A new access token for the personal access token in `body`, or None when it is not ours."""
        if not self.refresh_token or body != {"refresh": self.refresh_token}:
            return None
        access = fake_jwt(
            {"token_type": "access", "exp": time.time() + self.access_lifetime, "jti": time.time_ns()}
        )
        with self.lock:
            self.refreshes += 1
            self.access_tokens.add(access)
        return access

    def media_bytes(self, path: str) -> bytes | None:
        found = self.media.get(path, self.image)
        return found.read_bytes() if isinstance(found, Path) else found

    def list_tasks(self, query: dict) -> tuple[int, dict]:
        assert query["project"] == self.project, query
        tasks = sorted(self.tasks.values(), key=lambda t: t["id"])
        asked = json.loads(query.get("query", "{}"))
        for item in asked.get("filters", {}).get("items", []):
            tasks = self._filtered(tasks, item)
        selected = asked.get("selectedItems")
        if selected and not selected.get("all"):
            tasks = [t for t in tasks if t["id"] in set(selected.get("included", []))]
        page, size = int(query.get("page", 1)), int(query.get("page_size", 100))
        chunk = tasks[(page - 1) * size : page * size]
        if query.get("include"):  # only these fields, as Label Studio answers
            chunk = [{k: t[k] for k in query["include"].split(",") if k in t} for t in chunk]
        if page > 1 and not chunk:
            return 404, {"detail": "Invalid page."}  # as Label Studio answers
        return 200, {"tasks": chunk, "total": len(tasks)}

    def _filtered(self, tasks: list[dict], item: dict) -> list[dict]:
        """The two Data Manager filters the backend sends: no prediction of a version; annotated."""
        if item["filter"] == "filter:tasks:total_annotations":
            assert (item["operator"], item["value"]) == ("greater", 0), item
            return [t for t in tasks if t.get("annotations")]
        assert item["filter"] == "filter:tasks:predictions_model_versions", item
        assert item["operator"] == "not_contains" and isinstance(item["value"], list)
        done = {p["task"] for p in self.predictions if any(v in p["model_version"] for v in item["value"])}
        return [t for t in tasks if t["id"] not in done]

    def import_predictions(self, body: list[dict]) -> tuple[int, dict]:
        """Many predictions at once; one that is refused refuses them all (one transaction)."""
        if any(p["task"] in self.refuse_upload_for for p in body):
            return 400, {"detail": "result is not valid"}
        for prediction in body:
            self.add_prediction(prediction)
        return 201, {"created": len(body)}

    def add_prediction(self, body: dict) -> tuple[int, dict]:
        if body["task"] in self.refuse_upload_for:
            return 400, {"detail": "result is not valid"}
        with self.lock:
            prediction = {"id": len(self.predictions) + 1, **body}
            self.predictions.append(prediction)
        return 201, prediction


def _handler(stand_in: StandInLabelStudio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def do_GET(self):
            self.route("GET")

        def do_POST(self):
            self.route("POST")

        def reply(self, status: int, body: object = None, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if raw is None else "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def route(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null") if length else None
            authorization = self.headers.get("Authorization", "")
            with stand_in.lock:
                stand_in.calls.append((method, url.path, query, body))
                if method == "GET":
                    stand_in.requests.append((self.path, authorization))
            if (method, url.path) == ("POST", "/api/token/refresh/"):
                access = stand_in.refresh(body)
                return (
                    self.reply(200, {"access": access}) if access else self.reply(401, {"detail": "invalid"})
                )
            if method == "GET" and url.path.startswith("/external/"):  # the storage: presigned, no key
                return self.reply(200, raw=stand_in.image)
            if not stand_in.authorized(authorization):
                return self.reply(401, {"detail": "Authentication credentials were not provided."})
            return self.answer(method, url.path, query, body)

        def answer(self, method: str, path: str, query: dict, body: object) -> None:
            parts = [p for p in path.split("/") if p]
            if method == "GET" and parts == ["api", "projects", stand_in.project]:
                config = {
                    "id": int(stand_in.project),
                    "title": "stand-in",
                    "label_config": stand_in.label_config,
                    "task_number": len(stand_in.tasks),
                }
                return self.reply(200, config)
            if method == "GET" and parts[:2] == ["api", "tasks"] and len(parts) == 3:
                task = stand_in.tasks.get(int(parts[2]))
                return self.reply(200, task) if task else self.reply(404, {"detail": "Not found."})
            if method == "GET" and parts == ["api", "tasks"]:
                return self.reply(*stand_in.list_tasks(query))
            if method == "POST" and parts == ["api", "predictions"]:
                return self.reply(*stand_in.add_prediction(body))
            if method == "POST" and parts == ["api", "projects", stand_in.project, "import", "predictions"]:
                return self.reply(*stand_in.import_predictions(body))
            if method == "GET" and parts[:1] == ["tasks"] and parts[-1:] == ["presign"]:
                uri = base64.urlsafe_b64decode(query["fileuri"]).decode()
                assert uri.startswith("s3://"), uri
                self.send_response(303)
                self.send_header(
                    "Location", f"{stand_in.storage_url}/external/{uri[5:]}?X-Amz-Signature=secret"
                )
                self.end_headers()
                return None
            if method == "GET" and path.startswith(("/data/upload/", "/data/local-files")):
                found = stand_in.media_bytes(path)
                return self.reply(200, raw=found) if found is not None else self.reply(404, {"detail": "no"})
            return self.reply(404, {"detail": f"no route {method} {path}"})

    return Handler
