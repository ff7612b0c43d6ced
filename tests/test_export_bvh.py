"""BVH export: read the file back with an independent minimal BVH reader and forward
kinematics written here (not the exporter's code) and recover every joint to within 1 mm."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_shared

from poseviewer.export import write_bvh
from poseviewer.export.bvh import bvh_text, euler_zxy
from poseviewer.result import EstimateResult, PersonResult, StageResult
from poseviewer.skeleton import H36M17


def _elem(axis: str, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    if axis == "X":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "Y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def read_bvh(text: str) -> tuple[list[dict], np.ndarray]:
    """Minimal BVH parser: joints (name, parent, offset, channels) and the motion matrix."""
    tok = text.split()
    i = 0
    joints: list[dict] = []
    stack: list[int] = []
    assert tok[i] == "HIERARCHY"
    i += 1
    while tok[i] != "MOTION":
        t = tok[i]
        if t in ("ROOT", "JOINT"):
            joints.append({"name": tok[i + 1], "parent": stack[-1] if stack else -1,
                           "offset": None, "channels": []})
            pending = len(joints) - 1
            i += 2
        elif t == "End":
            joints.append({"name": f"end_{joints[stack[-1]]['name']}", "parent": stack[-1],
                           "offset": None, "channels": []})
            pending = len(joints) - 1
            i += 2
        elif t == "{":
            stack.append(pending)
            i += 1
        elif t == "}":
            stack.pop()
            i += 1
        elif t == "OFFSET":
            joints[stack[-1]]["offset"] = np.array([float(x) for x in tok[i + 1:i + 4]])
            i += 4
        elif t == "CHANNELS":
            n = int(tok[i + 1])
            joints[stack[-1]]["channels"] = tok[i + 2:i + 2 + n]
            i += 2 + n
        else:
            raise AssertionError(f"unexpected token {t}")
    assert not stack
    assert tok[i + 1] == "Frames:"
    frames = int(tok[i + 2])
    assert tok[i + 3] == "Frame" and tok[i + 4] == "Time:"
    values = np.array([float(x) for x in tok[i + 6:]])
    nch = sum(len(j["channels"]) for j in joints)
    assert values.size == frames * nch
    return joints, values.reshape(frames, nch)


def forward_kinematics(joints: list[dict], frame: np.ndarray) -> dict[str, np.ndarray]:
    """Global position of every joint (BVH frame) for one frame of channel values."""
    out: dict[str, np.ndarray] = {}
    glob: list[np.ndarray] = []
    k = 0
    for j in joints:
        m = np.eye(4)
        m[:3, 3] = j["offset"]
        rot = np.eye(3)
        for ch in j["channels"]:
            v = frame[k]
            k += 1
            if ch.endswith("position"):
                m[{"X": 0, "Y": 1, "Z": 2}[ch[0]], 3] += v
            else:
                rot = rot @ _elem(ch[0], v)
        m[:3, :3] = rot
        g = m if j["parent"] < 0 else glob[j["parent"]] @ m
        glob.append(g)
        out[j["name"]] = g[:3, 3].copy()
    return out


def recovered_pose(text: str) -> np.ndarray:
    """(17, 3) pose in our frame (x right, y away, z up) from BVH text."""
    joints, motion = read_bvh(text)
    assert motion.shape[0] == 1
    pos = forward_kinematics(joints, motion[0])
    bvh = np.array([pos[n] for n in H36M17.joints])
    return np.stack([bvh[:, 0], -bvh[:, 2], bvh[:, 1]], axis=1)  # X, Y up, Z towards camera


def _hand_pose() -> np.ndarray:
    """A person facing the camera, left arm raised forward, right knee bent (mm, our frame)."""
    return np.array([
        [0, 0, 1000], [-120, 0, 1000], [-130, -150, 580], [-130, 20, 150],
        [120, 0, 1000], [130, 0, 560], [135, 30, 120],
        [0, 10, 1230], [0, 20, 1480], [0, 0, 1560], [0, 10, 1680],
        [160, 20, 1450], [180, -250, 1480], [170, -500, 1500],
        [-160, 20, 1450], [-300, 20, 1220], [-330, -20, 980],
    ], dtype=float)


def test_hand_pose_positions_within_1mm() -> None:
    pose = _hand_pose()
    got = recovered_pose(bvh_text(pose))
    assert np.abs(got - pose).max() < 1.0
    # the rest skeleton carries the pose's own bone lengths
    joints, _ = read_bvh(bvh_text(pose))
    by_name = {j["name"]: j for j in joints}
    par = H36M17.parents()
    for c in range(1, 17):
        want = np.linalg.norm(pose[c] - pose[par[c]])
        assert np.linalg.norm(by_name[H36M17.joints[c]]["offset"]) == pytest.approx(want, abs=1e-3)


def test_random_poses_and_degenerate_bones() -> None:
    rng = np.random.default_rng(5)
    for trial in range(30):
        pose = rng.normal(size=(17, 3)) * 400 + rng.normal(size=3) * 2000
        if trial == 1:  # a bone pointing exactly against its rest direction (leg up)
            pose[2] = pose[1] + np.array([0, 0, 400.0])
        if trial == 2:  # a zero-length bone
            pose[12] = pose[11]
        if trial == 3:  # the faithful capped-scale quirk: tens of metres in depth
            pose[:, 1] += 118000.0
        got = recovered_pose(bvh_text(pose))
        assert np.abs(got - pose).max() < 1.0, trial


def test_branch_joints_for_multi_child_joints() -> None:
    joints, _ = read_bvh(bvh_text(_hand_pose()))
    names = [j["name"] for j in joints]
    for parent in ("pelvis", "thorax"):
        kids = [H36M17.joints[c] for c in np.flatnonzero(H36M17.parents() == H36M17.index(parent))]
        for kid in kids:
            branch = names.index(f"{parent}_to_{kid}")
            assert joints[branch]["parent"] == names.index(parent)
            assert np.all(joints[branch]["offset"] == 0)
            assert joints[names.index(kid)]["parent"] == branch


def test_euler_zxy_round_trip_including_gimbal_lock() -> None:
    rng = np.random.default_rng(1)
    for k in range(50):
        q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        q *= np.sign(np.linalg.det(q))
        if k == 0:  # x = +90 deg exactly
            q = _elem("Z", 30) @ _elem("X", 90) @ _elem("Y", -20)
        z, x, y = euler_zxy(q)
        np.testing.assert_allclose(_elem("Z", z) @ _elem("X", x) @ _elem("Y", y), q, atol=1e-9)


def test_not_lifted_pose_is_an_error() -> None:
    pose = _hand_pose()
    pose[3] = np.nan
    with pytest.raises(ValueError, match="not lifted"):
        bvh_text(pose)
    with pytest.raises(ValueError, match="shape"):
        bvh_text(pose[:14])


def test_lifted_poses_of_every_component_round_trip(tmp_path) -> None:
    """Real liftings of the reference 2D poses (released model), every component,
    including a capped one with its depth shift: the BVH file reproduces all joints."""
    from poseviewer.lifting import PoseModel3D

    with np.load(require_shared("reference", "lftd", "lift_vectors_dev.npz")) as z:
        xy = z["in_pose_2d_yx"][:, :, ::-1].copy()
        vis = z["in_visibility"]
    model = PoseModel3D.from_mat(require_shared("reference", "lftd", "prob_model_params.mat"))
    model.elevations = (0.0,)  # the yaw-only fit caps a component of these cases
    fit = model.lift(xy, vis)
    persons = []
    for n in range(xy.shape[0]):
        empty = np.zeros((14, 0, 0), np.float32)
        st = StageResult(0, empty, None, empty, xy[n], vis[n].astype(float), vis[n],
                         fit.select(np.array([n])))
        persons.append(PersonResult(np.zeros(4), np.zeros(2), "user", np.eye(2, 3), [st]))
    result = EstimateResult((1000, 1000), persons, {}, {}, "cpu")
    comps = np.asarray(fit.components.pose_3d)
    assert np.isclose(np.asarray(fit.components.scale), -0.001).any()  # a capped one is in
    for n in range(xy.shape[0]):
        for k in [None, 0, 1, 2]:
            path = write_bvh(result, tmp_path / "p.bvh", person=n, component=k,
                             frame="lifting")
            want = np.asarray(fit.pose_3d)[n] if k is None else comps[n, k]
            assert np.abs(recovered_pose(path.read_text()) - want).max() < 1.0, (n, k)
    # by default the root (pelvis) sits at the origin: the same pose, moved
    centred = write_bvh(result, tmp_path / "c.bvh", person=20, component=0)
    got = recovered_pose(centred.read_text())
    np.testing.assert_allclose(got, comps[20, 0] - comps[20, 0, 0], atol=1.0)
    np.testing.assert_array_equal(got[0], [0.0, 0.0, 0.0])
