"""Exporters and importers: round trips of every format on results built from real
liftings of the reference 2D poses (released model), atomic writes, COCO import."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from poseviewer import export
from poseviewer.export import (
    ExportError,
    ImportFormatError,
    export_result,
    lift_imported,
    read_joints_2d,
    read_json,
    read_npz,
    write_coco,
    write_csv,
    write_json,
    write_npz,
)
from poseviewer.result import EstimateResult, PersonResult, StageResult
from poseviewer.skeleton import COCO17, CPM14, H36M17

CAPPED_CASE, OCCLUDED_CASE = 20, 16  # G_roll45_mu0 (component 0 capped), D_occl_legs_left


def _stage(index: int, joints: np.ndarray, visible: np.ndarray, model, lift: bool = True,
           maps_seed: int = 0) -> StageResult:
    rng = np.random.default_rng(maps_seed)
    maps = rng.random((14, 6, 5), dtype=np.float32)
    fit = model.lift(joints[None], visible[None], release_exact=True) if lift else None
    return StageResult(index=index, cnn_maps=maps, projected_maps=maps * 0.5 if lift else None,
                       fused_maps=maps * 0.75, joints_2d=joints.astype(np.float64),
                       confidence=np.where(visible, 0.9, 0.1) - 0.01 * np.arange(14),
                       visible=visible.copy(), fit=fit, seconds=0.01 * (index + 1))


@pytest.fixture(scope="module")
def result(ref, model) -> EstimateResult:
    """3 people x 2 stages: a capped-component case, an occluded case, and a person with
    no lifting in stage 0 and too few visible joints in stage 1."""
    persons = []
    for p, case in enumerate((CAPPED_CASE, OCCLUDED_CASE)):
        xy = ref["in_pose_2d_yx"][case][:, ::-1].copy()
        vis = ref["in_visibility"][case]
        noisy = xy + np.random.default_rng(p).normal(scale=3.0, size=xy.shape)
        stages = [_stage(0, noisy, vis, model, maps_seed=p), _stage(1, xy, vis, model)]
        box = np.r_[xy[vis].min(0) - 10, xy[vis].max(0) + 10]
        persons.append(PersonResult(box=box, centre=(box[:2] + box[2:]) / 2, source="detector",
                                    map_to_image=np.array([[4.0, 0, box[0]], [0, 4.0, box[1]]]),
                                    stages=stages, score=0.8 - 0.1 * p))
    xy = ref["in_pose_2d_yx"][0][:, ::-1] + 400
    few = np.zeros(14, bool)
    few[:4] = True
    persons.append(PersonResult(
        box=np.array([390.0, 390, 700, 900]), centre=np.array([545.0, 645]), source="user",
        map_to_image=np.eye(2, 3), score=1.0,
        stages=[_stage(0, xy, few, model, lift=False), _stage(1, xy, few, model)]))
    return EstimateResult(image_size=(1280, 720), persons=persons,
                          timings={"cnn": 0.5, "lift": 0.01, "total": 0.6},
                          model={"name": "test", "stages": 2, "weights": Path("w.safetensors")},
                          device="cpu", image_path="/photos/dancers.png",
                          messages=["a note"])


def _fits_equal(a, b, rtol: float = 0.0) -> None:
    """Two numpy LiftResults (N = 1) hold the same values (NaN == NaN; exact by default)."""
    for name in ("pose_3d", "joints_2d", "lifted", "component", "centre", "norm"):
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)),
                                   rtol=rtol, atol=0)
    for name in ("pose_3d", "joints_2d", "score", "residual", "scale", "yaw", "coeffs"):
        np.testing.assert_allclose(np.asarray(getattr(a.components, name)),
                                   np.asarray(getattr(b.components, name)), rtol=rtol, atol=0)


def _results_equal(a: EstimateResult, b: EstimateResult, maps: bool) -> None:
    """``b`` (read back) holds ``a``'s values, ``a`` taken into ``b``'s 3D frame (exports
    are root-relative by default)."""
    if b.frame_3d == "pelvis":
        a = a.root_relative()
    assert a.frame_3d == b.frame_3d
    assert a.image_size == b.image_size and a.image_path == b.image_path
    assert a.device == b.device and a.messages == b.messages
    assert a.timings == b.timings
    assert len(a.persons) == len(b.persons)
    for pa, pb in zip(a.persons, b.persons, strict=True):
        np.testing.assert_array_equal(pa.box, pb.box)
        np.testing.assert_array_equal(pa.centre, pb.centre)
        np.testing.assert_array_equal(pa.map_to_image, pb.map_to_image)
        assert (pa.source, pa.score) == (pb.source, pb.score)
        assert len(pa.stages) == len(pb.stages)
        for sa, sb in zip(pa.stages, pb.stages, strict=True):
            assert sa.index == sb.index and sa.seconds == sb.seconds
            np.testing.assert_array_equal(sa.joints_2d, sb.joints_2d)
            np.testing.assert_array_equal(sa.confidence, sb.confidence)
            np.testing.assert_array_equal(sa.visible, sb.visible)
            assert (sa.fit is None) == (sb.fit is None)
            if sa.fit is not None:
                _fits_equal(sa.fit, sb.fit)
            if maps:
                np.testing.assert_array_equal(sa.cnn_maps, sb.cnn_maps)
                np.testing.assert_array_equal(sa.fused_maps, sb.fused_maps)
                assert (sa.projected_maps is None) == (sb.projected_maps is None)
            else:
                assert sb.cnn_maps.shape == (14, 0, 0) and sb.projected_maps is None


# ---------------------------------------------------------------- JSON


def test_json_round_trip(result, tmp_path) -> None:
    path = write_json(result, tmp_path / "r.json")
    _results_equal(result, read_json(path), maps=False)


def test_json_document_is_strict_and_self_describing(result, ref, tmp_path) -> None:
    path = write_json(result, tmp_path / "r.json", frame="lifting")

    def no_constants(name: str):
        raise AssertionError(f"non-standard JSON constant {name}")

    doc = json.loads(path.read_text(), parse_constant=no_constants)
    assert (doc["schema"], doc["version"]) == ("poseviewer.result", 1)
    assert doc["joint_sets"]["h36m17"]["names"] == list(H36M17.joints)
    assert doc["joint_sets"]["h36m17"]["parents"] == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8,
                                                      11, 12, 8, 14, 15]
    assert doc["joint_sets"]["cpm14"]["names"] == list(CPM14.joints)
    assert doc["joint_sets"]["cpm14"]["parents"][CPM14.index("head_top")] == CPM14.index("neck")
    assert "millimetres" in doc["units"]["pose_3d"]
    assert "not the pelvis" in doc["coordinate_frames"]["pose_3d"].lower()
    assert doc["frame_3d"] == "lifting"
    assert doc["model"]["weights"] == "w.safetensors"
    # the exact stage of each person holds the authors' reference output (rows x, y, z)
    for p, case in enumerate((CAPPED_CASE, OCCLUDED_CASE)):
        fit = doc["persons"][p]["stages"][1]["fit"]
        np.testing.assert_allclose(np.array(fit["pose_3d"]), ref["out_pose_3d"][case].T,
                                   atol=1e-3)
        assert fit["best_component"] == ref["out_best_chart"][case]
        scales = [c["scale"] for c in fit["components"]]
        np.testing.assert_allclose(scales, ref["out_chart_scale"][case], rtol=1e-6)
        assert [c["capped"] for c in fit["components"]] == list(
            ref["out_chart_scale"][case] == -0.001)
    assert doc["persons"][0]["stages"][1]["fit"]["components"][0]["capped"] is True
    # the not-lifted person: NaN -> null, lifted false; stage 0 without lifting -> null
    assert doc["persons"][2]["stages"][0]["fit"] is None
    stage1 = doc["persons"][2]["stages"][1]["fit"]
    assert stage1["lifted"] is False and stage1["pose_3d"][0][0] is None


def test_json_reader_rejects_foreign_and_broken_files(result, tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something-else"}')
    with pytest.raises(ImportFormatError, match="poseviewer.result"):
        read_json(bad)
    doc = json.loads(write_json(result, tmp_path / "r.json").read_text())
    doc["version"] = 99
    bad.write_text(json.dumps(doc))
    with pytest.raises(ImportFormatError, match="version 99"):
        read_json(bad)
    doc["version"] = 1
    doc["persons"][1]["stages"][0]["joints_2d"] = [[1, 2]] * 13
    bad.write_text(json.dumps(doc))
    with pytest.raises(ImportFormatError, match=r"persons\[1\]\.stages\[0\]\.joints_2d"):
        read_json(bad)
    bad.write_text("{not json")
    with pytest.raises(ImportFormatError, match="not valid JSON"):
        read_json(bad)


# ---------------------------------------------------------------- NPZ


def test_npz_round_trip_without_pickle(result, tmp_path) -> None:
    path = write_npz(result, tmp_path / "r.npz")
    with np.load(path, allow_pickle=False) as z:
        assert z["components_pose_3d"].shape == (3, 2, 3, 17, 3)
        assert z["h36m17_names"].tolist() == list(H36M17.joints)
        np.testing.assert_array_equal(z["h36m17_parents"], H36M17.parents())
        np.testing.assert_array_equal(z["has_fit"], [[1, 1], [1, 1], [0, 1]])
        np.testing.assert_array_equal(z["lifted"], [[1, 1], [1, 1], [0, 0]])
        assert "cnn_maps" not in z.files
        for p in range(2):  # root-relative by default
            pose = result.persons[p].pose_3d
            np.testing.assert_array_equal(z["pose_3d"][p, 1], pose - pose[0])
    _results_equal(result, read_npz(path), maps=False)


def test_npz_with_maps(result, tmp_path) -> None:
    path = write_npz(result, tmp_path / "r.npz", save_maps=True)
    back = read_npz(path)
    _results_equal(result, back, maps=True)
    assert back.persons[2].stages[0].projected_maps is None
    np.testing.assert_array_equal(back.persons[0].stages[1].projected_maps,
                                  result.persons[0].stages[1].projected_maps)


# ---------------------------------------------------------------- CSV


def num(s: str) -> float:
    return float(s) if s else np.nan


def test_csv_long_format(result, tmp_path) -> None:
    path = write_csv(result, tmp_path / "r.csv", frame="lifting")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    lifted_stages = 5  # 3 persons x 2 stages, minus the one without lifting
    assert len(rows) == 3 * 2 * 14 + lifted_stages * 3 * 17
    for p, person in enumerate(result.persons):
        for stage in person.stages:
            mine = [r for r in rows if int(r["person"]) == p and int(r["stage"]) == stage.index]
            two = [r for r in mine if r["kind"] == "2d"]
            assert [r["joint"] for r in two] == list(CPM14.joints)
            xy = np.array([[float(r["image_x"]), float(r["image_y"])] for r in two])
            np.testing.assert_array_equal(xy, stage.joints_2d)
            assert [r["visible"] == "1" for r in two] == list(stage.visible)
            three = [r for r in mine if r["kind"] == "3d"]
            if stage.fit is None:
                assert not three
                continue
            got = np.array([[num(r["x"]), num(r["y"]), num(r["z"])] for r in three])
            np.testing.assert_array_equal(got.reshape(3, 17, 3),
                                          np.asarray(stage.fit.components.pose_3d)[0])
            # the covariance columns rebuild each component's symmetric 3 x 3 matrices
            cov = np.asarray(stage.fit.components.joint_cov)[0]
            up = np.array([[num(r[f"cov_{c}"]) for c in ("xx", "xy", "xz", "yy", "yz", "zz")]
                           for r in three]).reshape(3, 17, 6)
            full = up[..., [0, 1, 2, 1, 3, 4, 2, 4, 5]].reshape(3, 17, 3, 3)
            np.testing.assert_array_equal(full, cov)
            dof = np.array([num(r["cov_dof"]) for r in three]).reshape(3, 17)
            want = np.asarray(stage.fit.components.joint_cov_dof)[0]
            np.testing.assert_array_equal(dof, np.repeat(want[:, None], 17, 1))
            best = {int(r["component"]) for r in three if r["best"] == "1"}
            if bool(np.asarray(stage.fit.lifted)[0]):
                assert best == {int(np.asarray(stage.fit.component)[0])}
                assert [r["joint"] for r in three[:17]] == list(H36M17.joints)


# ---------------------------------------------------------------- COCO


def test_coco_export_layout(result, tmp_path) -> None:
    doc = json.loads(write_coco(result, tmp_path / "c.json").read_text())
    cat = doc["categories"][0]
    assert cat["keypoints"] == list(COCO17.joints)
    assert [1, 2] in cat["skeleton"] or [2, 1] in cat["skeleton"]
    assert doc["images"][0]["file_name"] == "dancers.png"
    assert doc["images"][0]["width"] == 1280
    anns = doc["annotations"]
    assert len(anns) == 3
    for ann, person in zip(anns, result.persons, strict=True):
        kp = np.array(ann["keypoints"]).reshape(17, 3)
        st = person.final
        for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
            assert kp[COCO17.index(name)].tolist() == [0, 0, 0]
        for name in ("left_wrist", "right_knee", "left_shoulder", "right_ankle"):
            j = CPM14.index(name)
            assert kp[COCO17.index(name), :2].tolist() == st.joints_2d[j].tolist()
            assert kp[COCO17.index(name), 2] == (2 if st.visible[j] else 1)
        assert ann["num_keypoints"] == 12
        assert ann["poseviewer"]["neck"][:2] == st.joints_2d[CPM14.index("neck")].tolist()
        x0, y0, x1, y1 = person.box
        assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])


def test_coco_round_trip_and_cpm14_and_coco17_imports(result, tmp_path) -> None:
    path = write_coco(result, tmp_path / "c.json")
    (item,) = read_joints_2d(path)
    finals = [p.final for p in result.persons]
    np.testing.assert_array_equal(item.joints_2d, [s.joints_2d for s in finals])
    np.testing.assert_array_equal(item.visible, [s.visible for s in finals])
    np.testing.assert_allclose(item.confidence, [s.confidence for s in finals])
    np.testing.assert_allclose(item.boxes, [p.box for p in result.persons])
    assert item.image_size == (1280, 720)

    doc = json.loads(path.read_text())
    # plain CPM-14 layout (42 numbers), as another tool would write it
    for ann in doc["annotations"]:
        ann["keypoints"] = ann.pop("poseviewer")["cpm14_keypoints"]
        del ann["keypoint_scores"]
    (tmp_path / "cpm.json").write_text(json.dumps(doc))
    (cpm,) = read_joints_2d(tmp_path / "cpm.json")
    np.testing.assert_array_equal(cpm.joints_2d, item.joints_2d)
    np.testing.assert_array_equal(cpm.visible, item.visible)

    # plain COCO-17 (a results list, no extra field): neck from the shoulders, no head top
    coco_list = [
        {"image_id": 7, "category_id": 1, "score": 0.9,
         "keypoints": json.loads(path.read_text())["annotations"][i]["keypoints"]}
        for i in range(2)
    ]
    (tmp_path / "coco17.json").write_text(json.dumps(coco_list))
    (c17,) = read_joints_2d(tmp_path / "coco17.json")
    assert c17.joints_2d.shape == (2, 14, 2) and c17.image == "7"
    for p in range(2):
        st = finals[p]
        for name in ("left_wrist", "right_hip", "left_ankle", "right_elbow"):
            j = CPM14.index(name)
            assert c17.joints_2d[p, j].tolist() == st.joints_2d[j].tolist()
            assert c17.visible[p, j] == st.visible[j]
        ls, rs = CPM14.index("left_shoulder"), CPM14.index("right_shoulder")
        np.testing.assert_allclose(c17.joints_2d[p, CPM14.index("neck")],
                                   (st.joints_2d[ls] + st.joints_2d[rs]) / 2)
        assert np.isnan(c17.joints_2d[p, CPM14.index("head_top")]).all()
        assert not c17.visible[p, CPM14.index("head_top")]
    assert any("no head top" in n and "lifted without it" in n for n in c17.notes)
    assert not any("not used" in n for n in c17.notes)  # the lifting does use the head top


def test_importer_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_joints_2d(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"annotations": [{"image_id": 1, "keypoints": [1, 2, 2, 3]}]}')
    with pytest.raises(ImportFormatError, match="4 keypoint numbers"):
        read_joints_2d(bad)
    bad.write_text('{"people": []}')
    with pytest.raises(ImportFormatError, match="not a format poseviewer imports"):
        read_joints_2d(bad)


# ---------------------------------------------------------------- lifting imported joints


def test_lift_imported_from_our_json_reproduces_the_fit(result, model, tmp_path) -> None:
    (item,) = read_joints_2d(write_json(result, tmp_path / "r.json"))
    model.release_exact = True  # like the fixture's fits (the capped case's quirk)
    try:
        lifted = lift_imported(item, model, model_path="released.mat")
    finally:
        model.release_exact = False
    assert lifted.num_stages == 1 and len(lifted.persons) == 3
    for p in range(2):
        # a batch of 3 instead of 1 person: the same numbers up to float noise
        _fits_equal(lifted.persons[p].final.fit, result.persons[p].final.fit, rtol=1e-9)
        assert lifted.persons[p].source == "imported"
    assert not bool(np.asarray(lifted.persons[2].final.fit.lifted)[0])
    assert any("not lifted" in m for m in lifted.messages)
    # and the lifted result exports like any other
    back = read_json(write_json(lifted, tmp_path / "lifted.json"))
    _results_equal(lifted, back, maps=False)


def test_lift_imported_coco17_matches_direct_lifting(result, model, tmp_path) -> None:
    path = write_coco(result, tmp_path / "c.json")
    doc = json.loads(path.read_text())
    for ann in doc["annotations"]:
        del ann["poseviewer"]
    (tmp_path / "c17.json").write_text(json.dumps(doc))
    (item,) = read_joints_2d(tmp_path / "c17.json")
    lifted = lift_imported(item, model)
    # independent expectation: the same joints with the neck at the shoulders' midpoint
    st = result.persons[1].final
    joints = st.joints_2d.copy()
    vis = st.visible.copy()
    ls, rs, neck = (CPM14.index(n) for n in ("left_shoulder", "right_shoulder", "neck"))
    joints[neck] = (joints[ls] + joints[rs]) / 2
    vis[neck] = vis[ls] and vis[rs]
    vis[CPM14.index("head_top")] = False
    want = model.lift(joints[None], vis[None])
    np.testing.assert_allclose(lifted.persons[1].pose_3d, np.asarray(want.pose_3d)[0],
                               atol=1e-9)


# ---------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("writer", [write_json, write_csv, write_npz, write_coco,
                                    lambda r, p: export.write_bvh(r, p, person=0)])
def test_unwritable_targets_raise_and_leave_nothing(result, tmp_path, writer) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        writer(result, tmp_path / "no" / "such" / "dir" / "r.out")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        writer(result, blocker / "r.out")
    with pytest.raises(ExportError, match="is a folder"):
        writer(result, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_failed_write_keeps_the_old_file_and_no_temp(result, tmp_path, monkeypatch) -> None:
    target = tmp_path / "r.json"
    target.write_text("old content")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ExportError, match="No space left"):
        write_json(result, target)
    monkeypatch.undo()
    assert target.read_text() == "old content"
    assert os.listdir(tmp_path) == ["r.json"]

    def broken_savez(fh, **arrays):
        fh.write(b"PK partial")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(ExportError, match="Input/output error"):
        write_npz(result, tmp_path / "r.npz")
    assert os.listdir(tmp_path) == ["r.json"]


def test_written_files_get_normal_permissions(result, tmp_path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert (write_json(result, tmp_path / "r.json").stat().st_mode & 0o777
            == plain.stat().st_mode & 0o777)


def test_export_result_writes_every_format(result, tmp_path) -> None:
    written = export_result(result, tmp_path, "img", export.FORMATS)
    names = sorted(p.name for p in written)
    assert names == ["img.coco.json", "img.csv", "img.json", "img.npz",
                     "img_person0.bvh", "img_person1.bvh"]  # person 2 was not lifted
    assert sorted(os.listdir(tmp_path)) == names
    with pytest.raises(ValueError, match="unknown export format"):
        export.parse_formats("json,fbx")


def test_result_without_people_round_trips(tmp_path) -> None:
    empty = EstimateResult(image_size=(640, 480), persons=[], timings={"total": 0.1},
                           model={"name": "m"}, device="cpu", image_path="x.jpg",
                           messages=["no person found"])
    written = export_result(empty, tmp_path, "x", export.FORMATS)
    assert sorted(p.name for p in written) == ["x.coco.json", "x.csv", "x.json", "x.npz"]
    for back in (read_json(tmp_path / "x.json"), read_npz(tmp_path / "x.npz")):
        assert back.persons == [] and back.image_size == (640, 480)
        assert back.messages == ["no person found"]
    assert (tmp_path / "x.csv").read_text().count("\n") == 1
    assert json.loads((tmp_path / "x.coco.json").read_text())["annotations"] == []
    assert read_joints_2d(tmp_path / "x.json")[0].joints_2d.shape == (0, 14, 2)


def test_exports_are_root_relative_by_default(result, tmp_path) -> None:
    """Every exported 3D pose has its pelvis at the origin unless frame='lifting' (issue 11:
    poses far from the origin in Blender); the file says which."""
    doc = json.loads(write_json(result, tmp_path / "r.json").read_text())
    assert doc["frame_3d"] == "pelvis" and "pelvis" in doc["coordinate_frames"]["pose_3d"]
    checked = 0
    for p, person in enumerate(doc["persons"]):
        for t, stage in enumerate(person["stages"]):
            fit = stage["fit"]
            if fit is None or not fit["lifted"]:
                continue
            poses = [fit["pose_3d"]] + [c["pose_3d"] for c in fit["components"]]
            for pose in poses:
                assert pose[0] == [0.0, 0.0, 0.0]
            want = np.asarray(result.persons[p].stages[t].fit.components.pose_3d[0])
            np.testing.assert_allclose(np.array([c["pose_3d"] for c in fit["components"]]),
                                       want - want[:, :1], rtol=0, atol=1e-9)
            checked += 1
    assert checked >= 2
    raw = json.loads(write_json(result, tmp_path / "raw.json", frame="lifting").read_text())
    assert raw["frame_3d"] == "lifting"
    np.testing.assert_array_equal(np.array(raw["persons"][0]["stages"][1]["fit"]["pose_3d"]),
                                  result.persons[0].pose_3d)
    with pytest.raises(ValueError, match="frame"):
        write_json(result, tmp_path / "x.json", frame="camera")
