"""The one result object per image that every view and every exporter reads.

``EstimateResult`` -> ``persons[p]`` (``PersonResult``) -> ``stages[t]`` (``StageResult``)
-> ``fit`` (a ``poseviewer.lifting.LiftResult`` for one person, N = 1, every component).

Conventions
-----------
* 2D joints are image pixels, (x, y) order, CPM-14 joint order (``poseviewer.skeleton.CPM14``).
* Belief maps are float32 (14, Hm, Wm) on the network's map grid (background channel
  dropped); ``PersonResult.map_to_image`` maps map-grid (x, y, 1) to image (x, y).
* 3D poses are H36M-17 (``poseviewer.skeleton.H36M17``), x = image right, y = depth away
  from the camera, z = up, in the lifting's size-normalised millimetres (see the lifting
  spec: every skeleton is scaled to the same total bone size).
* Everything is numpy (CPU) so views and exporters never touch devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from poseviewer.lifting import LiftResult


@dataclass
class StageResult:
    """One CNN stage of one person."""

    index: int
    """0-based stage index."""
    cnn_maps: np.ndarray
    """(14, Hm, Wm) float32: the CNN's own belief maps of this stage."""
    projected_maps: np.ndarray | None
    """(14, Hm, Wm) float32: Gaussian maps drawn at the lifted pose's projection, or None."""
    fused_maps: np.ndarray
    """(14, Hm, Wm) float32: what the stage passes on (equals ``cnn_maps`` with fusion off)."""
    joints_2d: np.ndarray
    """(14, 2) float64: joints read from this stage's maps, image pixels (x, y)."""
    confidence: np.ndarray
    """(14,) float64: per-joint confidence."""
    visible: np.ndarray
    """(14,) bool: joints judged visible (confidence above the model's threshold)."""
    fit: LiftResult | None
    """The lifting of ``joints_2d`` (N = 1, every component), or None if not run."""
    seconds: float = 0.0
    """Wall time of this stage (CNN + lifting + fusion)."""


@dataclass
class PersonResult:
    """One person in the image."""

    box: np.ndarray
    """(4,) float64 box in image pixels: x0, y0, x1, y1."""
    centre: np.ndarray
    """(2,) float64 person centre in image pixels (x, y)."""
    source: str
    """Where the person came from: 'user', 'detector' or 'whole-image'."""
    map_to_image: np.ndarray
    """(2, 3) float64 affine: image_xy = map_to_image @ (map_x, map_y, 1)."""
    stages: list[StageResult] = field(default_factory=list)
    score: float = 1.0
    """Detection score (1.0 for user boxes and the whole image)."""

    @property
    def final(self) -> StageResult:
        """The last stage."""
        return self.stages[-1]

    @property
    def pose_3d(self) -> np.ndarray:
        """(17, 3) final 3D pose (best component of the last stage); NaN when not lifted."""
        fit = self.final.fit
        if fit is None:
            return np.full((17, 3), np.nan)
        return np.asarray(fit.pose_3d[0])


@dataclass
class EstimateResult:
    """Everything one ``Estimator.estimate`` call produced for one image."""

    image_size: tuple[int, int]
    """(width, height) of the original image (after EXIF rotation); every coordinate is in
    these pixels, even when the analysis ran on a downscaled copy (see ``messages``)."""
    persons: list[PersonResult]
    timings: dict[str, float]
    """Seconds per phase: 'preprocess', 'detect', 'cnn', 'lift', 'fusion', 'total', ..."""
    model: dict[str, Any]
    """Model info: name, version, settings, weight files."""
    device: str
    image_path: str | None = None
    messages: list[str] = field(default_factory=list)
    """Notes for the user (e.g. 'no person found', 'image downscaled from ...')."""

    @property
    def num_stages(self) -> int:
        """Number of CNN stages (0 when nobody was found)."""
        return len(self.persons[0].stages) if self.persons else 0
