"""The person's own camera ray (poseviewer.camera): the virtual camera, its use in the
lifting, ``--fov`` and ``Estimator(fov=...)``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poseviewer.camera import (
    DEFAULT_FOV_DEG,
    RayLifter,
    check_fov,
    focal_length,
    lift_along_rays,
    ray_cameras,
    world_up,
)
from poseviewer.metrics import p_mpjpe
from poseviewer.skeleton import h36m_to_cpm

SIZE = (1600, 1200)


def test_focal_length_by_hand():
    # 90 degrees across the longer side: f = half that side
    assert focal_length(90.0, (200, 100)) == pytest.approx(100.0)
    assert focal_length(90.0, (100, 200)) == pytest.approx(100.0)  # portrait: the same
    assert focal_length(60.0, SIZE) == pytest.approx(800.0 / np.tan(np.radians(30.0)))
    for bad in (-5, 180, 200, float("nan")):
        with pytest.raises(ValueError, match="between 0 and 180"):
            check_fov(bad)
    assert check_fov(0) == 0.0 and check_fov(None) == 0.0 and check_fov("55") == 55.0


def test_world_up_by_hand():
    assert np.allclose(world_up(0.0), [0, -1, 0])  # level: image up
    assert np.allclose(world_up(np.pi / 2), [0, 0, -1])  # looking straight down


def test_centred_person_is_not_moved_and_the_ray_maps_to_the_anchor():
    centre = np.array([[800.0, 600.0]])
    cams = ray_cameras(centre, SIZE, 60.0)
    assert np.allclose(cams.rotation[0], np.eye(3))
    xy = np.random.default_rng(0).uniform(0, 1200, (1, 14, 2))
    assert np.allclose(cams.to_virtual(xy), xy)
    # off-centre, tilted camera: every point on the person's ray lands on the anchor
    c = np.array([[1350.0, 150.0], [100.0, 1100.0]])
    cams = ray_cameras(c, SIZE, 50.0, elevation=np.radians([30.0, -10.0]))
    f = focal_length(50.0, SIZE)
    ray = np.concatenate([(c - 400 * np.array([2, 1.5])) / f, np.ones((2, 1))], -1)
    for depth in (0.5, 3.0, 40.0):
        p = depth * ray  # points on the ray, projected by the photo's pinhole
        img = f * p[:, :2] / p[:, 2:] + [800, 600]
        assert np.allclose(cams.to_virtual(img[:, None])[:, 0], c)


def test_round_trip_and_level_axes():
    rng = np.random.default_rng(1)
    c = rng.uniform(0, 1200, (5, 2))
    el = np.radians(rng.uniform(-20, 70, 5))
    cams = ray_cameras(c, SIZE, 65.0, el)
    xy = rng.uniform(-100, 1700, (5, 14, 2))
    assert np.allclose(cams.to_image(cams.to_virtual(xy)), xy, atol=1e-9)
    v = rng.uniform(-300, 300, (5, 3, 2)) + c[:, None]
    assert np.allclose(cams.to_virtual(cams.to_image(v)), v, atol=1e-9)
    r = cams.rotation
    assert np.allclose(r @ r.swapaxes(1, 2), np.eye(3)) and np.allclose(np.linalg.det(r), 1)
    up = world_up(el)
    assert np.allclose((r[:, 0] * up).sum(-1), 0.0)  # the virtual x axis is level
    assert ((r[:, 1] * up).sum(-1) < 0).all()  # and its y axis points down


def _mean_pose(model) -> np.ndarray:
    """Component 0's mean pose (17, 3): x right, y depth, z up."""
    return np.asarray(model.mu, dtype=np.float64)[0].T


