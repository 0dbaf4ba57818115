"""Which annotation of a task trains: the latest one that is neither skipped (cancelled) nor a draft."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence


def latest_annotation(annotations: list[dict]) -> dict | None:
    """The most recently updated annotation that is not cancelled (skipped)."""
    kept = [a for a in annotations or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    return max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def annotated_tasks(
    tasks: Iterable[dict], from_names: str | Sequence[str]
) -> Iterator[tuple[dict, list[dict]]]:
    """(task, result items of the control(s) `from_names`) for each task whose latest annotation is
    usable, as the tasks arrive (page by page: never the whole project in memory).

    A task whose latest annotation has no region of this control still counts: it is an image with no
    object (a negative example), as Label Studio's annotator meant when submitting it empty.
    """
    names = {from_names} if isinstance(from_names, str) else set(from_names)
    for task in tasks:
        annotation = latest_annotation(task.get("annotations") or [])
        if annotation is None:
            continue
        yield task, [r for r in annotation.get("result") or [] if r.get("from_name") in names]
