"""The README's `curl` session, run as the README writes it, so it cannot go stale (issue 21).

The commands are read from the README's "Call it by hand" section: its first `bash` block starts the
backend (its variable assignments are passed to `./start.sh`, as the shell would), its second is run
by bash as is, against that server (only `localhost:9090` becomes the free port the server got). The
answers must be what the README says they are: the three shapes of the sample image, and the model
version and first box the README shows.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.e2e.backend_server import BackendServer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
README = PROJECT_ROOT / "README.md"
SECTION = "## Call it by hand (`curl`)"


def readme_section() -> str:
    text = README.read_text()
    assert SECTION in text, f"the README has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1]
    return section.split("\n## ", 1)[0]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def start_environment(start_line: str) -> dict[str, str]:
    """The assignments before `./start.sh` in the README's start command, expanded as bash would in the
    repository's folder."""
    words = shlex.split(start_line.strip().removesuffix("&"))
    assert words[-1] == "./start.sh", start_line
    env = {}
    for word in words[:-1]:
        name, _, value = word.partition("=")
        assert name.isidentifier() and _, f"not an assignment: {word!r}"
        env[name] = value.replace("$PWD", str(PROJECT_ROOT))
    return env


def json_values(text: str) -> list:
    """The JSON answers curl printed one after the other (curl -s adds no newline)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


@pytest.mark.slow  # starts gunicorn through ./start.sh and loads a model: ~15-25 s
def test_the_readmes_curl_session_answers_what_the_readme_shows(tmp_path):
    section = readme_section()
    start, session = code_blocks(section, "bash")
    shown = code_blocks(section, "json")[0]
    with BackendServer(tmp_path / "backend.log", start_environment(start)) as server:
        commands = session.replace("http://localhost:9090", server.url).replace("localhost:9090", server.url)
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", commands],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PWD": str(PROJECT_ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, f"{run.stderr}\n--- backend log ---\n{server.log_tail()}"
    health, setup, predicted = json_values(run.stdout)
    assert health["status"] == "UP"
    version = setup["model_version"]
    assert predicted["model_version"] == version and predicted["results"][0]["model_version"] == version
    regions = predicted["results"][0]["result"]
    assert sorted(r["value"]["rectanglelabels"][0] for r in regions) == ["circle", "square", "triangle"]
    # What the README shows: the same model version, and the first box where it really is.
    assert f'"model_version":"{version}"' in shown
    first = regions[0]["value"]
    shown_first = json.loads(re.search(r'"value":(\{[^}]*\})', shown).group(1))
    assert shown_first["rectanglelabels"] == first["rectanglelabels"]
    for key in ("x", "y", "width", "height"):
        assert abs(shown_first[key] - first[key]) < 0.5, (key, shown_first, first)
