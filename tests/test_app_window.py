"""The viewer's window with real photos and bad ones: failed opens, tiny and transparent
photos, overlapping labels, the label of a reopened result. Drives the real window
(pytest-qt under pytest-xvfb) with the stand-in estimator of ``test_app``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QRectF  # noqa: E402
from test_app import FakeEstimator, make_window, open_and_wait, write_image  # noqa: E402

pytestmark = pytest.mark.gui




def _overlaps(rects: list[QRectF]) -> list[tuple[int, int]]:
    """Index pairs of rectangles that overlap (by more than a hair)."""
    out = []
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            inter = rects[i].intersected(rects[j])
            if inter.width() > 0.5 and inter.height() > 0.5:
                out.append((i, j))
    return out


# ---- a failed open changes nothing ---------------------------------------------------------
def test_failed_open_changes_nothing_but_shows_the_message(qtbot, settings, tmp_path,
                                                           messages):
    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    good = write_image(tmp_path / "good.png")
    open_and_wait(qtbot, win, good)
    before = {"title": win.windowTitle(), "path": win.image_path,
              "recent": win.recent_files(), "folder": win.last_folder(),
              "result": win.state.result, "image": win.state.image,
              "export_name": win._default_name(".json")}
    other = tmp_path / "elsewhere"
    other.mkdir()
    broken = other / "broken.png"
    broken.write_text("not a picture")
    for bad in (broken, other / "missing.jpg"):
        with qtbot.waitSignal(win.worker.failed, timeout=10000):
            win.open_image(bad)
        assert messages[-1][0] == "Cannot use this image"
        assert bad.name in messages[-1][1]
        assert win.windowTitle() == before["title"] == "poseviewer - good.png"
        assert win.image_path == before["path"] == str(good)
        assert win.recent_files() == before["recent"] == [str(good.resolve())]
        assert [a.data() for a in win.recent_menu.actions()] == before["recent"]
        assert win.last_folder() == before["folder"]
        assert win._default_name(".json") == before["export_name"]
        assert win.state.result is before["result"] and win.state.image is before["image"]
    # a re-run (F5) and an export still belong to the good photo
    with qtbot.waitSignal(win.worker.succeeded, timeout=10000):
        win.rerun()
    assert win.state.result.image_path == str(good)
    out = win.export("json", tmp_path / "after.json")
    named = Path(json.loads(Path(out).read_text())["image"]["path"])
    assert (out.parent / named).resolve() == good.resolve()  # absolute, or from the JSON


def test_tiny_image_is_refused_with_a_titled_message(qtbot, settings, tmp_path, messages):
    import cv2

    win = make_window(qtbot, settings, FakeEstimator())
    dot = tmp_path / "dot.png"
    cv2.imwrite(str(dot), np.full((1, 1, 3), 200, np.uint8))
    with qtbot.waitSignal(win.worker.failed, timeout=10000):
        win.open_image(dot)
    title, text = messages[-1]
    assert title == "Cannot use this image" and "1x1 pixels, too small" in text
    assert win.state.image is None and win.image_path is None  # nothing shown or taken
    assert win.recent_files() == []


def test_small_photo_is_not_blown_up_over_the_panel(qtbot, settings, tmp_path):
    from poseviewer.app.image_view import MAX_FIT_ZOOM

    win = make_window(qtbot, settings, FakeEstimator())
    open_and_wait(qtbot, win, write_image(tmp_path / "small.png", w=20, h=24))
    vb = win.image_panel.vb
    shown = vb.mapViewToScene(QRectF(0, 0, 20, 24)).boundingRect()
    assert shown.width() <= 20 * MAX_FIT_ZOOM + 1 and shown.height() <= 24 * MAX_FIT_ZOOM + 1
    # still centred in the panel
    centre = vb.mapViewToScene(QRectF(-0.5, -0.5, 20, 24)).boundingRect().center()
    panel = vb.sceneBoundingRect().center()
    assert abs(centre.x() - panel.x()) < 2 and abs(centre.y() - panel.y()) < 2
    # a photo of normal size still fills the panel
    open_and_wait(qtbot, win, write_image(tmp_path / "big.png", w=320, h=400))
    shown = vb.mapViewToScene(QRectF(-0.5, -0.5, 320, 400)).boundingRect()
    panel = vb.sceneBoundingRect()
    assert max(shown.width() / panel.width(), shown.height() / panel.height()) > 0.9


def test_rgba_photo_is_composited_and_the_user_told(qtbot, settings, tmp_path):
    import cv2

    from poseviewer.imageio import NEUTRAL_BACKGROUND

    est = FakeEstimator()
    win = make_window(qtbot, settings, est)
    rgba = np.zeros((400, 320, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[100:300, 100:220, 3] = 255  # an opaque figure on a transparent (black) ground
    path = tmp_path / "cutout.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    open_and_wait(qtbot, win, path)
    img = win.state.image
    assert (img[0, 0] == NEUTRAL_BACKGROUND).all() and (img[200, 150] == (10, 200, 30)).all()
    np.testing.assert_array_equal(win.image_panel.photo.image, img)
    assert "transparent pixels composited" in win.statusBar().currentMessage()


# ---- labels that overlapped or misled --------------------------------------------------------
def _label_rects(panel) -> list[QRectF]:
    """Scene rectangles of the map titles and confidences on screen."""
    return [item.sceneBoundingRect() for item in (*panel.titles, *panel.values)
            if item.isVisible()]


def test_map_titles_never_drawn_on_top_of_each_other(qtbot, settings, tmp_path):
    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    panel = win.maps_panel
    qtbot.wait(50)
    # before the first result: no tiles, so no titles piled up at one spot
    assert _overlaps(_label_rects(panel)) == []
    assert not any(t.isVisible() for t in panel.titles)
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    qtbot.wait(50)
    rects = _label_rects(panel)
    assert len(rects) == 28 and _overlaps(rects) == []  # 14 titles + 14 confidences
    for j in range(14):  # each title sits just above its own tile
        title = panel.titles[j].mapRectToView(panel.titles[j].boundingRect())
        tile = panel.tile_rect(j)
        assert tile.left() - 1 <= title.center().x() <= tile.right() + 1
        assert title.bottom() <= tile.top() + 0.5
    win.state.set_stage(0)  # hidden joints: grey titles, "hidden" inside the tile
    assert _overlaps(_label_rects(panel)) == []
    st = win.state.stage_result
    for j in range(14):
        shown = panel.values[j].textItem.toPlainText()
        assert shown.endswith(" hidden") == (not bool(st.visible[j])), (j, shown)
    assert not st.visible.all()


def test_reopened_saved_result_is_not_called_imported(qtbot, settings, tmp_path):
    from poseviewer import export

    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    saved = export.write_json(win.state.result, tmp_path / "saved.json")
    with qtbot.waitSignal(win.worker.succeeded, timeout=20000):
        win.open_result(saved)
    for kind in ("fused", "cnn", "projected"):
        win.state.set_map_kind(kind)
        text = win.maps_panel.info.text()
        assert "imported" not in text and "saved without them" in text, (kind, text)
    assert not any(t.isVisible() for t in win.maps_panel.titles)
    # joints that really were imported still say so
    coco = export.write_coco(win.state.result, tmp_path / "people.coco.json")
    with qtbot.waitSignal(win.worker.succeeded, timeout=20000):
        win.import_joints(coco)
    assert "2D joints imported" in win.maps_panel.info.text()


# ---- the 3D panel: offscreen rendering, tags apart, only what changed is redrawn -----------
def test_ghost_tag_layout_keeps_labels_apart():
    from poseviewer.app.view3d import layout_tags

    bounds = QRectF(0, 0, 300, 200)
    anchors = np.array([[100.0, 100.0]] * 4 + [[102.0, 98.0], [290.0, 5.0]])
    sizes = np.array([[20.0, 12.0]] * 6)
    rects = layout_tags(anchors, sizes, bounds)
    assert len(rects) == 6 and _overlaps(rects) == []
    for r, (w, h) in zip(rects, sizes, strict=True):
        assert (r.width(), r.height()) == (w, h)
        assert bounds.contains(r)
    # a lone label sits just above-right of its anchor
    (r,) = layout_tags(np.array([[50.0, 60.0]]), np.array([[20.0, 12.0]]), bounds)
    assert (r.left(), r.bottom()) == (54.0, 56.0)


def test_3d_panel_tags_apart_and_no_gl_widget_in_the_window(qtbot, settings, tmp_path):
    from PySide6.QtOpenGLWidgets import QOpenGLWidget

    from poseviewer.app.view3d import can_render

    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    # a QOpenGLWidget anywhere in the window makes Qt composite every repaint through GL
    assert win.findChildren(QOpenGLWidget) == []
    v = win.view3d
    n = win.state.num_components
    placed = v.tag_rects()
    others = [c for c in range(n) if c != win.state.component]
    assert [t for t, _ in placed] == [f"#{c + 1}" for c in others] and n >= 3
    assert _overlaps([r for _, r in placed]) == []
    # each tag sits beside the poses (not on a torso), near its own ghost's head's height
    head = v.project(np.array([a for _, a in v.tags]))
    poses = v.pose_rect()
    assert poses.width() > 0 and poses.height() > 0
    for (_, r), (_hx, hy) in zip(placed, head, strict=True):
        assert not r.intersects(poses)
        assert r.left() >= poses.right() or r.right() <= poses.left()
        assert abs(r.center().y() - hy) < 3 * r.height() * len(placed)
    if not can_render():
        pytest.skip("rendering needs a real X display")
    # what the widget shows is the offscreen render; the camera follows the mouse
    qtbot.wait(50)
    shown = v.scene_view.grab().toImage()
    assert shown.width() == v.scene_view.width()
    cam = v.view.camera
    az0, renders0 = cam.azimuth, v.scene_view.renders
    from PySide6.QtCore import QPoint, Qt

    sv = v.scene_view
    c = sv.rect().center()
    qtbot.mousePress(sv, Qt.MouseButton.LeftButton, pos=c)
    for dx in (10, 30, 60):
        qtbot.mouseMove(sv, QPoint(c.x() + dx, c.y()))
    qtbot.mouseRelease(sv, Qt.MouseButton.LeftButton, pos=QPoint(c.x() + 60, c.y()))
    qtbot.waitUntil(lambda: sv.renders > renders0, timeout=3000)
    assert cam.azimuth != az0


def test_switches_redraw_only_what_changed(qtbot, settings, tmp_path):
    win = make_window(qtbot, settings, FakeEstimator(stages=3))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    qtbot.wait(50)
    calls: dict[str, int] = {}
    panel = win.image_panel
    def counting(name: str):
        original = getattr(panel, name)

        def counted(*a, **k):
            calls[name] = calls.get(name, 0) + 1
            return original(*a, **k)
        return counted

    for name in ("_draw_photo", "_draw_boxes", "_draw_skeleton", "_draw_component",
                 "_draw_overlay"):
        setattr(panel, name, counting(name))
    st = win.state
    other = (st.component + 1) % st.num_components
    st.set_component(other)
    assert calls == {"_draw_component": 1}  # a component switch: one curve
    calls.clear()
    st.set_joint(3)
    assert calls == {"_draw_skeleton": 1, "_draw_overlay": 1}
    calls.clear()
    st.set_stage(0)
    assert "_draw_photo" not in calls and "_draw_boxes" not in calls
    # the 3D scene renders once per change it shows, not for changes it does not show
    sv = win.view3d.scene_view
    qtbot.wait(20)
    n0 = sv.renders
    st.set_map_kind("cnn")
    qtbot.wait(20)
    assert sv.renders == n0
    st.set_component((st.component + 1) % st.num_components)
    qtbot.waitUntil(lambda: sv.renders == n0 + 1, timeout=2000)


def test_window_screenshot_shows_the_3d_panel(qtbot, settings, tmp_path, messages):
    """The window screenshot is a plain grab; the 3D panel's pixels are in it."""
    from poseviewer.app.view3d import BACKGROUND, can_render

    if not can_render():
        pytest.skip("rendering needs a real X display")
    win = make_window(qtbot, settings, FakeEstimator(stages=2))
    open_and_wait(qtbot, win, write_image(tmp_path / "p.png"))
    qtbot.wait(50)
    img = win.panel_image("window")
    sv = win.view3d.scene_view
    r = sv.rect().translated(sv.mapTo(win, sv.rect().topLeft()))
    ratio = img.devicePixelRatio()
    crop = img.copy(int(r.x() * ratio), int(r.y() * ratio), int(r.width() * ratio),
                    int(r.height() * ratio)).convertToFormat(img.Format.Format_RGBA8888)
    w, h = crop.width(), crop.height()
    px = np.array(crop.constBits(), np.uint8).reshape(h, crop.bytesPerLine())[:, :4 * w]
    px = px.reshape(h, w, 4)[..., :3].astype(float)
    drawn = (np.abs(px - np.array(BACKGROUND[:3]) * 255).max(axis=-1) > 30).sum()
    assert drawn > 2000  # bones, joints, grid: not a blank canvas
