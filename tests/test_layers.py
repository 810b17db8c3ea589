"""The library's layering: a package imports only from its own package and the layers below it, and no
method package imports another's. Every import is counted, those inside functions too."""

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parent.parent / "stages"

LAYERS = (
    ("core",),
    ("datasets",),
    ("runs",),
    ("networks", "proposals"),
    ("training", "detections"),
    ("cache", "evaluation"),
    ("methods",),
    ("inference", "config"),
    ("report",),
    ("pipeline", "bench"),
    ("study", "check"),
)
"""From the bottom up; packages of one layer do not import each other."""

LAYER = {package: index for index, packages in enumerate(LAYERS) for package in packages}


def _modules() -> list[Path]:
    return sorted(path for path in LIBRARY.rglob("*.py") if path.parent != LIBRARY)


def _imported(path: Path) -> set[str]:
    """The ``stages.*`` modules that ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in found if name.startswith("stages.")}


def _package(path: Path) -> str:
    return path.relative_to(LIBRARY).parts[0]


def test_every_package_has_a_layer():
    packages = {_package(path) for path in _modules()}
    assert packages == set(LAYER)


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(LIBRARY)))
def test_a_package_imports_only_lower_layers(path):
    own = _package(path)
    for name in _imported(path):
        other = name.split(".")[1]
        if other == own or other not in LAYER:  # a name imported from the package's __init__
            continue
        assert LAYER[other] < LAYER[own], (
            f"{path.relative_to(LIBRARY)} imports {name}: a layer above or beside"
        )


@pytest.mark.parametrize(
    "path",
    [path for path in _modules() if len(path.relative_to(LIBRARY).parts) > 2 and _package(path) == "methods"],
    ids=lambda path: str(path.relative_to(LIBRARY)),
)
def test_method_packages_never_import_each_other(path):
    own = path.relative_to(LIBRARY).parts[1]
    others = {
        name.split(".")[2]
        for name in _imported(path)
        if name.startswith("stages.methods.") and name.split(".")[2] not in ("base", own)
    }
    assert not others, f"{path.relative_to(LIBRARY)} imports the method packages {sorted(others)}"


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The check itself: a core module importing a method would be found."""
    module = tmp_path / "core" / "bad.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from stages.methods.base import Method\n")
    monkeypatch.setattr(f"{__name__}.LIBRARY", tmp_path)
    with pytest.raises(AssertionError, match="a layer above"):
        test_a_package_imports_only_lower_layers(module)
