"""Drive the real viewer window (pytest-qt; pytest-xvfb provides a real X display).

Most tests use a stand-in with the ``Estimator.estimate`` interface (progress, cancel,
delays, failures on demand) whose ``EstimateResult`` holds synthetic stage maps and joints
lifted by the real lifting with the bundled 3D model, so every panel can be checked
against known arrays; ``test_real_estimator_*`` run the real ``Estimator`` with a tiny
random-init CNN.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent, QGuiApplication  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from poseviewer.app import configure  # noqa: E402
from poseviewer.cnn.cancel import check_cancel  # noqa: E402
from poseviewer.result import EstimateResult, PersonResult, StageResult  # noqa: E402
from poseviewer.skeleton import CPM14, H36M17  # noqa: E402

pytestmark = pytest.mark.gui

# A standing person, CPM-14 order, image pixels in a 320 x 400 image.
BASE_JOINTS = np.array(
    [[160, 40], [160, 90], [120, 95], [100, 150], [95, 200], [200, 95], [220, 150],
     [225, 200], [135, 210], [130, 290], [130, 370], [185, 210], [190, 290], [190, 370]],
    dtype=float,
)
GRID = 46


@functools.cache
def bundled_pose_model():
    """The bundled 3D pose model (resources/models; committed, no shared data needed)."""
    from poseviewer.lifting import PoseModel3D
    from poseviewer.paths import DEFAULT_POSE_MODEL

    if not DEFAULT_POSE_MODEL.is_file():
        pytest.skip(f"the bundled 3D model {DEFAULT_POSE_MODEL} is missing")
    return PoseModel3D.load(DEFAULT_POSE_MODEL)


def _fit(joints: np.ndarray, visible: np.ndarray):
    """The real lifting of one person's 2D joints (N = 1, every component), numpy."""
    return bundled_pose_model().lift(joints[None], visible[None])


def gaussian_maps(joints_map: np.ndarray, sigma: float) -> np.ndarray:
    """(14, GRID, GRID) Gaussians at map-grid positions ``joints_map``."""
    g = np.arange(GRID, dtype=np.float64)
    dx = g[None, None, :] - joints_map[:, 0, None, None]
    dy = g[None, :, None] - joints_map[:, 1, None, None]
    return np.exp(-(dx**2 + dy**2) / (2 * sigma**2)).astype(np.float32)


def make_person(box, stages: int, seed: int, source: str = "whole-image") -> PersonResult:
    """A person whose stages differ (joints move, maps sharpen, fits differ)."""
    box = np.asarray(box, dtype=float)
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = box
    a = np.array([[(x1 - x0) / GRID, 0, x0], [0, (y1 - y0) / GRID, y0]])
    base = BASE_JOINTS * [(x1 - x0) / 320, (y1 - y0) / 400] + [x0, y0]
    out = []
    for t in range(stages):
        j = base + rng.normal(0, 8 / (t + 1), base.shape)
        jm = np.linalg.solve(a[:, :2], (j - a[:, 2]).T).T
        cnn = gaussian_maps(jm, 1.5 + 0.5 * (stages - t))
        vis = np.ones(14, dtype=bool)
        vis[4] = t > 0  # the right wrist is hidden at stage 1
        fit = _fit(j, vis)
        proj = gaussian_maps(jm + 0.7, 1.0)
        out.append(StageResult(index=t, cnn_maps=cnn, projected_maps=proj,
                               fused_maps=0.5 * (cnn + proj), joints_2d=j,
                               confidence=np.linspace(0.3, 0.9, 14), visible=vis, fit=fit,
                               seconds=0.01))
    return PersonResult(box=box, centre=(box[:2] + box[2:]) / 2, source=source,
                        map_to_image=a, stages=out)


def make_result(image_size=(320, 400), stages=3, persons=1) -> EstimateResult:
    """An EstimateResult with ``persons`` people side by side."""
    w, h = image_size
    ps = []
    for i in range(persons):
        x0 = 10 + i * (w - 20) / persons
        ps.append(make_person([x0, 10, x0 + (w - 20) / persons - 10, h - 10], stages, seed=i))
    return EstimateResult(image_size=(w, h), persons=ps, timings={"cnn": 0.2, "total": 0.3},
                          model={"name": "test"}, device="cpu")


class FakeEstimator:
    """The ``Estimator.estimate`` interface, with progress, cancel and optional delays."""

    def __init__(self, stages=3, persons=1, delay=0.0, fail: Exception | None = None):
        self.stages, self.persons, self.delay, self.fail = stages, persons, delay, fail
        self.calls: list[dict] = []
        self.started = threading.Event()

    def estimate(self, image, boxes=None, on_stage=None, cancel=None) -> EstimateResult:
        self.calls.append({"shape": np.asarray(image).shape, "boxes": boxes})
        self.started.set()
        if self.fail is not None:
            raise self.fail
        h, w = np.asarray(image).shape[:2]
        if boxes is not None and len(boxes):
            ps = [make_person(b, self.stages, seed=i, source="user")
                  for i, b in enumerate(np.asarray(boxes, float))]
            res = EstimateResult(image_size=(w, h), persons=ps, timings={"total": 0.1},
                                 model={"name": "test"}, device="cpu")
        else:
            res = make_result((w, h), self.stages, self.persons)
        for t in range(self.stages):
            if self.delay:
                time.sleep(self.delay)
            check_cancel(cancel)
            if on_stage is not None:  # once per stage, for every person at once
                on_stage(t, self.stages)
        return res


def write_image(path: Path, w=320, h=400) -> Path:
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(30, 200, w, dtype=np.uint8)[None]
    img[..., 1] = np.linspace(20, 120, h, dtype=np.uint8)[:, None]
    cv2.rectangle(img, (100, 60), (220, 360), (180, 180, 180), -1)
    assert cv2.imwrite(str(path), img)
    return path




