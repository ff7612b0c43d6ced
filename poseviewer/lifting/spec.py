"""The constants of the lifting (``../shared/docs/lifting-spec.md``) and of our elevation
fit, the observed joints and the yaw grid: what every other module of the lifting reads.

Nothing here depends on a model; it imports no other module of the lifting.
"""

from __future__ import annotations

import numpy as np

from poseviewer.result import SCALE_CAP
from poseviewer.skeleton import CPM14, CPM_TO_H36M_SLOTS, CPM_TO_H36M_SOURCES, H36M17

__all__ = ["SCALE_CAP"]  # re-exported: the fit's modules read every constant from here

#: Joints of the 3D model (H36M-17) and of the 2D input (CPM-14).
NUM_JOINTS_3D = H36M17.num_joints
NUM_JOINTS_2D = CPM14.num_joints
#: Camera of the spec: the image shows (X, -Z).
CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

_ORDER = np.argsort(CPM_TO_H36M_SLOTS)
#: Observed H36M slots (ascending) and the CPM joint each one takes.
OBS_SLOTS = CPM_TO_H36M_SLOTS[_ORDER]
OBS_SOURCES = CPM_TO_H36M_SOURCES[_ORDER]
#: The observed slots' x's, then their y's, as indices into a flattened (14, 2) joint array.
XY_INDEX = np.concatenate([2 * OBS_SOURCES, 2 * OBS_SOURCES + 1])
#: (child, parent) joint pairs of the 3D skeleton.
BONES = np.array(H36M17.bones, dtype=np.int64)
#: The H36M head (where the CPM head top is observed) and the thorax at the neck's base
#: (the head top lies beyond the head along thorax -> head: ``HEAD_TOP_OFFSET``).
HEAD_SLOT = H36M17.index("head")
THORAX_SLOT = H36M17.index("thorax")

#: Number of yaw angles searched (theta_j = 2 pi j / 100).
NUM_ANGLES = 100
#: Prior weight of the three translation coefficients (1e-5 squared).
TRANSLATION_PRIOR = 1e-10
#: Right-hand side of the first prior row (the scale prior, -0.003).
SCALE_PRIOR = -0.003
#: Multiplier of sigma in the regulariser weights.
SIGMA_FACTOR = 5.2
#: Weight of the observation in the blend of step 5.2.
BLEND_WEIGHT = 1.55
#: Final size normalisation of step 5.3.
OUTPUT_SIZE = 0.97 * 1174.88312988
#: Minimum number of visible joints to lift a person.
MIN_VISIBLE = 5


def _angles() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    theta = 2.0 * np.pi * np.arange(NUM_ANGLES, dtype=np.float64) / NUM_ANGLES
    for a in (theta, np.sin(theta), np.cos(theta)):
        a.flags.writeable = False
    return theta, np.sin(theta), np.cos(theta)


#: The yaw grid: theta_j = 2 pi j / 100 and its sines and cosines, (100,) each.
THETA, SIN, COS = _angles()


def bone_matrix() -> np.ndarray:
    """(17, 16): joint rows -> bone vectors (child - parent) by one matrix product."""
    b = np.zeros((NUM_JOINTS_3D, len(BONES)))
    b[BONES[:, 1], np.arange(len(BONES))] = 1.0
    b[BONES[:, 0], np.arange(len(BONES))] -= 1.0
    return b


#: Camera elevations searched with the yaws (degrees; positive: the camera looks down on
#: the person, R = R_x(e) R_z(yaw)). The level one (0) is solved exactly as the
#: release's yaw-only fit; ``release_exact`` searches it alone.
ELEVATIONS_DEG = (-15.0, 0.0, 15.0, 30.0, 45.0, 60.0, 75.0)
#: The release's yaw-only fit (a level camera): the default. The grid costs a visibility
#: pattern about 0.15 s to prepare on first sight (yaw-only: ~10 ms; measured on a 2-core
#: CPU), so a folder of photos estimates about 2.5x slower with it: users turn it on
#: (``PoseModel3D.elevation_search``, ``--elevation-search``, the viewer's Run menu).
LEVEL = (0.0,)
#: The "spike" prior on the elevation: the residual of every non-level rotation is
#: multiplied by 1 + this, before the choice of the rotation and in the score (level photos
#: keep their fit unless a tilted camera explains the joints clearly better). Measured
#: on Human3.6M S9+S11 (every 100th pose, all joints visible): 0.15 keeps 87 % of level
#: views level; 0.3 loses tilted ones (60 deg: 1.18 x the level figure). Every elevation,
#: level included, also fits a vertical image shift (``elevation``).
ELEVATION_SPIKE = 0.15
#:
#: Step 4's size term lgdet x s^2 is multiplied by cos e at elevation e: step 1 scales the
#: 2D pose by its image height, which a tilted camera shortens (by about cos e for an
#: upright person), so |s| grows with e and the unscaled term picks the component that
#: explains the image with the largest 3D pose, not the best one (measured on Human3.6M
#: S9+S11, camera at 60 deg: 78 mm P-MPJPE unscaled, 59 mm with cos e). Applied in
#: ``fit.lift``.
#:
#: Factor on the joint covariances of the elevation grid's fit (times the model's
#: ``cov_scale``). The posterior is the one given the chosen rotation; the grid's fit
#: explains the 2D joints more closely (its vertical shift removes the offset that the
#: yaw-only fit leaves in its residual, which fed its noise estimate) while the choice
#: among elevations adds error the posterior does not see. Fitted on Human3.6M S8 (every
#: 100th pose, ``eval-3d``'s projections and hidden joints: the factor that puts 90 % of
#: the true joints inside the 90 % ellipsoids); the test subjects S9+S11 then get 90.6 %
#: / 93.3 % at 90 / 95 % (yaw-only, unscaled: 92.7 / 95.3).
ELEVATION_COV_FACTOR = 2.7


def elevation_grid(elevations_deg: tuple[float, ...]) -> tuple[np.ndarray, int]:
    """(the elevations in radians (E,), the index of the level one) of a grid that must
    hold 0 (the release's fit) and lie within (-90, 90) degrees."""
    e = np.asarray(elevations_deg, dtype=np.float64).reshape(-1)
    if not len(e) or not np.isfinite(e).all() or np.abs(e).max() >= 90.0:
        raise ValueError(f"elevations must be finite degrees in (-90, 90), got {elevations_deg}")
    if len(np.unique(e)) != len(e):
        raise ValueError(f"elevations must be distinct, got {elevations_deg}")
    level = np.flatnonzero(e == 0.0)
    if not len(level):
        raise ValueError(f"the elevation grid must hold 0 (level), got {elevations_deg}")
    return np.deg2rad(e), int(level[0])


#: LSP's head top as the 3D model sees it, in the elevation grid's fit: the CPM head top is
#: observed as the point head + HEAD_TOP_OFFSET x (head - thorax) of the H36M-17 pose, beyond
#: the head along the neck (Human3.6M's "head" joint is the middle of the head, not its
#: top), the joint that the fit's residual, the blend and the projected head top
#: (``joints_2d``'s head slot) use. Learned from LSP-extended training labels through the
#: fit's residual (``scripts/head_top_offset.py``: the offset where the training labels'
#: projected head top has no bias, 1.663 with the bundled model on 600 training labels; the
#: fit absorbs part of any offset). The direction along head - neck/nose (the face's
#: joint), which needed 2.65, cost the other 13 joints about 1.2 points of the labels'
#: projection PCK (docs/lifting.md). 0 is the release's observation.
HEAD_TOP_OFFSET = 1.66
