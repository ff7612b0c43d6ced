"""A NaN or infinite 2D joint is never visible: in the importers, ``poseviewer lift``, the
results and their readers, every export, the estimator, and the messages that count
visible joints."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from poseviewer.cli import main
from poseviewer.export import lift_imported, read_joints_2d, read_json, read_npz, write_json
from poseviewer.export.importers import Imported2D
from poseviewer.result import StageResult
from poseviewer.skeleton import CPM14, finite_visible

torch.set_num_threads(1)

#: a plausible standing person, CPM-14 order (x, y) in pixels
STANDING = np.array([[100, 20], [100, 45], [80, 50], [70, 80], [65, 110], [120, 50],
                     [130, 80], [135, 110], [88, 120], [86, 165], [85, 210], [112, 120],
                     [114, 165], [115, 210]], dtype=np.float64)


def test_finite_visible_by_hand() -> None:
    xy = np.zeros((2, 3, 2))
    xy[0, 1, 0] = np.nan
    xy[1, 2, 1] = -np.inf
    vis = np.array([[True, True, False], [True, False, True]])
    assert finite_visible(xy, vis).tolist() == [[True, False, False], [True, False, False]]


def test_a_stage_never_keeps_a_nonfinite_joint_visible(tmp_path) -> None:
    xy = STANDING.copy()
    xy[3] = np.nan
    xy[7, 1] = np.inf
    st = StageResult(index=0, cnn_maps=np.zeros((14, 0, 0), np.float32), projected_maps=None,
                     fused_maps=np.zeros((14, 0, 0), np.float32), joints_2d=xy,
                     confidence=np.ones(14), visible=np.ones(14, bool), fit=None)
    assert st.visible.sum() == 12 and not st.visible[3] and not st.visible[7]


def _coco(tmp_path, people: list[np.ndarray]) -> str:
    """A COCO file, COCO-17 keypoints with v = 2 on every joint; the CPM joints' coordinates
    as given (NaN / inf included: Python's json writes NaN and Infinity), the face at the
    head top."""
    from poseviewer.skeleton import CPM_TO_COCO_DST, CPM_TO_COCO_SRC

    anns = []
    for i, xy in enumerate(people):
        kp = np.full((17, 3), 2.0)
        kp[:, :2] = xy[CPM14.index("head_top")]
        kp[CPM_TO_COCO_DST, :2] = xy[CPM_TO_COCO_SRC]
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1,
                     "keypoints": kp.ravel().tolist()})
    doc = {"images": [{"id": 1, "file_name": "img.jpg", "width": 300, "height": 300}],
           "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "people.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_lift_command_all_nan_and_some_infinite(tmp_path) -> None:
    all_nan = np.full((14, 2), np.nan)
    some_inf = STANDING.copy()
    some_inf[CPM14.index("left_knee"), 0] = np.inf
    some_inf[CPM14.index("right_wrist")] = np.nan
    src = _coco(tmp_path, [all_nan, some_inf])
    out = tmp_path / "out"
    assert main(["lift", src, "--out", str(out), "--format", "json,csv,npz,coco"]) == 0
    doc = json.loads((out / "img.json").read_text())
    p0, p1 = (p["stages"][0] for p in doc["persons"])
    # person 0: every joint null and not visible; person 1: the two bad joints
    assert all(v is False for v in p0["visible"])
    assert all(xy == [None, None] for xy in p0["joints_2d"])
    bad = {CPM14.index("left_knee"), CPM14.index("right_wrist"), CPM14.index("head_top")}
    assert [i for i, v in enumerate(p1["visible"]) if not v] == sorted(bad)
    # the message counts the visible joints it means
    assert "person 0: 0 visible joints, fewer than 5: not lifted" in doc["messages"]
    # the same in every format, and when read back
    back = read_json(out / "img.json")
    assert back.persons[0].final.visible.sum() == 0 and back.persons[1].final.visible.sum() == 11
    npz = read_npz(out / "img.npz")
    assert npz.persons[1].final.visible.tolist() == back.persons[1].final.visible.tolist()
    with open(out / "img.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "2d"]
    for r in rows:
        xy_known = r["image_x"] not in ("", "nan") and r["image_y"] not in ("", "nan")
        assert r["visible"] == "0" or xy_known, r
    assert sum(r["visible"] == "1" for r in rows) == 11
    assert all(float(r["confidence"]) == 0 for r in rows if r["person"] == "0")
    coco = json.loads((out / "keypoints_coco.json").read_text())
    v0 = coco["annotations"][0]["keypoints"][2::3]
    assert set(v0) == {0}
    # person 1 still lifted from its 11 finite joints
    assert bool(np.asarray(back.persons[1].final.fit.lifted)[0])


def test_our_json_with_null_joints_marked_visible(tmp_path) -> None:
    """A result JSON edited by hand (or by another tool) with null joints still marked
    visible: they are read as not visible and left out of the lifting."""
    from poseviewer.lifting import load_pose_model

    item = Imported2D(joints_2d=STANDING[None].copy(), visible=np.ones((1, 14), bool),
                      confidence=np.ones((1, 14)), boxes=np.array([[60, 10, 140, 220.0]]))
    model = load_pose_model(None)
    res = lift_imported(item, model)
    path = write_json(res, tmp_path / "r.json")
    doc = json.loads(path.read_text())
    st = doc["persons"][0]["stages"][0]
    st["joints_2d"][0] = [None, None]  # head top unknown, still "visible": true
    st["joints_2d"][5] = [None, 3.0]
    path.write_text(json.dumps(doc))
    (imp,) = read_joints_2d(path)
    assert imp.visible.sum() == 12 and not imp.visible[0, 0] and not imp.visible[0, 5]
    lifted = lift_imported(imp, model)
    assert bool(np.asarray(lifted.persons[0].final.fit.lifted)[0])
    # lifted from the 12 finite joints: the same as lifting them with the two left out
    xy = np.where(imp.visible[..., None], imp.joints_2d, 0.0)
    want = model.lift(xy, imp.visible, as_numpy=True)
    np.testing.assert_allclose(lifted.persons[0].final.fit.pose_3d[0],
                               np.asarray(want.pose_3d)[0], atol=1e-9)


def test_estimator_marks_a_nonfinite_joint_invisible(monkeypatch) -> None:
    """A network whose joint reading gives NaN / inf for a confident joint: the estimate
    runs (no error from the lifting), that joint is not visible in any stage, and the
    person is lifted from the rest."""
    from poseviewer.cnn import LiftingCPM, tiny_test
    from poseviewer.cnn.config import CPMConfig
    from poseviewer.estimator import Estimator
    from poseviewer.lifting import load_pose_model

    torch.manual_seed(0)
    cfg = CPMConfig.from_dict({**tiny_test(fusion=True, num_stages=2).to_dict(),
                               "visibility_threshold": -1e9})
    net = LiftingCPM(cfg)
    real_read = LiftingCPM.read

    def read(self, maps, size):
        joints, conf = real_read(self, maps, size)
        joints = joints.clone()
        joints[:, 4, 0] = float("nan")
        joints[:, 9, 1] = float("inf")
        return joints, torch.ones_like(conf)

    monkeypatch.setattr(LiftingCPM, "read", read)
    est = Estimator(net, load_pose_model(None), device="cpu", detector=None)
    img = (np.random.default_rng(0).random((160, 120, 3)) * 255).astype(np.uint8)
    res = est.estimate(img)
    for st in res.persons[0].stages:
        assert st.visible.sum() == 12 and not st.visible[4] and not st.visible[9]
        assert np.isfinite(st.joints_2d[st.visible]).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_imported_joints_nonfinite_never_visible(value) -> None:
    xy = STANDING[None].copy()
    xy[0, 2, 1] = value
    item = Imported2D(joints_2d=xy, visible=np.ones((1, 14), bool),
                      confidence=np.ones((1, 14)), boxes=np.zeros((1, 4)))
    assert item.visible.sum() == 13 and not item.visible[0, 2]
