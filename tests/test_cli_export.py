"""The batch commands: ``poseviewer estimate`` (real Estimator, tiny random CNN) and
``poseviewer lift`` (imported 2D joints): outputs, per-file error report, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import require_shared

import poseviewer.paths as paths_mod
from poseviewer.cli import main
from poseviewer.commands._engines import has_pyarrow
from poseviewer.export import read_joints_2d, read_json, read_npz

torch.set_num_threads(1)


def _mat() -> Path:
    return require_shared("reference", "lftd", "prob_model_params.mat")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from poseviewer.cnn import LiftingCPM, save_cpm, tiny_test

    torch.manual_seed(0)
    return save_cpm(LiftingCPM(tiny_test(fusion=False, num_stages=2)),
                    tmp_path_factory.mktemp("w") / "tiny.safetensors")


def _photos(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    paths = [folder / "a.png", folder / "sub" / "b.jpg"]
    for i, p in enumerate(paths):
        cv2.imwrite(str(p), (rng.random((80 + 10 * i, 60, 3)) * 255).astype(np.uint8))
    (folder / "notes.txt").write_text("not an image, not picked up from a folder")
    return paths


def test_estimate_bad_image_among_good_ones(tmp_path, tiny_weights, capsys) -> None:
    photos = _photos(tmp_path / "in")
    bad = tmp_path / "in" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    out = tmp_path / "out"
    code = main(["estimate", str(tmp_path / "in"),
                 "--out", str(out), "--format", "json,npz,csv,bvh,coco",
                 "--weights", str(tiny_weights), "--model", str(_mat()),
                 "--device", "cpu", "--no-progress"])
    assert code == 1
    cap = capsys.readouterr()
    # the failure: one line, on stderr only
    assert cap.err.count("FAILED") == 1 and "FAILED" not in cap.out
    assert f"FAILED {bad}: " in cap.err
    report = json.loads((out / "report.json").read_text())
    assert report["succeeded"] == 2 and report["failed"] == 1
    assert [f["input"] for f in report["failures"]] == [str(bad)]
    # the good images were exported and read back
    for photo, stem in zip(photos, ["a", "sub__b"], strict=True):
        res = read_json(out / f"{stem}.json")
        assert res.image_path == str(photo)
        h, w = cv2.imread(str(photo)).shape[:2]
        assert res.image_size == (w, h)
        assert res.num_stages == 2 and len(res.persons) >= 1
        assert read_npz(out / f"{stem}.npz").num_stages == 2
        assert (out / f"{stem}.csv").read_text().startswith("image,person,stage,kind")
        lifted = [p for p, person in enumerate(res.persons)
                  if person.final.fit is not None and bool(person.final.fit.lifted[0])]
        assert sorted(out.glob(f"{stem}_person*.bvh")) == [
            out / f"{stem}_person{p}.bvh" for p in lifted]
    coco = json.loads((out / "keypoints_coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.jpg"]
    assert {a["image_id"] for a in coco["annotations"]} <= {1, 2}
    assert not list(out.glob(".*.tmp"))


def test_estimate_all_good_exits_zero(tmp_path, tiny_weights) -> None:
    photos = _photos(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["estimate", *map(str, photos), "--out", str(out), "--weights",
                 str(tiny_weights), "--model", str(_mat()), "--device", "cpu", "--no-progress"])
    assert code == 0  # the default engine (local) also writes the table (with pyarrow)
    table = ["poses.parquet"] if has_pyarrow() else []
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json", *table,
                                                     "report.json"]


def test_estimate_usage_errors_exit_two(tmp_path, tiny_weights, capsys) -> None:
    photos = _photos(tmp_path / "in")
    common = ["--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]
    assert main(["estimate", str(photos[0]), "--format", "json,fbx", *common]) == 2
    assert "unknown export format(s) fbx" in capsys.readouterr().err
    assert main(["estimate", str(tmp_path / "nothing_here"), *common]) == 2
    assert capsys.readouterr().err == (f"poseviewer estimate: {tmp_path / 'nothing_here'}: "
                                       "no such file or folder\n")
    assert main(["estimate", str(photos[0]), "--weights", str(tmp_path / "no.safetensors"),
                 *common]) == 2
    assert "CNN weights not found" in capsys.readouterr().err


def _coco_doc(ref: dict) -> dict:
    """Two images, COCO-17 keypoints made from reference 2D poses (v = 2 where visible)."""
    from poseviewer.export.coco import cpm14_to_coco17

    anns = []
    for i, case in enumerate((9, 16, 20)):
        xy = ref["in_pose_2d_yx"][case][:, ::-1]
        kp = cpm14_to_coco17(xy, ref["in_visibility"][case])
        anns.append({"id": i + 1, "image_id": 1 + (i > 0), "category_id": 1,
                     "keypoints": kp.ravel().tolist()})
    return {"images": [{"id": 1, "file_name": "one.jpg", "width": 1000, "height": 800},
                       {"id": 2, "file_name": "two.jpg", "width": 1000, "height": 800}],
            "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def test_lift_command(tmp_path, ref, monkeypatch, capsys) -> None:
    src = tmp_path / "people.json"
    src.write_text(json.dumps(_coco_doc(ref)))
    broken = tmp_path / "broken.json"
    broken.write_text('{"annotations": [{"image_id": 1, "keypoints": [1, 2]}]}')
    out = tmp_path / "out"
    code = main(["lift", str(src), str(broken), "--out", str(out), "--format",
                 "json,bvh,coco", "--model", str(_mat())])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["succeeded"] == 2 and report["failed"] == 1
    assert "broken.json" in report["failures"][0]["input"]
    assert "2 keypoint numbers" in report["failures"][0]["error"]
    one, two = read_json(out / "one.json"), read_json(out / "two.json")
    assert (len(one.persons), len(two.persons)) == (1, 2)
    assert one.num_stages == 1 and one.persons[0].source == "imported"
    assert one.image_size == (1000, 800)
    assert (out / "one_person0.bvh").is_file() and (out / "two_person1.bvh").is_file()
    # the command's lifting equals a direct lifting of the same joints (neck from the
    # shoulders, head top unknown): compare with the model's own output
    from poseviewer.lifting import PoseModel3D

    (item, _) = read_joints_2d(src)
    model = PoseModel3D.from_mat(_mat())
    model.elevation_search = True  # lift's default
    joints = np.where(item.visible[..., None], item.joints_2d, 0.0)
    # (along the person's camera ray: the file gives the image size)
    from poseviewer.camera import DEFAULT_FOV_DEG, lift_along_rays

    assert item.image_size == (1000, 800)
    want = lift_along_rays(model, joints, item.visible, item.image_size, DEFAULT_FOV_DEG)
    want_pose = np.asarray(want.pose_3d)[0]  # exported root-relative (pelvis at 0)
    np.testing.assert_allclose(one.persons[0].pose_3d, want_pose - want_pose[0], atol=1e-9)
    coco = json.loads((out / "keypoints_coco.json").read_text())
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 3

    assert main(["lift", str(src), "--out", str(out), "--model",
                 str(tmp_path / "none.mat")]) == 2
    assert "3D pose model not found" in capsys.readouterr().err
    monkeypatch.setattr(paths_mod, "DEFAULT_POSE_MODEL", tmp_path / "pose3d.safetensors")
    assert main(["lift", str(src), "--out", str(out)]) == 2
    assert "bundled 3D model" in capsys.readouterr().err


def test_finish_batch_exit_codes_and_coco_failure(tmp_path, capsys) -> None:
    """The one end-of-batch helper both commands use: COCO file, report, exit code."""
    from poseviewer.commands._batch import CocoCollector, Report, finish_batch
    from poseviewer.result import EstimateResult

    def report(name: str) -> Report:
        out = tmp_path / name
        out.mkdir()
        return Report("t", out)

    r = report("ok")
    r.success("a.png", [], 0, [])
    assert finish_batch(r, CocoCollector(), r.out_dir, interrupted=False) == 0
    assert not (r.out_dir / "keypoints_coco.json").exists()  # nothing added, no file
    assert json.loads((r.out_dir / "report.json").read_text())["succeeded"] == 1

    r = report("failed")
    r.failure("b.png", ValueError("bad"))
    assert finish_batch(r, CocoCollector(), r.out_dir, interrupted=False) == 1

    r = report("interrupted")
    assert finish_batch(r, CocoCollector(), r.out_dir, interrupted=True) == 130
    assert json.loads((r.out_dir / "report.json").read_text())["interrupted"] is True

    # the COCO file can't be written (a folder in its place): a failure in the report
    r = report("coco")
    coco = CocoCollector()
    coco.add(EstimateResult(image_size=(10, 20), persons=[], timings={}, model={},
                            device="cpu", image_path="x.png"))
    (r.out_dir / "keypoints_coco.json").mkdir()
    assert finish_batch(r, coco, r.out_dir, interrupted=False) == 1
    doc = json.loads((r.out_dir / "report.json").read_text())
    assert doc["failures"][0]["input"] == str(r.out_dir / "keypoints_coco.json")
    assert "is a folder" in doc["failures"][0]["error"]
    capsys.readouterr()
