"""Fixtures for the end-to-end tests against a real Label Studio (see ``label_studio.py``).

Every test under ``tests/e2e`` is marked ``e2e``. The Label Studio virtualenv comes from
``.ci/install_label_studio.sh``; when it is missing the ``label_studio`` fixture FAILS (it does not
skip) and says so. ``yolo_backend`` is our backend started with ``./start.sh`` (see
``backend_server.py``), connected to that Label Studio; a failing test that used it gets the tail of
the backend's log in its report.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .backend_server import BackendServer, BackendStartError
from .label_studio import (
    LabelStudioNotInstalledError,
    LabelStudioServer,
    LabelStudioStartError,
    RecordingMLBackend,
    check_installation,
    default_venv,
)

_E2E_DIR = Path(__file__).parent
_ROOT = _E2E_DIR.parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudioServer]:
    """A running Label Studio 1.23.2 for the whole session (fresh data dir, stopped at the end).

    ``label_studio.api`` is a :class:`LabelStudioAPI` authenticated with a personal access token
    (``label_studio.personal_access_token``); ``label_studio.url``, ``label_studio.legacy_token``,
    ``label_studio.document_root`` (for local storages), ``label_studio.log_tail()``.
    """
    venv = default_venv()
    problem = None
    try:
        check_installation(venv)
    except LabelStudioNotInstalledError as error:
        problem = (
            f"{error}\nThe e2e tests need a real Label Studio: run `.ci/install_label_studio.sh` "
            f"first (or deselect them with `-m 'not e2e'`)."
        )
    if problem:
        pytest.fail(problem, pytrace=False)
    yield from _serve(LabelStudioServer(venv), LabelStudioStartError)


@pytest.fixture(scope="session")
def yolo_backend(
    label_studio: LabelStudioServer, model_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendServer]:
    """Our backend, started as the README says (``./start.sh``, gunicorn), for the whole session.

    ``MODEL_ROOT`` is the offline ``model_root`` (default models with random weights and real class
    names, plus ``shapes-yolov8n.pt``); it reaches Label Studio's media with the harness's personal
    access token. ``yolo_backend.url``, ``.log_tail()``, ``.metrics()``, ``.setup(label_config)``.
    """
    folder = tmp_path_factory.mktemp("yolo-backend")
    server = BackendServer(
        folder / "backend.log",
        {
            "MODEL_ROOT": str(model_root),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.personal_access_token,
            "ALLOW_CUSTOM_MODEL_PATH": "true",
            "ALLOW_MODEL_DOWNLOAD": "false",
            "MEDIA_CACHE_DIR": str(folder / "media-cache"),
            "WORKERS": "1",
            "THREADS": "4",
        },
        python=sys.executable,
    )
    yield from _serve(server, BackendStartError)


def _serve(server, start_error: type[Exception]) -> Iterator:
    """Start `server` for a session fixture (a failed start fails the tests with its log), stop it after."""
    problem = None
    try:
        server.start()
    except start_error as error:
        problem = str(error)
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    backend = getattr(item, "funcargs", {}).get("yolo_backend")
    if isinstance(backend, BackendServer):
        report.sections.append((f"tail of the backend log ({backend.log_path})", backend.log_tail()))
    server = getattr(item, "funcargs", {}).get("label_studio")
    if isinstance(server, LabelStudioServer) and server.root is not None:
        report.sections.append(("tail of the Label Studio log", server.log_tail(40)))


@pytest.fixture
def recording_ml_backend() -> Iterator[RecordingMLBackend]:
    """A stub ML backend on 127.0.0.1 recording the requests Label Studio makes (empty predictions)."""
    with RecordingMLBackend() as backend:
        yield backend
