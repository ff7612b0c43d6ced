"""``load_pose_model``: the one way to get a ``PoseModel3D`` from a path (or the default)."""

from __future__ import annotations

import os
from pathlib import Path

from poseviewer import paths
from poseviewer.errors import ModelError
from poseviewer.lifting.model import ModelFileError, ModelFileNotFoundError, PoseModel3D


class PoseModelError(ModelFileError, ModelError):
    """The 3D pose model file cannot be read (a ``ModelFileError``, a ``ModelError``)."""


class PoseModelNotFoundError(ModelFileNotFoundError, PoseModelError):
    """The 3D pose model file does not exist."""


def load_pose_model(source: str | os.PathLike[str] | PoseModel3D | None = None) -> PoseModel3D:
    """A ``PoseModel3D`` from ``source``: a path (``.mat``: the authors' released file, else
    our safetensors format), a model (returned as is) or None (the bundled
    ``pose3d_default.safetensors``). A missing file raises ``ModelFileNotFoundError`` (a
    ``FileNotFoundError``), an unreadable one ``ModelFileError``, both naming the path (and
both ``poseviewer.errors.ModelError``)."""
    if isinstance(source, PoseModel3D):
        return source
    path = Path(source) if source is not None else paths.DEFAULT_POSE_MODEL
    if not path.is_file():
        hint = "" if source is not None else (" (the bundled 3D model; train it with "
                                              "'poseviewer train-3d' or pass a model path)")
        raise PoseModelNotFoundError(f"3D pose model not found: {path}{hint}")
    try:
        if path.suffix.lower() == ".mat":
            return PoseModel3D.from_mat(path)
        return PoseModel3D.load(path)
    except ModelFileError as exc:
        raise PoseModelError(str(exc)) from exc
    except (OSError, ValueError, KeyError) as exc:
        raise PoseModelError(f"cannot load the 3D pose model {path}: {exc}") from exc