def make_window(qtbot, settings, estimator, **kw):
    configure()
    from poseviewer.app.main_window import MainWindow

    win = MainWindow(estimator_factory=lambda: estimator, settings=settings, **kw)
    qtbot.addWidget(win)
    win.resize(1300, 820)
    with qtbot.waitExposed(win):
        win.show()
    win.activateWindow()
    win.raise_()
    return win


def open_and_wait(qtbot, win, path, timeout=10000):
    with qtbot.waitSignal(win.worker.succeeded, timeout=timeout):
        win.open_image(path)


def real_display() -> bool:
    return QGuiApplication.platformName() == "xcb"


def centred_segments(pose_mm: np.ndarray) -> np.ndarray:
    """Independent expectation of the 3D panel's solid bones: metres, centroid removed."""
    p = pose_mm / 1000.0
    p = p - p.mean(axis=0)
    return np.array([p[j] for b in H36M17.bones for j in b])


def expected_skeleton(joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
    """Expected bone end points per side for the image panel."""
    out: dict[str, list] = {"left": [], "right": [], "centre": []}
    for a, b in CPM14.bones:
        if visible[a] and visible[b]:
            out[CPM14.side(b)] += [joints[a], joints[b]]
    return {k: np.array(v).reshape(-1, 2) for k, v in out.items()}


# ---------------------------------------------------------------------------------------


def test_open_image_fills_every_panel(qtbot, settings, tmp_path, artifacts_dir):
    est = FakeEstimator(stages=3)
    win = make_window(qtbot, settings, est)
    path = write_image(tmp_path / "person.png")
    open_and_wait(qtbot, win, path)
    st = win.state
    res = st.result
    assert res is not None and res.image_path == str(path)
    # image panel: the photo as read from disk (RGB), the last stage's skeleton
    assert win.image_panel.photo.image.shape == (400, 320, 3)
    assert st.stage == 2
    s = res.persons[0].stages[2]
    got = win.image_panel.skeleton_points()
    want = expected_skeleton(s.joints_2d, s.visible)
    for side in want:
        np.testing.assert_allclose(got[side], want[side])
    # maps panel: the fused maps of the last stage
    for j in (0, 7, 13):
        np.testing.assert_array_equal(win.maps_panel.map_data(j), s.fused_maps[j])
    # 3D panel: the best component's pose, centred
    k = int(s.fit.component[0])
    assert st.component == k
    np.testing.assert_allclose(win.view3d.shown_bones,
                               centred_segments(np.asarray(s.fit.components.pose_3d[0, k])),
                               atol=1e-5)
    assert len(win.view3d.shown_labels) == st.num_components - 1
    # controls
    assert win.controls.stage_slider.value() == 3
    assert win.controls.component_combo.count() == st.num_components
    assert "best" in win.controls.component_combo.currentText()
    assert "total" in win.timing_label.text()
    win.grab().save(str(artifacts_dir / "app_open.png"))


def test_keys_step_stages_and_components(qtbot, settings, tmp_path):
    win = make_window(qtbot, settings, FakeEstimator(stages=4))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    st, res = win.state, win.state.result
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=5000)
    qtbot.keyClick(win, Qt.Key.Key_Left)
    qtbot.keyClick(win, Qt.Key.Key_Left)
    assert st.stage == 1
    s = res.persons[0].stages[1]
    got = win.image_panel.skeleton_points()
    for side, want in expected_skeleton(s.joints_2d, s.visible).items():
        np.testing.assert_allclose(got[side], want)
    np.testing.assert_array_equal(win.maps_panel.map_data(3), s.fused_maps[3])
    assert win.controls.stage_spin.value() == 2
    qtbot.keyClick(win, Qt.Key.Key_Right)
    assert st.stage == 2
    qtbot.keyClick(win, Qt.Key.Key_Left)
    qtbot.keyClick(win, Qt.Key.Key_Left)
    qtbot.keyClick(win, Qt.Key.Key_Left)  # clamped at stage 1
    assert st.stage == 0
    s0 = res.persons[0].stages[0]
    # right wrist hidden at stage 1: its two bones are not drawn on the right side
    assert len(win.image_panel.skeleton_points()["right"]) == 2 * 5

    # components: down/up walk the list from the best one; every panel follows
    n = st.num_components
    start = st.component
    target = min(start + 1, n - 1) if start < n - 1 else start - 1
    key = Qt.Key.Key_Down if target > start else Qt.Key.Key_Up
    before = win.view3d.shown_bones.copy()
    qtbot.keyClick(win, key)
    assert st.component == target
    assert win.controls.component_combo.currentIndex() == target
    pose = np.asarray(s0.fit.components.pose_3d[0, target])
    np.testing.assert_allclose(win.view3d.shown_bones, centred_segments(pose), atol=1e-5)
    assert not np.allclose(before, win.view3d.shown_bones)
    x, y = win.image_panel.component_item.getData()
    proj = np.asarray(s0.fit.components.joints_2d[0, target])
    np.testing.assert_allclose(np.stack([x, y], 1)[:2], proj[list(H36M17.bones[0])])
    # the slider drives the state too
    win.controls.stage_slider.setValue(4)
    assert st.stage == 3


