"""Stopping the 2D network after stage k (``Estimator(stages=k)``, ``poseviewer estimate
--stages K``, ``poseviewer eval-2d --stages K``): the stages run equal a full run's first k
on a real photo, the later ones are not computed, and every exporter, the streamed video
exports and the readers cope with fewer stages."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from test_video import _detector, _frames, write_clip

from poseviewer.cnn.config import tiny_test
from poseviewer.cnn.lifting_cpm import LiftingCPM, check_stages
from poseviewer.paths import resources_dir

PHOTO = resources_dir() / "sample_fullbody.jpg"


@pytest.fixture(scope="module")
def est():
    from poseviewer.estimator import Estimator

    e = Estimator.default(device="cpu")
    e.flip_test = False
    return e


@pytest.fixture(scope="module")
def box(est):
    """The person's box in the photo, found once (the runs below skip the detector)."""
    loaded = est.load_image(str(PHOTO))
    return est.people(loaded).boxes[:1] / loaded.scale


def _same_stage(a, b) -> None:
    np.testing.assert_array_equal(a.joints_2d, b.joints_2d)
    np.testing.assert_array_equal(a.cnn_maps, b.cnn_maps)
    np.testing.assert_array_equal(a.fused_maps, b.fused_maps)
    np.testing.assert_array_equal(a.visible, b.visible)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    assert (a.fit is None) == (b.fit is None)
    if a.fit is not None:
        np.testing.assert_array_equal(a.fit.pose_3d, b.fit.pose_3d)
        np.testing.assert_array_equal(a.fit.components.joint_cov, b.fit.components.joint_cov)


@pytest.mark.parametrize("mirror", [False, True])
def test_first_stages_equal_the_full_run_on_a_photo(est, box, mirror) -> None:
    est.flip_test = mirror
    try:
        assert est.stages == est.backend.num_stages == 3
        full = est.estimate(str(PHOTO), boxes=box)
        for k in (1, 2):
            est.stages = k
            calls: list[tuple[int, int]] = []
            got = est.estimate(str(PHOTO), boxes=box,
                               on_stage=lambda t, n, c=calls: c.append((t, n)))
            assert calls == [(t, k) for t in range(k)]
            assert got.num_stages == k and got.model["stages"] == k
            assert full.model["stages"] == 3
            (p,) = got.persons
            assert [s.index for s in p.stages] == list(range(k))
            for t in range(k):
                _same_stage(p.stages[t], full.persons[0].stages[t])
            assert p.final is p.stages[k - 1]
        # the full network's stages do change the joints (else this test could not fail)
        assert np.abs(full.persons[0].stages[0].joints_2d
                      - full.persons[0].final.joints_2d).max() > 0.5
    finally:
        est.stages = None
        est.flip_test = False
    assert est.stages == 3 and est.backend.stages is None


def test_bad_stage_counts_are_refused(est) -> None:
    for bad in (0, 4, -1, 1.5, True):
        with pytest.raises(ValueError, match="stages must be a whole number from 1 to 3"):
            est.stages = bad
    assert est.stages == 3
    assert check_stages(None, 3) == 3 and check_stages(2, 3) == 2


def test_backend_that_cannot_stop_early() -> None:
    from test_video import _TemplateBackend

    from poseviewer.estimator import Estimator

    e = Estimator(_TemplateBackend(), None, device="cpu", detector=_detector)
    assert e.stages == 2
    e.stages = 2  # all of them: fine
    with pytest.raises(ValueError, match="runs all its 2 stages"):
        e.stages = 1


def test_network_stops_after_stage_k_without_computing_the_rest() -> None:
    torch.manual_seed(0)
    net = LiftingCPM(tiny_test(fusion=False, num_stages=3)).eval()
    x = torch.randn(2, 3, net.config.input_size, net.config.input_size)
    seen = []
    for name in net._stages[1]:  # stage 3's convolutions must not run with stages=2
        net.layers[name].register_forward_hook(lambda *a, n=name: seen.append(n))
    with torch.no_grad():
        two = net(x, stages=2)
        assert not seen
        full = net(x)
    assert seen
    assert len(two.stages) == 2 and len(full.stages) == 3
    for a, b in zip(two.stages, full.stages[:2], strict=True):
        torch.testing.assert_close(a.cnn, b.cnn, rtol=0, atol=0)
        torch.testing.assert_close(a.joints, b.joints, rtol=0, atol=0)


def test_one_stage_photo_exports_round_trip(est, box, tmp_path) -> None:
    from poseviewer import export
    from poseviewer.export import export_result, read_json, read_npz

    est.stages = 1
    try:
        r = est.estimate(str(PHOTO), boxes=box)
    finally:
        est.stages = None
    files = export_result(r, tmp_path, "one", export.FORMATS)
    assert sorted(p.name for p in files) == ["one.coco.json", "one.csv", "one.json",
                                             "one.npz", "one_person0.bvh"]
    rel = r.root_relative()
    for back in (read_json(tmp_path / "one.json"), read_npz(tmp_path / "one.npz")):
        assert back.num_stages == 1
        a, b = rel.persons[0].final, back.persons[0].final
        np.testing.assert_array_equal(b.joints_2d, a.joints_2d)
        np.testing.assert_array_equal(b.visible, a.visible)
        np.testing.assert_allclose(b.fit.pose_3d, a.fit.pose_3d, rtol=0, atol=1e-12)
    rows = list(csv.DictReader((tmp_path / "one.csv").open()))
    assert {r_["stage"] for r_ in rows} == {"0"}
    assert len([r_ for r_ in rows if r_["kind"] == "2d"]) == 14
    coco = json.loads((tmp_path / "one.coco.json").read_text())
    assert len(coco["annotations"]) == 1


