"""The 3D pose model of "Lifting from the Deep" and the batched, exact lifting (numpy).

``PoseModel3D`` (``model``) holds the mixture of probabilistic PCA models (released ``.mat``
or our safetensors format); ``PoseModel3D.lift`` lifts CPM-14 2D joints to H36M-17 3D poses
for a whole batch at once and returns a ``LiftResult`` (``result``) with every component's
fit (``ComponentFits``). The maths is ``../shared/docs/lifting-spec.md``. Modules by role:
``spec`` the constants, ``params`` the parameters as the fit reads them, ``fit`` the fit
(steps 1-5), ``direct`` the direct solve of steps 2-3, ``cache`` the per-pattern operators,
``covariance`` the joint covariances, ``elevation`` the yaw x elevation fit,
``plausibility`` the checks of a lifted pose.
"""

from __future__ import annotations

from poseviewer.lifting.model import (
    ModelFileError,
    ModelFileNotFoundError,
    PoseModel3D,
    PoseModelError,
    PoseModelNotFoundError,
    load_pose_model,
)
from poseviewer.lifting.result import ComponentFits, LiftResult, ellipsoid_d2

__all__ = ["ComponentFits", "LiftResult", "ModelFileError", "ModelFileNotFoundError",
           "PoseModel3D", "PoseModelError", "PoseModelNotFoundError", "ellipsoid_d2",
           "load_pose_model"]
