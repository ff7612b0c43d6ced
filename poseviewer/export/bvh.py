"""BVH export of one lifted 3D pose (H36M-17) with a rest skeleton from its own bone lengths.

Layout (see docs/export-format.md):

* BVH frame: X = our x (image right, the person's left when facing the camera), Y = our z
  (up), Z = -(our y) (towards the camera). Right-handed, Y up, millimetres.
* Rest pose: a T-pose whose bone lengths are those of the exported pose (one skeleton per
  file, so one frame per file: the lifting does not keep bone lengths equal across stages,
  components or people). Legs point down, spine/neck/head up, arms sideways.
* Joints with several children (pelvis, thorax) get one zero-offset branch joint per child
  (``pelvis_to_right_hip`` ...): a BVH rotation is shared by all children of a joint, so the
  branch joints carry each bone's own direction and every joint position is reproduced
  exactly. The pelvis and thorax themselves carry the best rigid fit of their children
  (Kabsch), so they hold the body's overall orientation; each other bone is the minimal
  (swing-only) rotation from its rest direction.
* Channels: root ``Xposition Yposition Zposition Zrotation Xrotation Yrotation``, others
  ``Zrotation Xrotation Yrotation`` (degrees; local rotation = Rz @ Rx @ Ry acting on column
  vectors). Leaves end in an End Site that continues the last bone by a quarter of its length.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from poseviewer.export._io import DEFAULT_FRAME, atomic_write_text, fit_values, in_frame
from poseviewer.result import EstimateResult
from poseviewer.skeleton import H36M17

#: our frame (x right, y away, z up) -> BVH frame (X right, Y up, Z towards the camera)
TO_BVH = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_LEFT, _RIGHT, _UP, _DOWN = (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0)
#: rest direction (BVH frame) of the bone ending at each H36M-17 joint
_REST_BY_NAME = {
    "right_hip": _RIGHT, "right_knee": _DOWN, "right_ankle": _DOWN,
    "left_hip": _LEFT, "left_knee": _DOWN, "left_ankle": _DOWN,
    "spine": _UP, "thorax": _UP, "neck_nose": _UP, "head": _UP,
    "left_shoulder": _LEFT, "left_elbow": _LEFT, "left_wrist": _LEFT,
    "right_shoulder": _RIGHT, "right_elbow": _RIGHT, "right_wrist": _RIGHT,
}
REST_DIRECTIONS = np.array(
    [_REST_BY_NAME.get(n, (0.0, 0.0, 0.0)) for n in H36M17.joints], dtype=np.float64
)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minimal rotation taking the direction of ``a`` to the direction of ``b``."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < 1e-12 or nb < 1e-12:
        return np.eye(3)
    a, b = a / na, b / nb
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1.0 + 1e-12:  # opposite: half turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def _best_rotation(rest: np.ndarray, posed: np.ndarray) -> np.ndarray:
    """Rotation R minimising sum |R rest_i - posed_i|^2 over unit directions (Kabsch)."""
    def unit(x: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return np.where(n > 1e-12, x / np.maximum(n, 1e-12), 0.0)

    h = unit(posed).T @ unit(rest)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def euler_zxy(r: np.ndarray) -> tuple[float, float, float]:
    """(z, x, y) angles in degrees with r = Rz(z) @ Rx(x) @ Ry(y)."""
    sx = float(np.clip(r[2, 1], -1.0, 1.0))
    x = np.arcsin(sx)
    if abs(sx) < 1.0 - 1e-9:
        z = np.arctan2(-r[0, 1], r[1, 1])
        y = np.arctan2(-r[2, 0], r[2, 2])
    else:  # gimbal lock: only z +- y is defined; put it all on z
        y = 0.0
        z = np.arctan2(r[1, 0], r[0, 0])
    return float(np.degrees(z)), float(np.degrees(x)), float(np.degrees(y))


def bvh_text(pose_3d: np.ndarray, frame_time: float = 1.0 / 30.0) -> str:
    """BVH text of one H36M-17 pose (J3, 3) in our frame (mm); one frame. See module doc."""
    lines, values = bvh_parts(pose_3d)
    lines += ["MOTION", "Frames: 1", f"Frame Time: {frame_time:.6f}",
              " ".join(f"{v:.6f}" for v in values)]
    return "\n".join(lines) + "\n"


def bvh_parts(pose_3d: np.ndarray) -> tuple[list[str], list[float]]:
    """The HIERARCHY lines (rest skeleton with this pose's bone lengths) and the one frame's
    channel values (root position, then (z, x, y) degrees per joint) of an H36M-17 pose."""
    pose = np.asarray(pose_3d, dtype=np.float64)
    n = H36M17.num_joints
    if pose.shape != (n, 3):
        raise ValueError(f"pose_3d has shape {pose.shape}, expected ({n}, 3)")
    if not np.all(np.isfinite(pose)):
        raise ValueError("pose_3d holds NaN or inf (the person was not lifted)")
    p = pose @ TO_BVH.T
    parents = H36M17.parents()
    names = H36M17.joints
    children = [[int(c) for c in np.flatnonzero(parents == j)] for j in range(n)]
    length = np.r_[0.0, np.linalg.norm(p[1:] - p[parents[1:]], axis=1)]
    offset = REST_DIRECTIONS * length[:, None]  # rest offset of each joint from its parent

    lines: list[str] = ["HIERARCHY"]
    values: list[float] = list(p[0])
    rot_ch = "CHANNELS 3 Zrotation Xrotation Yrotation"

    def fmt(v: np.ndarray) -> str:
        return " ".join(f"{x:.6f}" for x in v)

    def emit(j: int, parent_g: np.ndarray, off: np.ndarray, depth: int) -> None:
        ind = "  " * depth
        kids = children[j]
        if depth == 0:
            lines.append(f"ROOT {names[j]}")
            lines.append(f"{ind}{{")
            lines.append(f"{ind}  OFFSET {fmt(np.zeros(3))}")
            lines.append(f"{ind}  CHANNELS 6 Xposition Yposition Zposition "
                         "Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{ind}JOINT {names[j]}")
            lines.append(f"{ind}{{")
            lines.append(f"{ind}  OFFSET {fmt(off)}")
            lines.append(f"{ind}  {rot_ch}")
        if not kids:
            local = np.eye(3)
            values.extend(euler_zxy(local))
            tip = REST_DIRECTIONS[j] * 0.25 * length[j]
            lines.extend([f"{ind}  End Site", f"{ind}  {{", f"{ind}    OFFSET {fmt(tip)}",
                          f"{ind}  }}"])
        elif len(kids) == 1:
            c = kids[0]
            local = _rotation_between(offset[c], parent_g.T @ (p[c] - p[j]))
            values.extend(euler_zxy(local))
            emit(c, parent_g @ local, offset[c], depth + 1)
        else:
            local = _best_rotation(offset[kids], (parent_g.T @ (p[kids] - p[j]).T).T)
            values.extend(euler_zxy(local))
            g = parent_g @ local
            for c in kids:
                bind = "  " * (depth + 1)
                branch = _rotation_between(offset[c], g.T @ (p[c] - p[j]))
                lines.append(f"{bind}JOINT {names[j]}_to_{names[c]}")
                lines.append(f"{bind}{{")
                lines.append(f"{bind}  OFFSET {fmt(np.zeros(3))}")
                lines.append(f"{bind}  {rot_ch}")
                values.extend(euler_zxy(branch))
                emit(c, g @ branch, offset[c], depth + 2)
                lines.append(f"{bind}}}")
        lines.append(f"{ind}}}")

    emit(0, np.eye(3), np.zeros(3), 0)
    return lines, values


def write_bvh(
    result: EstimateResult,
    path: str | os.PathLike[str],
    person: int = 0,
    stage: int = -1,
    component: int | None = None,
    frame: str = DEFAULT_FRAME,
    camera_view: bool = False,
) -> Path:
    """Write one person's 3D pose (a stage, a component: default last stage, best component)
    as a one-frame BVH file (atomic). ``frame='pelvis'`` (default) puts the root (pelvis) at
    the origin; ``'lifting'`` keeps the lifting's own frame.

    The pose is upright (the fit's camera elevation removed: the root orientation is the
    body's relative to the floor). ``camera_view`` True tilts it by the fitted elevation
    (``Fit.elevation``) about the image's x axis instead, so that the file shows the person
    as the photo's camera saw them (looking down by the elevation)."""
    if not 0 <= person < len(result.persons):
        raise ValueError(f"no person {person}: the result has {len(result.persons)}")
    st = in_frame(result, frame).persons[person].stages[stage]
    vals = fit_values(st.fit)
    if vals is None or not bool(vals[0]["lifted"]):
        raise ValueError(f"person {person} stage {st.index} was not lifted: no 3D pose to write")
    fit, comps = vals
    if component is None:
        pose = fit["pose_3d"]
    else:
        k = comps["pose_3d"].shape[0]
        if not 0 <= component < k:
            raise ValueError(f"no component {component}: the fit has {k}")
        pose = comps["pose_3d"][component]
    if camera_view:
        el = fit.get("elevation") if component is None else comps.get("elevation", [None] *
                                                                       (component + 1))[component]
        pose = camera_tilt(pose, 0.0 if el is None else float(el))
    return atomic_write_text(path, bvh_text(pose))


def camera_tilt(pose_3d: np.ndarray, elevation: float) -> np.ndarray:
    """An upright pose (J, 3) (x right, y away, z up) as seen by a camera looking down by
    ``elevation`` radians: rotated about x so that the camera's up is z (a point further
    away moves up: z' = sin e y + cos e z, y' = cos e y - sin e z)."""
    c, s = np.cos(elevation), np.sin(elevation)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.asarray(pose_3d, dtype=np.float64) @ rot.T
