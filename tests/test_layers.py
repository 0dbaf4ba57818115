"""The arrows between the project's packages point one way: a lower layer never imports a higher one.

HTTP (`server/`), `cli.py` and its `commands/` -> `model.py` -> `prediction/` -> `control_models/` ->
`training/` -> `media/`, `inference/` -> `converters/` -> `core/` (settings, errors). Siblings of one
layer do not import each other either. The test reads every import statement (also those inside
functions) and every `importlib.import_module`/`__import__` call, so a late or dynamic import cannot
hide; and it fails on any module or folder of Python it does not know (a new top-level module, a
folder without `__init__.py`): ARCHITECTURE.md says where a new module goes.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Higher number = higher layer; a module may import only from layers below its own.
LAYERS = {
    "worker": 8,  # the RQ worker's entry point (worker.sh)
    "server": 7,
    "cli": 8,  # the entry point of the commands
    "commands": 7,
    "model": 6,
    "training_pipeline": 6,
    "prediction_job": 7,  # a project-wide prediction job: calls YOLOBackend.predict
    "prediction": 5,
    "control_models": 4,
    "training": 3,
    "media": 2,
    "inference": 2,
    "converters": 1,
    "core": 0,
}
# Around the code, not in it: they may import any layer, and no layer imports them.
OUTSIDE = {"tests", "bench", "tools", "scripts"}
PROJECT_NAMES = LAYERS.keys() | OUTSIDE
DYNAMIC_IMPORTS = {"import_module", "__import__"}


def _python_files() -> list[Path]:
    """Every .py file of the checkout that git tracks or would track (ignored ones, like runs/, are not)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:  # not a git checkout (a copied tree): every file but the hidden ones
        return [p for p in ROOT.rglob("*.py") if not any(part.startswith(".") for part in p.parts)]
    return [ROOT / line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]


def _top_name(path: Path) -> str:
    relative = path.relative_to(ROOT)
    return relative.parts[0].removesuffix(".py")


def _project_imports(path: Path) -> set[str]:
    """Top-level names of this project's packages that `path` imports, dynamic imports included.

    An `import_module`/`__import__` whose module is not a string literal cannot be checked: it reads as
    the name "<dynamic>", which no layer allows.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add("<relative>")
        elif isinstance(node, ast.Call) and _called_name(node.func) in DYNAMIC_IMPORTS:
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value.split(".")[0])
            else:
                names.add("<dynamic>")
    return names & (PROJECT_NAMES | {"<dynamic>", "<relative>"})


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _layer_files() -> list[tuple[str, Path]]:
    return sorted((_top_name(p), p) for p in _python_files() if _top_name(p) in LAYERS)


@pytest.mark.parametrize(
    ("layer", "path"),
    _layer_files(),
    ids=lambda value: str(value.relative_to(ROOT)) if isinstance(value, Path) else "",
)
def test_no_import_points_up_or_sideways(layer: str, path: Path) -> None:
    imported = _project_imports(path)
    wrong = sorted(
        name for name in imported if name != layer and (name not in LAYERS or LAYERS[name] >= LAYERS[layer])
    )
    assert not wrong, (
        f"{path.relative_to(ROOT)} (layer {layer}) imports {wrong}, which are not below it "
        "(<dynamic>: an import_module/__import__ of a name that is not a literal; <relative>: a relative "
        "import; tests, bench, tools and scripts are never imported by the code)"
    )


def test_every_module_and_folder_of_python_has_a_place() -> None:
    unknown = sorted({_top_name(p) for p in _python_files()} - PROJECT_NAMES)
    assert not unknown, (
        f"{unknown}: give each a layer in LAYERS (tests/test_layers.py) and in ARCHITECTURE.md's table, "
        "or put it into the package of the layer it belongs to"
    )


def test_every_folder_of_layered_code_is_a_package() -> None:
    folders = {p.parent for p in _python_files() if _top_name(p) in LAYERS and p.parent != ROOT}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"these folders have Python but no __init__.py: {missing}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    from server.app import create_app\n    import model\n", {"server", "model"}),
        ("import importlib\nimportlib.import_module('server.app')\n", {"server"}),
        ("from importlib import import_module\nimport_module(name)\n", {"<dynamic>"}),
        ("__import__('commands.predict')\n", {"commands"}),
        ("from . import sibling\nimport numpy\n", {"<relative>"}),
        ("from tests.conftest import x\n", {"tests"}),
    ],
)
def test_the_checker_sees_every_kind_of_import(tmp_path: Path, source: str, expected: set[str]) -> None:
    module = tmp_path / "upward.py"
    module.write_text(source)
    assert _project_imports(module) == expected


def test_the_checker_sees_unknown_modules_and_folders(monkeypatch, tmp_path: Path) -> None:
    """A new top-level module, a folder without `__init__.py`: both are reported."""
    (tmp_path / "newthing.py").write_text("x = 1\n")
    (tmp_path / "media" / "sub").mkdir(parents=True)
    (tmp_path / "media" / "__init__.py").write_text("")
    (tmp_path / "media" / "sub" / "helper.py").write_text("x = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="newthing"):
        test_every_module_and_folder_of_python_has_a_place()
    with pytest.raises(AssertionError, match="media/sub"):
        test_every_folder_of_layered_code_is_a_package()


# ARCHITECTURE.md "Sizes": the one class allowed over the limit, and why is written there.
LONG_CLASSES = {"core/settings.py:Settings"}


def _body_lines(node: ast.AST) -> int:
    """Lines of a function's or class's body, its docstring not counted."""
    body = node.body
    has_docstring = (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )
    first = body[1] if has_docstring and len(body) > 1 else body[0]
    return node.end_lineno - first.lineno + 1


def _too_long(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        name = f"{path.relative_to(ROOT)}:{getattr(node, 'name', '')}"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _body_lines(node) > 50:
            found.append(f"{name} ({_body_lines(node)} lines)")
        if isinstance(node, ast.ClassDef) and _body_lines(node) > 250 and name not in LONG_CLASSES:
            found.append(f"{name} ({_body_lines(node)} lines)")
    return found


def test_no_function_over_50_lines_and_no_class_over_250() -> None:
    too_long = [entry for _, path in _layer_files() for entry in _too_long(path)]
    assert too_long == [], "split these (ARCHITECTURE.md, Sizes): " + ", ".join(too_long)


def test_the_size_check_sees_a_long_function(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    long = tmp_path / "long.py"
    long.write_text('def f():\n    """Doc."""\n' + "    x = 1\n" * 51)
    assert _too_long(long) == ["long.py:f (51 lines)"]
    long.write_text('def f():\n    """Doc."""\n' + "    x = 1\n" * 50)
    assert _too_long(long) == []