def _render(pose, off_deg, psi_deg, elev_deg, distance, f):
    """The pose (17, 3) (x right, y depth, z up; centred) seen by a pinhole (f, the photo
    SIZE, principal point at its centre) tilted down by ``elev_deg``, the pose's centre
    ``off_deg`` off the axis in the image direction ``psi_deg``: CPM-14 pixels."""
    e = np.radians(elev_deg)
    # world -> camera (x right, y down, z forward): columns are the world axes
    rot = np.array([[1.0, 0.0, 0.0],
                    [0.0, -np.sin(e), -np.cos(e)],
                    [0.0, np.cos(e), -np.sin(e)]])
    a, psi = np.radians(off_deg), np.radians(psi_deg)
    ray = np.array([np.sin(a) * np.cos(psi), np.sin(a) * np.sin(psi), np.cos(a)])
    p = (pose - pose.mean(0)) @ rot.T + distance * ray
    return h36m_to_cpm((f * p[:, :2] / p[:, 2:] + np.array(SIZE) / 2)[None])


@pytest.fixture(scope="module")
def model():
    from poseviewer.lifting import load_pose_model

    m = load_pose_model(None)
    m.head_top_offset = 0.0  # the rendered joints are Human3.6M's (no top of the head)
    return m


def test_off_axis_person_is_recovered_by_the_virtual_camera(model):
    """A far person (nearly weak perspective) 35 degrees to the side of a level camera:
    the photo stretches them sideways by 1 / cos 35 = 1.22, which the orthographic fit
    takes for a wider pose; seen along their ray they are lifted as well as a person at
    the image centre."""
    pose = _mean_pose(model)
    f = focal_length(60.0, SIZE)
    img = _render(pose, 35.0, 0.0, 0.0, 30000.0, f)
    vis = np.ones((1, 14), dtype=bool)
    model.elevation_search = False
    ortho = lift_along_rays(model, img, vis, SIZE, 0)
    ray = lift_along_rays(model, img, vis, SIZE, 60.0)
    centred = lift_along_rays(model, _render(pose, 0.0, 0.0, 0.0, 30000.0, f), vis, SIZE, 0)
    e_centred, e_ortho, e_ray = (float(p_mpjpe(r.pose_3d, pose[None])[0])
                                 for r in (centred, ortho, ray))
    # (the fit does not return even the mean pose exactly: e_centred is ~9 mm)
    assert e_ray < e_centred + 1.0 and e_ortho > e_centred + 5.0, (e_centred, e_ortho, e_ray)
    # the fit's projection is drawn back over the photo: as close to the photo's joints
    # as the centred person's (whose fit leaves a vertical offset of ~2 px)
    from poseviewer.skeleton import CPM_TO_H36M_SLOTS, CPM_TO_H36M_SOURCES

    def miss(fit, photo):
        return np.abs(fit.joints_2d[0, CPM_TO_H36M_SLOTS] - photo[0, CPM_TO_H36M_SOURCES]
                      ).max()

    m_centred = miss(centred, _render(pose, 0.0, 0.0, 0.0, 30000.0, f))
    assert miss(ray, img) < m_centred + 1.0, (m_centred, miss(ray, img))
    # (the virtual image differs from the photo by more than that: the fit's 2D fields
    # were moved back)
    cams = ray_cameras(img.mean(1), SIZE, 60.0)
    assert np.abs(cams.to_virtual(img) - img).max() > m_centred + 5.0