def test_map_kinds_joint_click_and_overlay(qtbot, settings, tmp_path, artifacts_dir):
    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    s = win.state.stage_result
    qtbot.mouseClick(win.maps_panel.kind_buttons["cnn"], Qt.MouseButton.LeftButton)
    assert win.state.map_kind == "cnn"
    np.testing.assert_array_equal(win.maps_panel.map_data(5), s.cnn_maps[5])
    qtbot.mouseClick(win.maps_panel.kind_buttons["projected"], Qt.MouseButton.LeftButton)
    np.testing.assert_array_equal(win.maps_panel.map_data(5), s.projected_maps[5])

    # click on the map of joint 6 (left elbow): selects it everywhere
    glw = win.maps_panel.glw
    pos = glw.mapFromScene(win.maps_panel.tile_scene_centre(6))
    qtbot.mouseClick(glw.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert win.state.joint == 6
    sel = win.image_panel.selected_joint_item.getData()
    np.testing.assert_allclose([sel[0][0], sel[1][0]], s.joints_2d[6])
    assert win.maps_panel.title_text(6) == "L elbow"
    assert win.maps_panel.selection.isVisible()
    assert win.maps_panel.selection.rect() == win.maps_panel.tile_rect(6)
    # overlay: the selected joint's map over the photo, placed by map_to_image
    win.controls.overlay_check.setChecked(True)
    ov = win.image_panel.overlay_item
    assert ov.isVisible()
    np.testing.assert_array_equal(ov.image, s.projected_maps[6])
    a = win.state.person_result.map_to_image
    p = ov.mapToParent(QPointF(10.5, 20.5))  # centre of map cell (10, 20)
    np.testing.assert_allclose([p.x(), p.y()], a @ [10, 20, 1], atol=1e-6)
    win.grab().save(str(artifacts_dir / "app_overlay.png"))


def test_person_click_and_box_drag_rerun(qtbot, settings, tmp_path):
    est = FakeEstimator(stages=2, persons=2)
    win = make_window(qtbot, settings, est)
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png", w=400, h=300))
    res = win.state.result
    assert len(res.persons) == 2 and win.state.person == 0
    # click inside the second person's box
    b = res.persons[1].box
    vb = win.image_panel.vb
    scene_pt = vb.mapViewToScene(QPointF((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
    view_pt = win.image_panel.mapFromScene(scene_pt)
    qtbot.mouseClick(win.image_panel.viewport(), Qt.MouseButton.LeftButton, pos=view_pt)
    assert win.state.person == 1
    s = res.persons[1].final
    np.testing.assert_allclose(win.image_panel.skeleton_points()["left"],
                               expected_skeleton(s.joints_2d, s.visible)["left"])
    # drag a new box on the photo: re-runs with the two old boxes plus the new one
    a_pt = win.image_panel.mapFromScene(vb.mapViewToScene(QPointF(30, 40)))
    b_pt = win.image_panel.mapFromScene(vb.mapViewToScene(QPointF(150, 260)))
    with qtbot.waitSignal(win.worker.succeeded, timeout=10000):
        drag(qtbot, win.image_panel.viewport(), a_pt, b_pt)
    boxes = est.calls[-1]["boxes"]
    assert boxes.shape == (3, 4)
    assert win.state.result.image_path == win.image_path  # still the photo's file
    np.testing.assert_allclose(boxes[2], [30, 40, 150, 260], atol=3.0)
    assert len(win.state.result.persons) == 3
    assert win.state.result.persons[2].source == "user"


def drag(qtbot, widget, a: QPoint, b: QPoint, steps: int = 8) -> None:
    """Press at ``a``, move to ``b`` in steps, release (left button)."""
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    def send(kind, p, buttons):
        ev = QMouseEvent(kind, QPointF(p), QPointF(widget.mapToGlobal(p)),
                         Qt.MouseButton.LeftButton if kind != QEvent.Type.MouseMove
                         else Qt.MouseButton.NoButton, buttons,
                         Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(widget, ev)

    left = Qt.MouseButton.LeftButton
    send(QEvent.Type.MouseButtonPress, a, left)
    for i in range(1, steps + 1):
        p = QPoint(a.x() + (b.x() - a.x()) * i // steps, a.y() + (b.y() - a.y()) * i // steps)
        send(QEvent.Type.MouseMove, p, left)
        qtbot.wait(5)
    send(QEvent.Type.MouseButtonRelease, b, Qt.MouseButton.NoButton)


def test_errors_reach_the_user(qtbot, settings, tmp_path, messages):
    est = FakeEstimator()
    win = make_window(qtbot, settings, est)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with qtbot.waitSignal(win.worker.failed, timeout=10000):
        win.open_image(bad)
    assert messages and messages[-1][0] == "Cannot use this image"
    assert "not an image" in messages[-1][1]
    assert "Cannot use this image" in win.statusBar().currentMessage()
    with qtbot.waitSignal(win.worker.failed, timeout=10000):
        win.open_image(tmp_path / "missing.jpg")
    assert "not found" in messages[-1][1]
    assert win.state.result is None  # nothing half-shown

    # no person: a message, the photo still shown
    nobody = FakeEstimator(persons=0)
    win2 = make_window(qtbot, settings, nobody)
    open_and_wait(qtbot, win2, write_image(tmp_path / "empty.png"))
    assert messages[-1][0] == "No person found"
    assert win2.state.image is not None and win2.state.stage_result is None
    assert win2.view3d.shown_bones.shape == (0, 3)


def test_model_error_is_a_message(qtbot, settings, tmp_path, messages):
    configure()
    from poseviewer.app.main_window import MainWindow

    def broken():
        raise FileNotFoundError("no trained weights in resources/models (model.safetensors)")

    win = MainWindow(estimator_factory=broken, settings=settings)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.worker.failed, timeout=10000):
        win.open_image(write_image(tmp_path / "p.png"))
    assert messages[-1][0] == "Cannot load the model"
    assert "model.safetensors" in messages[-1][1]
    # the estimator raising inside estimate() is reported too, and the window survives
    win2 = make_window(qtbot, settings, FakeEstimator(fail=RuntimeError("boom")))
    with qtbot.waitSignal(win2.worker.failed, timeout=10000):
        win2.open_image(write_image(tmp_path / "q.png"))
    assert "boom" in messages[-1][1]


def test_progress_cancel_and_supersede(qtbot, settings, tmp_path):
    est = FakeEstimator(stages=6, delay=0.15)
    win = make_window(qtbot, settings, est)
    path = write_image(tmp_path / "p.png")
    seen: list[tuple] = []
    win.worker.progress.connect(lambda *a: seen.append(a))
    with qtbot.waitSignal(win.worker.progress, timeout=10000):
        win.open_image(path)
    assert win.cancel_button.isVisible() and win.progress_bar.isVisible()
    assert "stage" in win.statusBar().currentMessage()
    with qtbot.waitSignal(win.worker.cancelled, timeout=10000):
        qtbot.mouseClick(win.cancel_button, Qt.MouseButton.LeftButton)
    assert win.state.result is None
    assert "Cancelled" in win.statusBar().currentMessage()
    assert seen and len(seen) < 6
    assert not win.cancel_button.isVisible()

    # a new request while one runs cancels it; only the newest result is shown
    fast = tmp_path / "second.png"
    write_image(fast, w=200, h=250)
    win.open_image(path)
    qtbot.waitUntil(est.started.is_set, timeout=5000)
    with qtbot.waitSignal(win.worker.succeeded, timeout=20000):
        win.open_image(fast)
    assert win.state.result.image_size == (200, 250)
    qtbot.wait(200)  # a stale answer would arrive now; it must be dropped
    assert win.state.image.shape[:2] == (250, 200)


def test_close_while_running(qtbot, settings, tmp_path):
    est = FakeEstimator(stages=50, delay=0.05)
    win = make_window(qtbot, settings, est)
    with qtbot.waitSignal(win.worker.progress, timeout=10000):
        win.open_image(write_image(tmp_path / "p.png"))
    t0 = time.perf_counter()
    win.close()
    assert time.perf_counter() - t0 < 2.0  # cancelled at the next stage, not after 50
    assert win.worker._thread.isFinished()


def test_close_waits_for_a_slow_stage_without_destroying_the_thread(qtbot, settings, tmp_path):
    """A stage longer than the close wait: the close is refused (window open, message
    shown first), retried, and the window closes once the thread has finished."""
    est = FakeEstimator(stages=3, delay=1.2)
    win = make_window(qtbot, settings, est)
    win.close_wait_ms = 100
    shown: list[str] = []
    win.statusBar().messageChanged.connect(shown.append)
    win.open_image(write_image(tmp_path / "p.png"))
    assert est.started.wait(5)
    assert win.close() is False  # refused: the stage is still running
    assert win.isVisible() and win.worker.running
    assert any(m.startswith("Waiting for the model to stop") for m in shown)
    assert win.open_image(tmp_path / "p.png") == -1  # no new work while closing
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=5000)
    assert win.worker._thread.isFinished()
    assert len(est.calls) == 1


def test_drop_recent_and_settings(qtbot, settings, tmp_path):
    win = make_window(qtbot, settings, FakeEstimator())
    path = write_image(tmp_path / "dropped.png")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    ev = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                    Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(win.worker.succeeded, timeout=10000):
        win.dropEvent(ev)
    assert win.image_path == str(path)
    assert win.recent_files()[0] == str(path.resolve())
    assert [a.data() for a in win.recent_menu.actions()] == [str(path.resolve())]
    win.state.set_map_kind("cnn")
    win.close()
    assert settings.value("map_kind") == "cnn"
    assert not settings.value("geometry").isEmpty() and not settings.value("window_state").isEmpty()
    assert Path(settings.value("last_folder")) == tmp_path.resolve()
    # a new window restores map kind and recent files from the same settings
    win.maps_dock.hide()  # a dock layout saved in the settings comes back next time
    settings.setValue("window_state", win.saveState())
    win2 = make_window(qtbot, settings, FakeEstimator())
    assert win2.state.map_kind == "cnn"
    assert not win2.maps_dock.isVisible()  # the dock layout came back
    assert win2.maps_panel.kind_buttons["cnn"].isChecked()
    assert win2.recent_files() == [str(path.resolve())]
    with qtbot.waitSignal(win2.worker.succeeded, timeout=10000):
        win2.recent_menu.actions()[0].trigger()
    assert win2.image_path == str(path.resolve())


def test_screenshots_and_3d_pixels(qtbot, settings, tmp_path, artifacts_dir, messages):
    win = make_window(qtbot, settings, FakeEstimator(stages=3))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    win.state.set_joint(3)
    qtbot.wait(50)
    from PySide6.QtGui import QImage

    keys = ("window", "image", "maps", "3d") if real_display() else ("window", "image", "maps")
    for key in keys:
        out = win.save_screenshot(key, artifacts_dir / f"app_panel_{key}.png")
        assert out is not None and out.is_file()
        img = QImage(str(out))
        assert img.width() > 100 and img.height() > 100
    assert not list(artifacts_dir.glob(".app_panel_*"))  # atomic: no temp left behind
    # a folder that does not exist: a message naming it, nothing written
    assert win.save_screenshot("image", tmp_path / "no_such_folder" / "x.png") is None
    assert win.last_error[0] == "screenshot" and "no_such_folder" in win.last_error[1]
    assert "does not exist" in messages[-1][1]
    # an existing file is replaced whole
    old = tmp_path / "old.png"
    old.write_bytes(b"not a png")
    assert win.save_screenshot("maps", old) == old
    assert QImage(str(old)).width() > 100
    if not real_display():
        pytest.skip(f"3D pixels need a real X display (platform {QGuiApplication.platformName()})")
    rgba = win.view3d.render_image()
    from poseviewer.app.view3d import BACKGROUND

    bg = np.array(BACKGROUND[:3]) * 255
    diff = np.abs(rgba[..., :3].astype(float) - bg).max(axis=-1)
    drawn = int((diff > 30).sum())
    assert drawn > 2000, f"only {drawn} non-background pixels in the 3D view"
    # bones are coloured by side: both side colours appear
    from poseviewer.skeleton import SIDE_COLOURS

    for side in ("left", "right"):
        c = np.array(SIDE_COLOURS[side]) * 255
        near = (np.abs(rgba[..., :3].astype(float) - c).max(axis=-1) < 40).sum()
        assert near > 50, f"no {side}-coloured bone pixels"
    # turning the camera changes the picture; reset brings it back
    cam = win.view3d.view.camera
    cam.azimuth = 90.0
    turned = win.view3d.render_image()
    assert np.abs(turned.astype(int) - rgba.astype(int)).sum() > 0
    win.view3d.reset_view()
    np.testing.assert_array_equal(win.view3d.render_image(), rgba)


def test_state_does_not_recompute(qtbot, settings, tmp_path):
    """Switching stage/component only indexes cached arrays: the estimator runs once."""
    est = FakeEstimator(stages=3)
    win = make_window(qtbot, settings, est)
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    for _ in range(3):
        win.state.step_stage(-1)
        win.state.step_component(1)
    assert len(est.calls) == 1


def test_export_every_format_and_read_back(qtbot, settings, tmp_path, messages):
    import csv

    from poseviewer import export

    win = make_window(qtbot, settings, FakeEstimator(stages=3))
    win.export("json", tmp_path / "none.json")  # nothing to export yet -> a message
    assert messages[-1][0] == "Export failed" and "open an image" in messages[-1][1]
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    st = win.state
    # the user looks at stage 2 and a non-best component: BVH and COCO follow the screen
    st.set_stage(1)
    k = (st.best_component + 1) % st.num_components
    st.set_component(k)
    res = st.result
    s1 = res.persons[0].stages[1]
    out = {key: win.export(key, tmp_path / f"out{suffix}")
           for key, suffix in export.EXTENSIONS.items()}
    assert all(p is not None and p.is_file() for p in out.values()), messages

    back = export.read_json(out["json"])
    assert back.num_stages == 3
    for t in range(3):
        np.testing.assert_allclose(back.persons[0].stages[t].joints_2d,
                                   res.persons[0].stages[t].joints_2d)
        comps = res.persons[0].stages[t].fit.components.pose_3d  # exported root-relative
        np.testing.assert_allclose(back.persons[0].stages[t].fit.components.pose_3d,
                                   comps - comps[..., :1, :])
    nz = export.read_npz(out["npz"])
    np.testing.assert_allclose(nz.persons[0].stages[2].fused_maps,
                               res.persons[0].stages[2].fused_maps)  # maps saved too
    rows = list(csv.DictReader(out["csv"].open()))
    pose = np.asarray(s1.fit.components.pose_3d[0, k])
    pose = pose - pose[0]  # pelvis at the origin
    r3 = [r for r in rows if r["kind"] == "3d" and r["stage"] == "1"
          and r["component"] == str(k)]
    assert [r["joint"] for r in r3] == list(H36M17.joints)
    got = np.array([[float(r[c]) for c in "xyz"] for r in r3])
    np.testing.assert_allclose(got, pose, rtol=1e-12)
    assert len([r for r in rows if r["kind"] == "2d"]) == 3 * 14
    # BVH: the component on screen, root at the origin (one frame)
    text = out["bvh"].read_text()
    assert text == export.bvh_text(pose)
    assert text.startswith("HIERARCHY") and "Frames: 1" in text
    # COCO: the joints of the stage on screen, by joint name
    doc = json.loads(out["coco"].read_text())
    kp = np.array(doc["annotations"][0]["keypoints"], dtype=float).reshape(17, 3)
    from poseviewer.skeleton import COCO17

    for name in ("left_shoulder", "right_knee", "left_ankle"):
        np.testing.assert_allclose(kp[COCO17.index(name), :2],
                                   s1.joints_2d[CPM14.index(name)], atol=1e-9)
    # a failing write reaches the user and leaves nothing behind
    assert win.export("json", tmp_path / "no-such-dir" / "x.json") is None
    assert messages[-1][0] == "Export failed"


def test_export_menu_lists_the_registry(qtbot, settings, tmp_path, monkeypatch):
    """File > Export holds one action per registered exporter, with its label, in order, and
    triggering one writes that exporter's file where the save dialog said."""
    from poseviewer import export
    from poseviewer.app import main_window
    from poseviewer.export.registry import EXPORTERS

    win = make_window(qtbot, settings, FakeEstimator(stages=3))
    file_menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&File")
    export_menu = next(a.menu() for a in file_menu.actions() if a.text() == "&Export")
    actions = [a for a in export_menu.actions() if not a.isSeparator()]
    assert [a.text() for a in actions] == [e.label for e in EXPORTERS.values()]
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    for (key, exporter), action in zip(EXPORTERS.items(), actions, strict=True):
        target = tmp_path / f"menu_{key}{exporter.suffix}"
        monkeypatch.setattr(main_window.QFileDialog, "getSaveFileName",
                            lambda *a, t=target, f=exporter.file_filter: (str(t), f))
        action.trigger()
        assert target.is_file() and target.stat().st_size > 0, key
    back = export.read_json(tmp_path / "menu_json.json")
    assert back.num_stages == 3


def test_open_dialogs_offer_every_suffix_the_readers_take():
    """The Open dialogs' filters come from the one list of photo and video suffixes that
    the CLI's folder search and the video reader use."""
    import re

    from poseviewer.app.main_window import IMAGE_FILTER
    from poseviewer.app.video import VIDEO_FILTER
    from poseviewer.commands import estimate as estimate_cmd
    from poseviewer.imageio import IMAGE_EXTENSIONS
    from poseviewer.video.source import VIDEO_EXTENSIONS

    def offered(text: str) -> set[str]:
        return set(re.findall(r"\*(\.\w+)", text.split(";;")[0]))

    assert offered(IMAGE_FILTER) == set(IMAGE_EXTENSIONS)
    assert offered(VIDEO_FILTER) == set(VIDEO_EXTENSIONS)
    assert estimate_cmd.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS


def test_import_joints_and_reopen_result(qtbot, settings, tmp_path, messages, artifacts_dir):
    from poseviewer import export

    est = FakeEstimator(stages=2)
    win = make_window(qtbot, settings, est)
    photo = write_image(tmp_path / "p.png")
    open_and_wait(qtbot, win, photo)
    res = win.state.result
    coco = export.write_coco(res, tmp_path / "people.coco.json")
    saved = export.write_json(res, tmp_path / "saved.json")
    # lift the COCO joints without the CNN: the estimator is not called again
    with qtbot.waitSignal(win.worker.succeeded, timeout=20000):
        win.import_joints(coco)
    assert len(est.calls) == 1
    imp = win.state.result
    assert imp.persons[0].source == "imported" and imp.num_stages == 1
    assert win.state.image.shape == (400, 320, 3)  # the photo was found beside the file
    # COCO-17 has no head top: 13 joints placed, the lifted pose is shown in 3D
    assert win.state.fit is not None and win.view3d.shown_bones.shape == (32, 3)
    # (along the person's camera ray: the COCO file gives the image size), with the
    # elevation search (the Run menu's default); unticked, the yaw-only fit
    from poseviewer.camera import DEFAULT_FOV_DEG, lift_along_rays

    def direct(search: bool):
        model = bundled_pose_model()
        model.elevation_search = search
        return lift_along_rays(model, np.nan_to_num(imp.persons[0].final.joints_2d)[None],
                               imp.persons[0].final.visible[None], imp.image_size,
                               DEFAULT_FOV_DEG)

    assert win.action_elevation.isChecked()
    grid, level = direct(True), direct(False)
    np.testing.assert_allclose(win.state.fit.pose_3d, grid.pose_3d, atol=1e-6)
    assert np.abs(grid.pose_3d - level.pose_3d).max() > 1e-3  # the two fits differ here
    win.elevation_search = False  # the Run menu's setting, without its re-run of the photo
    with qtbot.waitSignal(win.worker.succeeded, timeout=20000):
        win.import_joints(coco)
    np.testing.assert_allclose(win.state.fit.pose_3d, level.pose_3d, atol=1e-6)
    win.elevation_search = True
    assert "no belief maps" in win.maps_panel.info.text()
    win.grab().save(str(artifacts_dir / "app_imported.png"))
    # a broken file is a message
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with qtbot.waitSignal(win.worker.failed, timeout=10000):
        win.import_joints(bad)
    assert messages[-1][0] == "Cannot import this file"
    # reopen the saved result: every stage back, with the photo
    with qtbot.waitSignal(win.worker.succeeded, timeout=20000):
        win.open_result(saved)
    again = win.state.result
    assert again.num_stages == 2
    pose = res.persons[0].final.fit.pose_3d  # saved root-relative (pelvis at 0)
    np.testing.assert_allclose(again.persons[0].final.fit.pose_3d, pose - pose[..., :1, :])
    assert win.state.image.shape == (400, 320, 3)


def test_far_component_is_centred_and_noted(qtbot, settings, tmp_path):
    """The capped-scale quirk can put a component 100 m away: shown centred, with a note."""
    import dataclasses

    win = make_window(qtbot, settings, FakeEstimator(stages=1))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    res = win.state.result
    s = res.persons[0].final
    comps = s.fit.components
    poses = np.array(comps.pose_3d, copy=True)
    other = (int(s.fit.component[0]) + 1) % poses.shape[1]
    poses[0, other, :, 1] += 118_000.0
    s.fit = dataclasses.replace(s.fit, components=dataclasses.replace(comps, pose_3d=poses))
    win.state.set_result(res, win.state.image)
    win.state.set_component(other)
    np.testing.assert_allclose(win.view3d.shown_bones, centred_segments(poses[0, other]),
                               atol=1e-5)
    assert np.abs(win.view3d.shown_bones).max() < 2.0
    assert f"#{other + 1} is 118.0 m away" in win.view3d.note.text()
    assert win.view3d.note.isVisible()


# ---- the real Estimator with a tiny random-init CNN ------------------------------------
def tiny_estimator(fusion: bool = True, stages: int = 3):
    import torch

    from poseviewer.cnn import LiftingCPM, tiny_test
    from poseviewer.cnn.config import CPMConfig
    from poseviewer.estimator import Estimator

    torch.manual_seed(0)
    cfg = CPMConfig.from_dict({**tiny_test(fusion=fusion, num_stages=stages).to_dict(),
                               "visibility_threshold": -1e9})  # every joint "visible"
    return Estimator(LiftingCPM(cfg), bundled_pose_model(), device="cpu")


def test_real_estimator_in_the_window(qtbot, settings, tmp_path, artifacts_dir):
    est = tiny_estimator(fusion=True, stages=3)
    win = make_window(qtbot, settings, est)
    stages_seen: list[int] = []
    win.worker.progress.connect(lambda t, n: stages_seen.append(t))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"), timeout=60000)
    res = win.state.result
    assert stages_seen == [0, 1, 2]
    assert res.num_stages == 3 and win.state.stage == 2
    # every panel shows the estimator's arrays for the selected stage
    for t in (2, 0):
        win.state.set_stage(t)
        s = res.persons[0].stages[t]
        np.testing.assert_array_equal(win.maps_panel.map_data(4), s.fused_maps[4])
        got = win.image_panel.skeleton_points()
        for side, want in expected_skeleton(s.joints_2d, s.visible).items():
            np.testing.assert_allclose(got[side], want)
        k = win.state.component
        assert k == int(s.fit.component[0])
        np.testing.assert_allclose(
            win.view3d.shown_bones,
            centred_segments(np.asarray(s.fit.components.pose_3d[0, k])), atol=1e-5)
    win.state.set_map_kind("projected")
    np.testing.assert_array_equal(win.maps_panel.map_data(4),
                                  res.persons[0].stages[0].projected_maps[4])
    win.grab().save(str(artifacts_dir / "app_real_estimator.png"))


@pytest.mark.parametrize("display_limit", [None, 160 * 200])
def test_downscaled_analysis_is_shown_and_exported_in_file_pixels(
        qtbot, settings, tmp_path, monkeypatch, messages, display_limit):
    """The estimator analyses a half-size copy (its max_pixels); the window, the overlay and
    the exports are in the file's pixels. With ``display_limit`` the shown copy is itself
    downscaled and stretched over the file's frame."""
    import json

    import cv2

    from poseviewer import imageio

    if display_limit is not None:
        monkeypatch.setattr(imageio, "MAX_PIXELS", display_limit)
    est = tiny_estimator(fusion=True, stages=2)
    est.max_pixels = 320 * 400 // 4
    path = write_image(tmp_path / "p.png", w=320, h=400)
    fh, fw = cv2.imread(str(path)).shape[:2]
    win = make_window(qtbot, settings, est)
    open_and_wait(qtbot, win, path, timeout=60000)
    res = win.state.result
    assert tuple(res.image_size) == (fw, fh) == (320, 400)
    assert any("downscaled" in m for m in res.messages)
    shown = (fh, fw) if display_limit is None else (200, 160)
    assert win.state.image.shape[:2] == shown
    # the photo covers the file's frame (pixel centres at integer coordinates), whatever
    # the size of the shown copy
    r = win.image_panel.photo.mapRectToParent(win.image_panel.photo.boundingRect())
    np.testing.assert_allclose([r.x(), r.y(), r.width(), r.height()], [-0.5, -0.5, fw, fh])
    # the whole-image person spans the file, not the analysed half-size copy
    box = np.asarray(res.persons[0].box, float)
    assert box[2] > 0.75 * fw and box[3] > 0.75 * fh
    # overlay of a map cell lands where map_to_image (file pixels) says
    win.controls.overlay_check.setChecked(True)
    ov = win.image_panel.overlay_item
    a = win.state.person_result.map_to_image
    p = ov.mapToParent(QPointF(10.5, 20.5))
    np.testing.assert_allclose([p.x(), p.y()], a @ [10, 20, 1], atol=1e-6)
    # exports agree with the file
    out = win.export("json", tmp_path / "r.json")
    image = json.loads(out.read_text())["image"]
    assert (image["width"], image["height"]) == (fw, fh)
    coco = json.loads(win.export("coco", tmp_path / "r.coco.json").read_text())
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (fw, fh)
    # a re-run with a box in file pixels stays in file pixels
    with qtbot.waitSignal(win.worker.succeeded, timeout=60000):
        win.on_boxes_edited(np.array([[100.0, 60.0, 220.0, 360.0]]))
    again = win.state.result
    assert tuple(again.image_size) == (fw, fh)
    np.testing.assert_allclose(again.persons[0].box[:2], [100, 60], atol=30)
    assert not messages


def test_real_estimator_cancel_and_close(qtbot, settings, tmp_path):
    est = tiny_estimator(fusion=False, stages=6)
    gate = threading.Event()
    real = est.estimate

    def slow_estimate(image, boxes=None, on_stage=None, cancel=None):
        def stage(t, n):  # hold every stage until the test lets it go
            on_stage(t, n)
            gate.wait(0.5)
        return real(image, boxes=boxes, on_stage=stage, cancel=cancel)

    est.estimate = slow_estimate
    win = make_window(qtbot, settings, est)
    with qtbot.waitSignal(win.worker.progress, timeout=60000):
        win.open_image(write_image(tmp_path / "p.png"))
    with qtbot.waitSignal(win.worker.cancelled, timeout=10000):
        win.cancel()
    assert win.state.result is None and win.state.image is not None
    with qtbot.waitSignal(win.worker.progress, timeout=60000):
        win.open_image(write_image(tmp_path / "q.png"))
    t0 = time.perf_counter()
    win.close()
    assert time.perf_counter() - t0 < 3.0
    assert win.worker._thread.isFinished()


def test_qt_binding_keeps_bool_refcounts():
    """PySide6 6.12.0 drops a reference to True per signal emit (Python aborts later)."""
    from poseviewer.app import qt_binding_problem

    assert qt_binding_problem() is None


def _run_main_until(args, done, monkeypatch, tmp_path, estimator):
    """Run ``poseviewer [args]`` (the CLI) until ``done(window)``; returns the window."""
    from PySide6.QtCore import QTimer

    import poseviewer.app.main_window as mw
    from poseviewer import cli

    ini = tmp_path / "main-settings.ini"
    monkeypatch.setenv("POSEVIEWER_SETTINGS", str(ini))
    monkeypatch.setattr(mw, "default_estimator_factory", lambda: estimator)
    seen = {}

    def poll():
        wins = [w for w in QApplication.topLevelWidgets()
                if isinstance(w, mw.MainWindow) and w.isVisible()]
        if wins and done(wins[-1]):
            seen["win"] = wins[-1]
            wins[-1].close()
            QApplication.instance().quit()
        else:
            QTimer.singleShot(20, poll)

    QTimer.singleShot(0, poll)
    QTimer.singleShot(20000, QApplication.instance().quit)  # never hang the suite
    assert cli.main(args) == 0
    assert "win" in seen, "the window never reached the expected state"
    assert ini.is_file()  # settings went to the temp file, not the user's
    return seen["win"]


def test_cli_opens_the_image_argument(qtbot, tmp_path, monkeypatch, messages):
    path = write_image(tmp_path / "arg.png")
    win = _run_main_until([str(path)], lambda w: w.state.result is not None, monkeypatch,
                          tmp_path, FakeEstimator(stages=2))
    assert win.state.result.image_path == str(path) and win.state.num_stages == 2


def test_cli_without_image_uses_sample_or_says_so(qtbot, tmp_path, monkeypatch, messages):
    from poseviewer.app import sample_image

    sample = sample_image()
    if sample is None:
        win = _run_main_until([], lambda w: "No bundled sample" in
                              w.statusBar().currentMessage(), monkeypatch, tmp_path,
                              FakeEstimator())
        assert win.state.result is None
    else:
        win = _run_main_until([], lambda w: w.state.result is not None, monkeypatch,
                              tmp_path, FakeEstimator())
        assert Path(win.state.result.image_path) == sample
    # a missing image argument is a message, not a crash
    _run_main_until([str(tmp_path / "nope.jpg")], lambda w: w.last_error is not None,
                    monkeypatch, tmp_path, FakeEstimator())
    assert "not found" in messages[-1][1]


def test_adjusting_the_box_reruns_with_it(qtbot, settings, tmp_path):
    est = FakeEstimator(stages=2, persons=2)
    win = make_window(qtbot, settings, est)
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png", w=400, h=300))
    win.state.set_person(1)
    old = win.state.result.persons[0].box.copy()
    roi = win.image_panel.box_roi
    with qtbot.waitSignal(win.worker.succeeded, timeout=10000):
        roi.setPos(QPointF(220, 30), finish=False)
        roi.setSize(QPointF(120, 200), finish=True)  # as at the end of a handle drag
    boxes = est.calls[-1]["boxes"]
    np.testing.assert_allclose(boxes, [old, [220, 30, 340, 230]])
    # showing a new result moves the ROI without triggering another run
    qtbot.wait(100)
    assert len(est.calls) == 2


def test_plain_coco_import_and_unlifted_person(qtbot, settings, tmp_path, messages):
    """COCO-17 keypoints without our extras (no head top): NaN joints are not drawn."""
    win = make_window(qtbot, settings, FakeEstimator())
    from poseviewer.skeleton import COCO17

    kp = np.zeros((17, 3))
    for name in COCO17.joints:
        if name in CPM14.joints:
            kp[COCO17.index(name)] = [*BASE_JOINTS[CPM14.index(name)], 2]
    doc = {"images": [{"id": 1, "file_name": "elsewhere.jpg", "width": 320, "height": 400}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                            "keypoints": kp.ravel().tolist(), "num_keypoints": 12}],
           "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(doc))
    with qtbot.waitSignal(win.worker.succeeded, timeout=20000):
        win.import_joints(path)
    s = win.state.stage_result
    assert not s.visible[CPM14.index("head_top")]
    assert win.state.image.shape == (400, 320, 3)  # blank canvas of the file's size
    assert any("blank canvas" in m for m in win.state.result.messages)
    # the head-top bone is not drawn; the neck (shoulders' midpoint) is
    centre = win.image_panel.skeleton_points()["centre"]
    assert np.isfinite(centre).all() and len(centre) == 0
    assert win.state.fit is not None
    # a person with too few visible joints is shown in 2D, not lifted in 3D
    res = win.state.result
    p = res.persons[0]
    vis = np.zeros(14, dtype=bool)
    vis[:3] = True
    p.stages[0] = dataclasses.replace(p.stages[0], visible=vis,
                                      fit=_fit(np.nan_to_num(p.stages[0].joints_2d), vis))
    win.state.set_result(res, win.state.image)
    assert win.state.fit is None
    assert win.view3d.shown_bones.shape == (0, 3)
    assert "not lifted" in win.view3d.summary.text()
    assert not win.controls.component_combo.isEnabled()
    win.state.step_component(1)  # nothing to step: no error


def test_selected_joint_slot_follows_the_skeleton_mapping():
    from poseviewer.app.view3d import _cpm_joint_to_h36m
    from poseviewer.skeleton import CPM14, cpm_to_h36m

    for j in range(CPM14.num_joints):
        onehot = np.zeros((CPM14.num_joints, 1))
        onehot[j] = 1.0
        assert _cpm_joint_to_h36m(j) == int(np.argmax(cpm_to_h36m(onehot)[:, 0]))
    assert _cpm_joint_to_h36m(None) is None


class FlipEstimator(FakeEstimator):
    """A fake with the Estimator's ``flip_test`` switch, reported in the result's model."""

    def __init__(self) -> None:
        super().__init__(stages=2)
        self.flip_test = True

    def estimate(self, image, boxes=None, on_stage=None, cancel=None) -> EstimateResult:
        res = super().estimate(image, boxes, on_stage, cancel)
        self.calls[-1]["flip_test"] = self.flip_test
        res.model = {**(res.model or {}), "flip_test": self.flip_test}
        return res


def test_mirror_pass_menu_follows_the_network_and_reruns(qtbot, settings, tmp_path):
    """The Run menu's mirror-pass item shows the network's setting after a result and,
    when changed, re-runs the image with the setting applied in the worker."""
    est = FlipEstimator()
    win = make_window(qtbot, settings, est)
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    assert win.action_flip_test.isChecked() and len(est.calls) == 1
    with qtbot.waitSignal(win.worker.succeeded, timeout=10000):
        win.action_flip_test.setChecked(False)
    assert est.calls[-1]["flip_test"] is False and len(est.calls) == 2
    assert not win.action_flip_test.isChecked()
    assert win.state.result.model["flip_test"] is False
    with qtbot.waitSignal(win.worker.succeeded, timeout=10000):
        win.action_flip_test.trigger()
    assert est.calls[-1]["flip_test"] is True and win.action_flip_test.isChecked()
