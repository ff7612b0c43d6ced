"""The lifting's files by role (docs/architecture.md): each module imports only the modules
below it in the documented order (no import circle, also not inside functions or under
TYPE_CHECKING), and none reads another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import poseviewer.lifting

#: Top to bottom: a module may import only modules after it.
ORDER = ["model", "fit", "elevation", "cache", "direct", "covariance", "params", "spec",
         "result", "plausibility"]
DIR = Path(poseviewer.lifting.__file__).parent


def _imports(path: Path) -> set[str]:
    """The lifting modules a file imports, anywhere in it."""
    got: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "poseviewer.lifting":
                got.update(a.name for a in node.names)
            elif node.module.startswith("poseviewer.lifting."):
                got.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            got.update(a.name.split(".")[2] for a in node.names
                       if a.name.startswith("poseviewer.lifting."))
    return got


def test_every_module_is_in_the_documented_order() -> None:
    files = {p.stem for p in DIR.glob("*.py")} - {"__init__"}
    assert files == set(ORDER)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    for name in ORDER:
        assert f"`{name}.py`" in doc, name


def test_each_module_imports_only_those_below_it() -> None:
    for i, name in enumerate(ORDER):
        above = set(ORDER[: i + 1])
        bad = _imports(DIR / f"{name}.py") & above
        assert not bad, f"{name}.py imports {sorted(bad)} (same level or above)"


def test_no_module_reads_another_modules_private_names() -> None:
    modules = set(ORDER)
    for name in ORDER:
        for node in ast.walk(ast.parse((DIR / f"{name}.py").read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                raise AssertionError(f"{name}.py reads {node.value.id}.{node.attr}")
