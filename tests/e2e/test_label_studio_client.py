"""`media.label_studio_client.LabelStudioClient` against the real Label Studio: both key kinds, paging,
filters by model version and by ids, the project's own config, and errors that never show the key."""

from __future__ import annotations

import pytest

from core.errors import LabelStudioAccessError
from media.label_studio_client import LabelStudioClient, project_id

CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image"><Label value="square"/></RectangleLabels></View>"""
TASKS = 230  # more than two pages of 100


@pytest.fixture(scope="module")
def project(label_studio):
    created = label_studio.api.create_project("client paging", CONFIG)
    label_studio.api.import_tasks(
        created["id"], [{"image": f"http://example.invalid/{i}.png"} for i in range(TASKS)]
    )
    yield created["id"]
    label_studio.api.delete_project(created["id"])


def test_pages_through_every_task_with_a_personal_access_token(label_studio, project) -> None:
    client = LabelStudioClient(label_studio.url, label_studio.personal_access_token)
    tasks = list(client.tasks(project))
    assert len(tasks) == TASKS
    assert len({task["id"] for task in tasks}) == TASKS
    assert tasks[0]["project"] == project and tasks[0]["data"]["image"].startswith("http://example.invalid/")
    assert client.label_config(str(project)) == label_studio.api.get_project(project)["label_config"]


def test_filters_by_model_version_and_ids_and_uploads(label_studio, project) -> None:
    client = LabelStudioClient(label_studio.url, label_studio.personal_access_token)
    ids = sorted(task["id"] for task in client.tasks(project))
    predicted = ids[:150]
    for task in predicted:
        client.create_prediction(task, [], 0.5, "yolo-test-v1")
    rest = {task["id"] for task in client.tasks(project, without_model_version="yolo-test-v1")}
    assert rest == set(ids[150:])
    assert list(client.task_ids(project, without_model_version="yolo-test-v1")) == ids[150:]
    assert list(client.task_ids(project, ids=[ids[3], ids[170]])) == [ids[3], ids[170]]
    assert {t["id"] for t in client.tasks(project, without_model_version="another")} == set(ids)
    chosen = [ids[3], ids[170], ids[229]]
    assert sorted(t["id"] for t in client.tasks(project, ids=chosen)) == chosen
    annotated = list(client.tasks(project, annotated_only=True))
    assert annotated == []  # nothing annotated yet
    label_studio.api.create_annotation(ids[5], [])
    annotated = list(client.tasks(project, annotated_only=True))
    assert [t["id"] for t in annotated] == [ids[5]] and len(annotated[0]["annotations"]) == 1


def test_legacy_token_and_a_wrong_key(label_studio, project) -> None:
    legacy = LabelStudioClient(label_studio.url, label_studio.api.legacy_token())
    assert legacy.headers()["Authorization"].startswith("Token ")
    personal = LabelStudioClient(label_studio.url, label_studio.personal_access_token)
    assert personal.headers()["Authorization"].startswith("Bearer ")
    assert personal.headers()["Authorization"] != f"Bearer {label_studio.personal_access_token}"
    wrong = LabelStudioClient(label_studio.url, "0" * 40)
    with pytest.raises(LabelStudioAccessError) as raised:
        wrong.label_config(project)
    assert "HTTP 401" in raised.value.message and "0" * 40 not in raised.value.message


@pytest.mark.parametrize("given", ["7", 7, "7.1795316247", "007", " 7 "])
def test_project_ids_are_one_integer(given) -> None:
    assert project_id(given) == 7


@pytest.mark.parametrize("given", [None, True, "", "-1", "0", "x7", "7a", "1e3"])
def test_bad_project_ids_are_refused(given) -> None:
    with pytest.raises(LabelStudioAccessError):
        project_id(given)
