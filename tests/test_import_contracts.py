"""The import contracts (pyproject.toml, import-linter) and the documented layer table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_layering_contract() -> None:
    """import-linter (pyproject.toml): only app imports Qt/pyqtgraph/vispy (the whole package
    forbidden, app exempt); only the batch engine imports ray; app, video, selection and the
    Estimator import no torch directly; lifting imports no cnn/tfjs/detect/checkpoint and
    no torch; cnn, tfjs and lifting are independent;
    export, result and the selection model import neither torch nor the models; lower layers
    never import higher ones."""
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                        no_logo=True) == 0


def test_documented_layer_table_is_the_layers_contract() -> None:
    """docs/architecture.md's table of packages, top to bottom, equals the import-linter
    layers contract (same packages, same order), so neither can drift from the other."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [c["layers"] for c in config["tool"]["importlinter"]["contracts"]
                 if c["type"] == "layers"]
    contract = [sorted(m.strip().removeprefix("poseviewer.") for m in row.split(":"))
                for row in layers]
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc.split("| layer | packages |\n| --- | --- |\n")[1].split("\n\n")[0]
    documented = [sorted(re.findall(r"`(\w+)`", row.split("|")[2]))
                  for row in table.splitlines()]
    assert documented == contract
    packages = {p.name.removesuffix(".py") for p in (ROOT / "poseviewer").iterdir()
                if (p.suffix == ".py" or (p / "__init__.py").is_file())
                and p.name != "__init__.py"}
    assert packages == {m for row in contract for m in row}, "a package outside the layers"
