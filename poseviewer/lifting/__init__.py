"""The 3D pose model of "Lifting from the Deep" and the batched, exact lifting.

``PoseModel3D`` holds the mixture of probabilistic PCA models (released ``.mat`` or our
safetensors format); ``PoseModel3D.lift`` lifts CPM-14 2D joints to H36M-17 3D poses for a
whole batch at once and returns a ``LiftResult`` with every component's fit
(``ComponentFits``). The maths is ``../shared/docs/lifting-spec.md``; ``solve`` explains how
it is solved.
"""

from __future__ import annotations

from poseviewer.lifting.loading import load_pose_model
from poseviewer.lifting.model import ModelFileError, ModelFileNotFoundError, PoseModel3D
from poseviewer.lifting.result import ComponentFits, LiftResult, ellipsoid_d2

__all__ = ["ComponentFits", "LiftResult", "ModelFileError", "ModelFileNotFoundError",
           "PoseModel3D", "ellipsoid_d2", "load_pose_model"]
