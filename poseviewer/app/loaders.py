"""Worker-side file jobs of the viewer (no Qt here): lift imported 2D joints without the
CNN, and reopen saved results. Each returns ``(EstimateResult, RGB image)``; the image is
the photo named by the file when it can be found, else the photo on screen when its size
matches, else a plain grey canvas of the result's size."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.camera import DEFAULT_FOV_DEG
from poseviewer.paths import DEFAULT_POSE_MODEL
from poseviewer.result import EstimateResult


def _grey(size: tuple[int, int]) -> np.ndarray:
    w, h = max(int(size[0]), 1), max(int(size[1]), 1)
    return np.full((h, w, 3), 64, dtype=np.uint8)


def backdrop(result: EstimateResult, named: str | None, beside: Path,
             current: np.ndarray | None) -> tuple[np.ndarray, str | None]:
    """The photo to show under ``result``: (RGB, note or None)."""
    from poseviewer.imageio import load_image

    w, h = result.image_size
    if named:
        for cand in (Path(named), beside / named, beside / Path(named).name):
            if cand.is_file():
                try:
                    rgb = load_image(cand).rgb
                except Exception:  # unreadable photo: fall through to the other choices
                    continue
                if rgb.shape[1] == w and rgb.shape[0] == h:
                    return rgb, None
    if current is not None and current.shape[1] == w and current.shape[0] == h:
        return current, None
    note = "photo not found; showing the joints on a blank canvas"
    return _grey((w, h)), note


def lift_joints_file(path: Any, current: np.ndarray | None, model: Any,
                     fov: float | None = DEFAULT_FOV_DEG) -> tuple[EstimateResult, np.ndarray]:
    """Read 2D joints (COCO keypoints or our JSON) and lift them with ``model``, along each
    person's camera ray when the file gives the image size (``fov``; 0: as they are)."""
    from poseviewer.camera import imported_lifter
    from poseviewer.export import ImportFormatError, lift_imported, read_joints_2d

    path = Path(path)
    items = read_joints_2d(path)
    if not items:
        raise ImportFormatError(f"{path}: no people found in the file")
    item = items[0]
    lifter, fov_note = imported_lifter(model, fov, item.image_size)
    result = lift_imported(item, lifter, model_path=str(DEFAULT_POSE_MODEL))
    if fov_note:
        result.messages.append(fov_note)
    if len(items) > 1:
        result.messages.append(f"the file holds {len(items)} images; showing the first "
                               f"({item.image or 'unnamed'})")
    image, note = backdrop(result, item.image, path.parent, current)
    if note:
        result.messages.append(note)
    return result, image


def load_result_file(path: Any, current: np.ndarray | None,
                     settings: Any = None) -> tuple[EstimateResult, np.ndarray]:
    """Reopen a saved result (our JSON or NPZ) with its photo when it can be found
    (``settings``, the Run menu's, change nothing here)."""
    from poseviewer.export import read_json, read_npz

    path = Path(path)
    result = read_npz(path) if path.suffix.lower() == ".npz" else read_json(path)
    image, note = backdrop(result, result.image_path, path.parent, current)
    if note:
        result.messages = [*result.messages, note]
    return result, image


class FileJobs:
    """The worker's file jobs of one window, holding the bundled 3D model once loaded."""

    def __init__(self, load_model: Callable[[], Any] | None = None) -> None:
        self._load_model = load_model
        self._model: Any = None
        self._lock = threading.Lock()

    def pose_model(self) -> Any:
        """The bundled 3D pose model, loaded on first use."""
        with self._lock:
            if self._model is None:
                if self._load_model is None:
                    from poseviewer.lifting import load_pose_model

                    self._model = load_pose_model()
                else:
                    self._model = self._load_model()
            return self._model

    def lift(self, path: Any, current: np.ndarray | None,
             settings: Any = None) -> tuple[EstimateResult, np.ndarray]:
        """Lift the 2D joints in ``path`` with the bundled 3D model, searching the camera's
        elevation unless ``settings`` (the Run menu's ``RunSettings``) turn it off."""
        model = self.pose_model()
        on = getattr(settings, "elevation_search", None)
        model.elevation_search = True if on is None else bool(on)
        return lift_joints_file(path, current, model)

    def functions(self) -> dict[str, Callable[[Any, Any, Any], Any]]:
        """Request kind -> job, for the worker."""
        return {"lift": self.lift, "load": load_result_file}