def test_elevated_camera_levelled_per_elevation(model):
    """Camera tilted down 45 degrees, person 25 degrees to the side, 3 m: the photo shows
    them rolled. With the elevation search the virtual camera levelled for each
    elevation finds a pose as good as with the true elevation given, better than the
    level assumption, and the fitted elevation is the ray's own depression."""
    pose = _mean_pose(model)
    f = focal_length(60.0, SIZE)
    img = _render(pose, 25.0, 0.0, 45.0, 3000.0, f)
    vis = np.ones((1, 14), dtype=bool)
    model.elevation_search = True
    try:
        level = lift_along_rays(model, img, vis, SIZE, 60.0, elevation=0.0)
        truth = lift_along_rays(model, img, vis, SIZE, 60.0, elevation=np.radians(45.0))
        auto = lift_along_rays(model, img, vis, SIZE, 60.0)
    finally:
        model.elevation_search = False
    err = {k: float(p_mpjpe(v.pose_3d, pose[None])[0])
           for k, v in (("level", level), ("truth", truth), ("auto", auto))}
    assert err["auto"] <= err["truth"] + 1.0 and err["auto"] < err["level"] - 5.0, err
    # the ray (25 deg to the side of an axis 45 deg down) is asin(cos 25 sin 45) down
    depression = np.degrees(np.arcsin(np.cos(np.radians(25)) * np.sin(np.radians(45))))
    assert abs(np.degrees(auto.elevation[0]) - depression) < 10.0


