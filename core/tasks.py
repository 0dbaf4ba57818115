"""The shape of a Label Studio task, checked once where tasks come in (`/predict`'s body, cli.py's files).

Label Studio sends a task as `{"id": 1, "data": {"image": "/data/upload/1/a.jpg"}, "project": 7, ...}`
with many more keys (annotations, predictions, meta, ...): those are kept as they are. `YOLOBackend.predict`
takes tasks of this shape as plain dicts (`Task.model_dump(exclude_unset=True)`: exactly the keys sent).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, TypeAdapter

from core.errors import LabelingConfigError

# Strict: an id or project comes back in the answer as it was sent, never coerced (1.0 is refused, not 1).
TaskId = StrictInt | StrictStr


class Task(BaseModel):
    """One task to predict: its `data` holds the values the labeling config's `$keys` name."""

    model_config = ConfigDict(extra="allow")

    id: TaskId | None = None
    data: dict[str, Any]
    project: TaskId | None = None


class ProjectTask(Task):
    """A task of a Label Studio project, as cli.py reads it from a file: the id names where to upload."""

    id: TaskId


PROJECT_TASKS = TypeAdapter(list[ProjectTask])
TASK_IDS = TypeAdapter(list[StrictInt])


def as_dicts(tasks: list[Task]) -> list[dict[str, Any]]:
    """The tasks as `YOLOBackend.predict` takes them: the keys that were sent (no defaults added), the
    declared ones first; the values themselves, not copies (`model_dump` would copy every annotation).

    Example:
        >>> as_dicts([Task.model_validate({"meta": {}, "data": {"image": "a.jpg"}, "id": 3})])
        [{'id': 3, 'data': {'image': 'a.jpg'}, 'meta': {}}]
    """
    return [_as_dict(task) for task in tasks]


def _as_dict(task: Task) -> dict[str, Any]:
    sent = {name: getattr(task, name) for name in type(task).model_fields if name in task.model_fields_set}
    return {**sent, **(task.model_extra or {})}


def project_key(project: Any) -> str | None:
    """Label Studio's project id from what it sends: "7.1795316247" in /setup and /predict, 7 in tasks.

    >>> project_key("7.1795316247"), project_key(7), project_key("007"), project_key(None)
    ('7', '7', '7', None)
    """
    if project is None or isinstance(project, bool):
        return None
    text = str(project).strip().split(".", 1)[0]
    return str(int(text)) if text.isdigit() else (text or None)  # "007" is project 7


def media_url(task: dict[str, Any], value_key: str) -> Any:
    """The task's media reference for `value_key`; a task without it fails alone (its own error)."""
    url = task["data"].get(value_key)
    if url is None:
        raise LabelingConfigError(f"task {task.get('id')} has no '{value_key}' field in its data")
    return url


__all__ = [
    "PROJECT_TASKS",
    "TASK_IDS",
    "ProjectTask",
    "Task",
    "TaskId",
    "as_dicts",
    "media_url",
    "project_key",
]
