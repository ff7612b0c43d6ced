"""Where things live: the bundled resources and the shared data folder beside the project."""

from __future__ import annotations

import os
from pathlib import Path

#: The project root (the folder holding ``pyproject.toml``).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Bundled resources: default models, sample image.
RESOURCES = PROJECT_ROOT / "resources"
MODELS_DIR = RESOURCES / "models"


def shared_dir() -> Path:
    """The shared data folder: ``$POSEVIEWER_SHARED`` or ``../shared`` beside the project."""
    env = os.environ.get("POSEVIEWER_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path inside the shared folder (it may not exist)."""
    return shared_dir().joinpath(*parts)
