"""Fixtures for the end-to-end tests against a real Label Studio (see ``label_studio.py``).

Every test under ``tests/e2e`` is marked ``e2e``. The Label Studio virtualenv comes from
``.ci/install_label_studio.sh``; when it is missing the ``label_studio`` fixture FAILS (it does not
skip) and says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .label_studio import (
    LabelStudioNotInstalledError,
    LabelStudioServer,
    LabelStudioStartError,
    RecordingMLBackend,
    check_installation,
    default_venv,
)

_E2E_DIR = Path(__file__).parent


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
    server = LabelStudioServer(venv)
    try:
        server.start()
    except LabelStudioStartError as error:
        problem = str(error)
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def recording_ml_backend() -> Iterator[RecordingMLBackend]:
    """A stub ML backend on 127.0.0.1 recording the requests Label Studio makes (empty predictions)."""
    with RecordingMLBackend() as backend:
        yield backend
