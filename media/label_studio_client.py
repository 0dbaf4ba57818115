"""The one client this backend uses for Label Studio's REST API: the SDK's `LabelStudio`.

Used by the training job (annotations), prediction jobs and `cli.py` (tasks, uploads) and for the
project's own labeling config, and by the media loader for the headers of downloads from Label Studio's
origin. The SDK renews personal-access-token access tokens itself; its HTTP client never follows a
redirect and refuses one with a clear error, so neither a token exchange nor an API call sends the
key anywhere but Label Studio's own origin.

Every call's failure becomes a `LabelStudioAccessError` naming what was asked, never the key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from core.errors import BackendError, LabelStudioAccessError
from core.settings import Settings

_PAGE_SIZE = 100


def describe(error: Exception) -> str:
    """A one-line reason for an error from the SDK, httpx or the backend (no key, no body dump)."""
    if isinstance(error, BackendError):
        return error.message
    status = getattr(error, "status_code", None)
    if status is not None:
        body = getattr(error, "body", None)
        detail = body.get("detail") if isinstance(body, dict) else None
        return f"HTTP {status}" + (f": {detail}" if isinstance(detail, str) else "")
    return type(error).__name__


def project_id(project: Any) -> int:
    """Label Studio's integer project id from what callers send ("7", 7, "7.1795316247", "007")."""
    text = str(project).strip().split(".", 1)[0] if project is not None else ""
    if isinstance(project, bool) or not text.isdigit() or int(text) <= 0:
        raise LabelStudioAccessError(f"'{project}' is not a Label Studio project id (a positive integer)")
    return int(text)


