"""The arrows between the project's packages point one way: a lower layer never imports a higher one.

HTTP (`server/`) and `cli.py` -> `model.py` -> `control_models/` -> `training/` -> `media/`, `inference/`
-> `converters/` -> `core/` (settings, errors). Siblings of one layer do not import each other either.
The test reads every import statement (also those inside functions), so a late import cannot hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Higher number = higher layer; a module may import only from layers below its own.
LAYERS = {
    "worker": 7,
    "server": 6,
    "prediction_job": 6,
    "cli": 6,
    "model": 5,
    "training_pipeline": 5,
    "control_models": 4,
    "training": 3,
    "media": 2,
    "inference": 2,
    "converters": 1,
    "core": 0,
}


def _project_imports(path: Path) -> set[str]:
    """Top-level names of this project's packages that `path` imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & LAYERS.keys()


def _layer_files() -> list[tuple[str, Path]]:
    files = []
    for name in LAYERS:
        single = ROOT / f"{name}.py"
        paths = [single] if single.exists() else sorted((ROOT / name).rglob("*.py"))
        files.extend((name, path) for path in paths)
    return files


@pytest.mark.parametrize(
    ("layer", "path"),
    _layer_files(),
    ids=lambda value: str(value.relative_to(ROOT)) if isinstance(value, Path) else "",
)
def test_no_import_points_up_or_sideways(layer: str, path: Path) -> None:
    wrong = sorted(name for name in _project_imports(path) if name != layer and LAYERS[name] >= LAYERS[layer])
    assert not wrong, f"{path.relative_to(ROOT)} (layer {layer}) imports {wrong}, which are not below it"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "upward.py"
    module.write_text("def f():\n    from server.app import create_app\n    import model\n")
    assert _project_imports(module) == {"server", "model"}


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench", "tools"}
    assert packages <= LAYERS.keys(), f"give these packages a layer in LAYERS: {packages - LAYERS.keys()}"
