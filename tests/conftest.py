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