class LabelStudioClient:
    """Label Studio at one address with one API key (legacy token or personal access token)."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._sdk = None
        self._sdk_lock = threading.Lock()  # one SDK (one access token) per client, across threads

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStudioClient | None:
        """The environment's Label Studio (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY); None without a URL."""
        if not settings.label_studio_url:
            return None
        return cls(settings.label_studio_url, settings.label_studio_api_key.get_secret_value())

    def __repr__(self) -> str:  # never show the key
        return f"LabelStudioClient({self.base_url!r})"

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self._api_key)

    @property
    def api_key(self) -> str:
        """The key as given (handed to a job's process through its environment only, never stored)."""
        return self._api_key

    @property
    def sdk(self) -> Any:
        """The SDK client, built on first use (the SDK checks a personal access token's expiry then)."""
        with self._sdk_lock:
            return self._sdk or self._build_sdk()

    def _build_sdk(self) -> Any:
        from label_studio_sdk.client import LabelStudio

        try:
            self._sdk = LabelStudio(
                base_url=self.base_url,
                api_key=self._api_key,
                timeout=self._timeout,
                httpx_client=httpx.Client(
                    timeout=self._timeout,
                    follow_redirects=False,
                    event_hooks={"response": [self._refuse_redirect]},
                ),
            )
        except Exception as error:  # an expired personal access token is refused here
            raise LabelStudioAccessError(
                f"Label Studio at {self.base_url} refused the API key ({describe(error)}); "
                "create a new one in Account & Settings"
            ) from None
        return self._sdk

    def label_config(self, project: Any) -> str:
        """The project's own labeling config, as Label Studio stores it."""
        project_number = project_id(project)
        found = self._call(f"read project {project_number}", self.sdk.projects.get, id=project_number)
        return found.label_config or ""

    def task(self, task_id: Any) -> dict[str, Any]:
        found = self._call(f"read task {task_id}", self.sdk.tasks.get, id=str(task_id))
        return {"id": found.id, "project": getattr(found, "project", None), "data": dict(found.data or {})}

    def tasks(
        self,
        project: Any,
        *,
        annotated_only: bool = False,
        without_model_version: str | None = None,
        ids: Iterable[int] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The project's tasks page by page (never all in memory): `{"id", "project", "data"}` and, with
        `annotated_only`, `"annotations"` (plain dicts).

        `without_model_version`: only tasks with no prediction of that version (Label Studio filters).
        `ids`: only these tasks.
        """
        project_number = project_id(project)
        query = _task_query(annotated_only, without_model_version, ids)
        fields = "all" if annotated_only else "task_only"
        for task in self._task_pages(project_number, query, fields=fields):
            yield _plain_task(task, project_number, annotated_only)

    def task_ids(
        self, project: Any, *, without_model_version: str | None = None, ids: Iterable[int] | None = None
    ) -> Iterator[int]:
        """The ids of `tasks(...)`, page by page; Label Studio serializes nothing else (half its time
        for a listing of the whole project)."""
        project_number = project_id(project)
        query = _task_query(False, without_model_version, ids)
        for task in self._task_pages(project_number, query, fields="task_only", include="id"):
            yield int(task.id if hasattr(task, "id") else task["id"])

    def _task_pages(self, project_number: int, query: str | None, **fields: str) -> Iterator[Any]:
        what = f"list the tasks of project {project_number}"
        page = self._call(
            what, self.sdk.tasks.list, project=project_number, query=query, page_size=_PAGE_SIZE, **fields
        )
        while page is not None:
            items = page.items or []
            yield from items
            if len(items) < _PAGE_SIZE:
                return  # the last page: asking for the next one costs a request that answers 404
            page = self._call(what, _next_page, page)

    def create_prediction(
        self, task: int, result: list[dict], score: float | None, model_version: str
    ) -> None:
        self._call(
            f"store a prediction for task {task}",
            self.sdk.predictions.create,
            task=int(task),
            result=result,
            score=score,
            model_version=model_version,
        )

    def create_predictions(self, project: Any, predictions: list[dict[str, Any]]) -> None:
        """Store many predictions in one call (`{"task", "result", "score", "model_version"}` each)."""
        if not predictions:
            return
        from label_studio_sdk import PredictionRequest

        project_number = project_id(project)
        self._call(
            f"store {len(predictions)} predictions in project {project_number}",
            self.sdk.projects.import_predictions,
            id=project_number,
            request=[PredictionRequest(**prediction) for prediction in predictions],
        )

    def task_count(self, project: Any) -> int:
        """How many tasks the project has (Label Studio's own count)."""
        project_number = project_id(project)
        found = self._call(f"read project {project_number}", self.sdk.projects.get, id=project_number)
        return int(getattr(found, "task_number", None) or 0)

    def headers(self) -> dict[str, str]:
        """The Authorization header for a download from Label Studio's own origin: `Token <key>` for a
        legacy token; for a personal access token, `Bearer <access token>`, renewed by the SDK."""
        if not self._api_key:
            return {}
        try:
            headers = self.sdk._client_wrapper.get_headers()
        except BackendError:
            raise
        except Exception as error:
            if getattr(error, "status_code", None) is None:
                raise LabelStudioAccessError(
                    f"Label Studio at {self.base_url} is not reachable ({type(error).__name__})"
                ) from None
            raise LabelStudioAccessError(
                "Label Studio refused the personal access token in LABEL_STUDIO_API_KEY "
                f"({describe(error)}); create a new one in Account & Settings"
            ) from None
        return {"Authorization": headers["Authorization"]}

    def _refuse_redirect(self, response: httpx.Response) -> None:
        if response.is_redirect:
            raise LabelStudioAccessError(
                f"Label Studio at {self.base_url} answered {response.request.method} "
                f"{response.request.url.path} with a redirect (HTTP {response.status_code}), which is not "
                "followed with the key; set LABEL_STUDIO_URL to the address Label Studio answers on itself"
            )

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except BackendError:
            raise
        except Exception as error:
            raise LabelStudioAccessError(
                f"could not {what} at Label Studio {self.base_url}: {describe(error)}"
            ) from None


def _next_page(page: Any) -> Any:
    """The page after `page`, or None past the last one (Label Studio answers 404 there)."""
    from label_studio_sdk.core.api_error import ApiError

    try:
        following = page.next_page()
    except ApiError as error:
        if error.status_code == 404:
            return None
        raise
    return following if following is not None and following.items else None


def _task_query(
    annotated_only: bool, without_model_version: str | None, ids: Iterable[int] | None
) -> str | None:
    """A task listing's Data Manager query: its filters and, with `ids`, its selection."""
    items = []
    if annotated_only:  # Label Studio 1.23 ignores the list's own `only_annotated`
        items.append(_filter("total_annotations", "greater", "Number", 0))
    if without_model_version is not None:
        items.append(_filter("predictions_model_versions", "not_contains", "List", [without_model_version]))
    query: dict[str, Any] = {}
    if items:
        query["filters"] = {"conjunction": "and", "items": items}
    if ids is not None:  # the Data Manager's own selection
        query["selectedItems"] = {"all": False, "included": sorted({int(i) for i in ids})}
    return json.dumps(query) if query else None


def _filter(field: str, operator: str, kind: str, value: Any) -> dict[str, Any]:
    return {"filter": f"filter:tasks:{field}", "operator": operator, "type": kind, "value": value}


def _plain_task(task: Any, project_number: int, with_annotations: bool) -> dict[str, Any]:
    data = task.model_dump() if hasattr(task, "model_dump") else dict(task)
    plain = {"id": data.get("id"), "project": project_number, "data": data.get("data") or {}}
    if with_annotations:
        plain["annotations"] = [
            a.model_dump() if hasattr(a, "model_dump") else a for a in data.get("annotations") or []
        ]
    return plain