def test_one_stage_video_streams_and_reads_back(est, tmp_path) -> None:
    from poseviewer.estimator import Estimator
    from poseviewer.export import read_sequence_json, read_sequence_npz
    from poseviewer.video import VideoFileSource
    from poseviewer.video.pipeline import export_video

    clip = write_clip(tmp_path / "c.mp4", _frames(4))
    e = Estimator(est.model, est.pose_model, device="cpu", detector=_detector,
                  flip_test=False, stages=1)
    assert e.stages == 1
    with VideoFileSource(clip) as src:
        done = export_video(e, src, tmp_path, "c", ("json", "npz", "csv", "bvh", "coco"),
                            min_track_frames=1, detect_every=2)
    assert done.frames == 4
    names = sorted(p.name for p in done.files)
    assert names == ["c.coco.json", "c.csv", "c.json", "c.npz", "c_person0.bvh"]
    for back in (read_sequence_json(tmp_path / "c.json"), read_sequence_npz(tmp_path / "c.npz")):
        assert len(back) == 4
        for r in back:
            (p,) = r.persons
            assert len(p.stages) == 1 and p.final.fit is not None
            assert r.model["stages"] == 1
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert {r_["stage"] for r_ in rows} == {"0"}


def test_cli_stages_option(tmp_path, monkeypatch, capsys) -> None:
    from poseviewer.cli import main

    assert main(["estimate", str(PHOTO), "--out", str(tmp_path / "bad"), "--stages", "0"]) == 2
    assert "--stages must be at least 1, not 0" in capsys.readouterr().err
    assert main(["estimate", str(PHOTO), "--out", str(tmp_path / "o"), "--stages", "1",
                 "--single-pass", "--no-progress", "--engine", "plain"]) == 0
    doc = json.loads((tmp_path / "o" / "sample_fullbody.json").read_text())
    assert doc["model"]["stages"] == 1
    assert [len(p["stages"]) for p in doc["persons"]] == [1] * len(doc["persons"])


def test_evaluate_with_stages_gives_the_full_runs_first_columns() -> None:
    from poseviewer.train2d.evaluate import evaluate, predict_stages

    torch.manual_seed(1)
    net = LiftingCPM(tiny_test(fusion=False, num_stages=3)).eval()
    size = net.config.input_size
    rng = np.random.default_rng(0)
    crops = rng.uniform(0, 255, (6, size, size, 3)).astype(np.float32)
    gt = rng.uniform(0, size, (6, 14, 2)).astype(np.float32)
    vis = np.ones((6, 14), bool)
    full = evaluate(net, None, np.arange(6), crops=(crops, gt, vis), alpha=0.5)
    one = evaluate(net, None, np.arange(6), crops=(crops, gt, vis), alpha=0.5, stages=1)
    assert full.per_joint.shape[0] == 3 and one.per_joint.shape[0] == 1
    np.testing.assert_array_equal(one.per_joint, full.per_joint[:1])
    np.testing.assert_array_equal(one.mean, full.mean[:1])
    assert "stage 1" in one.table() and "stage 2" not in one.table()
    np.testing.assert_array_equal(predict_stages(net, crops, stages=2),
                                  predict_stages(net, crops)[:2])


def test_eval_2d_refuses_a_bad_stage_count(capsys) -> None:
    from poseviewer.cli import main

    assert main(["eval-2d", "--stages", "4", "--single-pass", "--pose-model", ""]) == 2
    assert "--stages: stages must be a whole number from 1 to 3" in capsys.readouterr().err


@pytest.mark.gui
def test_viewer_first_stage_only_reruns_with_one_stage(qtbot, settings, tmp_path) -> None:
    pytest.importorskip("PySide6")
    from test_app import make_window, open_and_wait, tiny_estimator, write_image

    est = tiny_estimator(fusion=True, stages=3)
    win = make_window(qtbot, settings, est)
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"), timeout=60000)
    full = win.state.result
    assert full.num_stages == 3 and not win.action_first_stage.isChecked()
    with qtbot.waitSignal(win.worker.succeeded, timeout=60000):
        win.action_first_stage.setChecked(True)
    one = win.state.result
    assert one.num_stages == 1 and one.model["stages"] == 1 and win.state.stage == 0
    np.testing.assert_array_equal(one.persons[0].final.joints_2d,
                                  full.persons[0].stages[0].joints_2d)
    assert win.controls.stage_total.text() == "/ 1"
    with qtbot.waitSignal(win.worker.succeeded, timeout=60000):
        win.action_first_stage.setChecked(False)
    assert win.state.result.num_stages == 3 and est.stages == 3
