"""Shared fixtures: access to ../shared (skip, or fail under POSEVIEWER_REQUIRE_SHARED=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from poseviewer.paths import shared_dir

ARTIFACTS = Path(__file__).parent / "_artifacts"


def require_shared(*parts: str) -> Path:
    """Return a path inside ../shared, or skip (fail when POSEVIEWER_REQUIRE_SHARED=1)."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        msg = f"needs {path} (the shared data folder beside the project); it is absent"
        if os.environ.get("POSEVIEWER_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " and POSEVIEWER_REQUIRE_SHARED=1", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture
def artifacts_dir() -> Path:
    """A folder for screenshots and other files the tests leave to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def ref() -> dict:
    """The release's reference lifting vectors (``reference/lftd/lift_vectors_dev.npz``),
    as a dict of numpy arrays (one load per test module; copy before changing them)."""
    import numpy as np

    with np.load(require_shared("reference", "lftd", "lift_vectors_dev.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def model():
    """The released 3D pose model (``reference/lftd/prob_model_params.mat``) as a
    ``PoseModel3D`` (one load per test module)."""
    from poseviewer.lifting import PoseModel3D

    return PoseModel3D.from_mat(require_shared("reference", "lftd", "prob_model_params.mat"))


@pytest.fixture(scope="module")
def k2_result():
    """A result lifted with a K = 2, basis-10 model (``tests/k2_model.py``)."""
    from k2_model import k2_result

    return k2_result()


# ---- the GUI tests' fixtures (Qt imported only when a test asks for them) -------------------
@pytest.fixture
def settings(tmp_path):
    """Settings in a temp ini file: tests never touch the user's settings."""
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def messages(monkeypatch) -> list[tuple[str, str]]:
    """Captured QMessageBox.warning calls (title, text)."""
    from PySide6.QtWidgets import QMessageBox

    got: list[tuple[str, str]] = []

    def fake_warning(parent, title, text, *a, **k):
        got.append((title, text))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "warning", staticmethod(fake_warning))
    return got