def test_candidate_cameras_are_lifted_in_one_call(model):
    """With the elevation search every candidate virtual camera of every person goes
    through one ``lift`` call (a visibility pattern is met once, by all its candidates),
    and each person keeps the candidate of lowest score, as lifting the candidates one by
    one gives."""
    from poseviewer import camera

    pose = _mean_pose(model)
    f = focal_length(60.0, SIZE)
    img = np.concatenate([_render(pose, 25.0, 0.0, 45.0, 3000.0, f),
                          _render(pose, 15.0, 2.0, 20.0, 4000.0, f),
                          _render(pose, 5.0, 1.0, 0.0, 3000.0, f)])
    vis = np.ones((3, 14), dtype=bool)
    vis[1, 3] = vis[2, [0, 9]] = False

    class Counting:
        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, name):
            return getattr(model, name)

        def lift(self, *a, **k):
            self.calls += 1
            return model.lift(*a, **k)

    model.elevation_search = True
    try:
        counting = Counting()
        auto = lift_along_rays(counting, img, vis, SIZE, 60.0)
        centres = camera.visible_centres(img, vis)
        fits, scores = [], []
        for e in camera.elevation_candidates(model):
            virt = ray_cameras(centres, SIZE, 60.0, e).to_virtual(img)
            fit = model.lift(virt, vis, as_numpy=True)
            fits.append(fit.pose_3d)
            scores.append(camera._best_score(fit))
    finally:
        model.elevation_search = False
    assert counting.calls == 1
    best = np.argmin(np.array(scores), 0)  # first minimum: the loop keeps the earliest
    want = np.array(fits)[best, np.arange(3)]
    np.testing.assert_allclose(auto.pose_3d, want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_ray_lifter_in_map_coordinates_equals_image_pixels(model):
    """The network lifts on its map grid: joints in a crop's frame with its affine give
    the same fit as the image pixels, with the 2D fields back in the crop's frame."""
    pose = _mean_pose(model)
    img = _render(pose, 20.0, 120.0, 10.0, 4000.0, focal_length(60.0, SIZE))
    vis = np.ones((1, 14), dtype=bool)
    m = np.array([[[8.0, 0.0, 1000.0], [0.0, 8.0, 300.0]]])  # map -> image
    inv = np.linalg.inv(np.vstack([m[0], [0, 0, 1]]))[:2]
    grid = img @ inv[:, :2].T + inv[:, 2]
    a = RayLifter(model, 55.0, SIZE).lift(img, vis)
    b = RayLifter(model, 55.0, SIZE, m).lift(grid, vis)
    assert np.allclose(a.pose_3d, b.pose_3d)
    assert np.allclose(b.joints_2d @ m[0, :, :2].T + m[0, :, 2], a.joints_2d)
    assert np.allclose(b.norm * 8.0, a.norm) and RayLifter(model, 55.0, SIZE).meta == model.meta


def test_fov_option_of_the_commands():
    import argparse

    from poseviewer.commands import estimate, lift
    from poseviewer.commands._options import EstimateOptions

    for mod in (estimate, lift):
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        base = ["x.json", "--out", "o"]
        assert p.parse_args(base).fov is None
        assert p.parse_args(base + ["--fov", "0"]).fov == 0.0
        assert p.parse_args(base + ["--fov", "72.5"]).fov == 72.5
        with pytest.raises(SystemExit):
            p.parse_args(base + ["--fov", "180"])
    p = argparse.ArgumentParser()
    estimate.add_arguments(p)
    opts = EstimateOptions.from_args(p.parse_args(["x.png", "--out", "o", "--fov", "40"]))
    assert opts.estimator.fov == 40


def test_lift_command_fov_and_unchanged_export_format(tmp_path, model, capsys):
    """``poseviewer lift`` lifts along the rays (the COCO file gives the image size):
    a person off the image centre gets another fit than with --fov 0, the export's
    structure is the same."""
    from poseviewer.cli import main

    pose = _mean_pose(model)
    img = _render(pose, 25.0, 10.0, 0.0, 3000.0, focal_length(DEFAULT_FOV_DEG, SIZE))[0]
    from poseviewer.skeleton import CPM14

    # our CPM-14 JSON is simplest: write a COCO-17 file from the CPM joints it has
    coco_names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                  "right_ankle"]
    kp = []
    for name in coco_names:
        if name in CPM14.joints:
            x, y = img[CPM14.joints.index(name)]
            kp += [float(x), float(y), 2]
        else:
            kp += [0.0, 0.0, 0]
    doc = {"images": [{"id": 1, "file_name": "p.jpg", "width": SIZE[0], "height": SIZE[1]}],
           "annotations": [{"image_id": 1, "keypoints": kp}]}
    src = tmp_path / "p.json"
    src.write_text(json.dumps(doc))
    outs = {}
    for tag, extra in (("ray", []), ("ortho", ["--fov", "0"])):
        out = tmp_path / tag
        assert main(["lift", str(src), "--out", str(out), "--format", "json"] + extra) == 0
        outs[tag] = json.loads((out / "p.json").read_text())
    capsys.readouterr()

    def keys(d, prefix=""):
        if isinstance(d, dict):
            return {prefix + k for k in d} | set().union(
                *(keys(v, prefix + k + ".") for k, v in d.items()))
        if isinstance(d, list) and d and isinstance(d[0], dict):
            return keys(d[0], prefix)
        return set()

    assert keys(outs["ray"]) == keys(outs["ortho"])
    fit_r = outs["ray"]["persons"][0]["stages"][0]["fit"]
    fit_o = outs["ortho"]["persons"][0]["stages"][0]["fit"]
    assert not np.allclose(fit_r["pose_3d"], fit_o["pose_3d"], atol=1.0)


def test_estimator_fov_setting():
    from poseviewer.cnn import LiftingCPM, tiny_test
    from poseviewer.estimator import Estimator

    est = Estimator(LiftingCPM(tiny_test()), device="cpu")
    assert est.fov == DEFAULT_FOV_DEG and est._model_info()["fov"] == DEFAULT_FOV_DEG
    est.fov = 0
    assert est.fov == 0.0
    with pytest.raises(ValueError, match="between 0 and 180"):
        Estimator(LiftingCPM(tiny_test()), device="cpu", fov=200)
    with pytest.raises(ValueError, match="no 3D model"):
        est.lift_joints(np.zeros((1, 14, 2)), np.ones((1, 14), bool), (100, 100))


def test_imported_joints_need_the_image_size():
    from poseviewer.camera import NO_SIZE_NOTE, imported_lifter

    model = object()
    assert imported_lifter(model, 0, (640, 480)) == (model, None)
    assert imported_lifter(model, 50.0, None) == (model, NO_SIZE_NOTE)
    lifter, note = imported_lifter(model, 50.0, (640, 480))
    assert isinstance(lifter, RayLifter) and note is None and lifter.model is model
