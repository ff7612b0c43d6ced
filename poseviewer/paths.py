"""Where things live: the bundled resources and the shared data folder beside the project."""

from __future__ import annotations

import os
from pathlib import Path

#: The package folder (``poseviewer/``).
PACKAGE_DIR = Path(__file__).resolve().parent
#: The project root in a checkout (the folder holding ``pyproject.toml``); for an installed
#: wheel, the folder the package was installed into.
PROJECT_ROOT = PACKAGE_DIR.parent


def resources_dir() -> Path:
    """The bundled resources (default models, their cards, the sample photo).

    In a checkout (also with an editable install) they are the repository's top-level
    ``resources/``; a built wheel carries the same files as package data inside the
    package, ``poseviewer/resources/`` (pyproject.toml maps one to the other).
    """
    checkout = PROJECT_ROOT / "resources"
    if (PROJECT_ROOT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    installed = PACKAGE_DIR / "resources"
    return installed if installed.is_dir() else checkout


#: Bundled resources: default models, sample image (see ``resources_dir``).
RESOURCES = resources_dir()
MODELS_DIR = RESOURCES / "models"


def shared_dir() -> Path:
    """The shared data folder: ``$POSEVIEWER_SHARED`` or ``../shared`` beside the project."""
    env = os.environ.get("POSEVIEWER_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path inside the shared folder (it may not exist)."""
    return shared_dir().joinpath(*parts)

#: The bundled 2D network and 3D pose model (our trained ones).
DEFAULT_CNN = MODELS_DIR / "cpm_default.safetensors"
#: The earlier default 2D network, trained from scratch (weak; kept loadable).
SCRATCH_CNN = MODELS_DIR / "cpm_scratch.safetensors"
DEFAULT_POSE_MODEL = MODELS_DIR / "pose3d_default.safetensors"
