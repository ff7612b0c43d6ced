"""3D panel (vispy SceneCanvas, turntable camera): the chosen mixture component's pose
solid (bones coloured left/right, joints), the other components as faint ghosts tagged #k,
and a ground grid.

The vispy canvas is never put in the window: it renders offscreen into an image that a plain
widget shows (mouse events are passed on to vispy's camera). A ``QOpenGLWidget`` inside the
window would make Qt composite the whole window through OpenGL on every repaint of any
panel, which under software OpenGL (Mesa llvmpipe, Xvfb, VMs) cost ~20 ms per redraw.
The ghost tags are painted over the image in 2D and laid out so that they never overlap.

Display frame: x = image right, y = depth away from the camera, z = up, metres. Every
pose is centred on its own joint centroid for display: the lifting's capped-scale quirk can
put a component tens of metres away in depth (exports keep the faithful values); the panel
says so when it happens.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from vispy import scene

from poseviewer.lifting.result import ellipsoid_d2
from poseviewer.selection import Selection
from poseviewer.skeleton import CPM_TO_H36M, H36M17

#: Default camera of the 3D panel (reset view returns here).
CAMERA_DEFAULTS = {"elevation": 12.0, "azimuth": 0.0, "distance": 3.6, "fov": 35.0}
#: A component whose centroid is farther than this (metres) from the origin gets a note.
FAR_AWAY_M = 1.0
#: Nominal level of the uncertainty ellipsoids and chi-square(3) quantile for it (a fit
#: with degrees of freedom, a Student-t posterior, gets its own: ``ellipsoid_d2``).
ELLIPSOID_LEVEL = 0.9
_CHI2_3_90 = 6.251388631170325
BACKGROUND = (0.11, 0.11, 0.13, 1.0)


def can_render() -> bool:
    """False on Qt's headless platforms ('offscreen', 'minimal'), where the GL canvas
    cannot render (reading it back there blocks)."""
    from PySide6.QtGui import QGuiApplication

    return QGuiApplication.platformName() not in ("offscreen", "minimal")


def centred_pose(pose_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(17, 3) pose in mm -> (pose in metres centred on its joint centroid, centroid in m)."""
    p = np.asarray(pose_mm, dtype=np.float64) / 1000.0
    c = p.mean(axis=0)
    return p - c, c


def segments(pose: np.ndarray) -> np.ndarray:
    """(2 * 16, 3) bone end points of an H36M-17 pose."""
    return pose[np.asarray(H36M17.bones).reshape(-1)]


def ellipsoid_segments(centres: np.ndarray, covs_mm2: np.ndarray, n: int = 24,
                       chi2: float = _CHI2_3_90) -> np.ndarray:
    """Wire-frame ellipsoids {x: (x - c)^T S^-1 (x - c) <= chi2} (the 90% ones by default):
    the three principal ellipses of each joint, as segment end points (J * 3 * n * 2, 3) in
    metres; ``centres`` (J, 3) m, ``covs_mm2`` (J, 3, 3) mm^2."""
    w, v = np.linalg.eigh(np.asarray(covs_mm2, dtype=np.float64) / 1e6)
    axes = v * np.sqrt(np.clip(w, 0.0, None) * chi2)[:, None, :]  # (J, 3, 3) columns
    t = np.linspace(0.0, 2 * np.pi, n + 1)
    cos, sin = np.cos(t), np.sin(t)
    rings = []
    for a, b in ((0, 1), (1, 2), (0, 2)):
        ring = (axes[:, None, :, a] * cos[None, :, None] + axes[:, None, :, b] * sin[None, :,
                                                                                     None])
        ring = ring + np.asarray(centres, dtype=np.float64)[:, None, :]  # (J, n + 1, 3)
        rings.append(np.stack([ring[:, :-1], ring[:, 1:]], axis=2).reshape(-1, 3))
    return np.concatenate(rings).astype(np.float32)


def grid_lines(z: float, half: float = 1.0, step: float = 0.25,
               centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Segment end points of a square ground grid at height ``z`` around ``centre`` (x, y)."""
    n = int(np.ceil(half / step - 1e-9))
    ticks = np.arange(-n, n + 1) * step
    h = n * step
    pts = []
    for t in ticks:
        pts += [(t, -h, z), (t, h, z), (-h, t, z), (h, t, z)]
    return (np.array(pts, dtype=np.float64) + [centre[0], centre[1], 0.0]).astype(np.float32)


class OffscreenCanvas(scene.SceneCanvas):
    """A SceneCanvas that is never shown: ``render()`` draws it offscreen. Every change of
    the scene (data, camera) calls ``on_change`` so that the widget showing it repaints."""

    def __init__(self, on_change: Callable[[], None], **kwargs) -> None:
        self._on_change: Callable[[], None] | None = None
        super().__init__(show=False, **kwargs)
        self._on_change = on_change

    def update(self, node=None) -> None:  # noqa: D102 (vispy API)
        super().update(node)
        if self._on_change is not None:
            self._on_change()

    def set_logical_size(self, w: int, h: int, ratio: float) -> None:
        """Size the offscreen scene like the widget that shows it (``ratio``: device
        pixels per logical pixel)."""
        w, h = max(int(w), 1), max(int(h), 1)
        pw, ph = max(round(w * ratio), 1), max(round(h * ratio), 1)
        native = self.native
        if (w, h) == tuple(self.size) and (pw, ph) == tuple(self.physical_size or ()):
            return
        native.resize(w, h)  # hidden: Qt sends no resize event, so tell vispy directly
        native._vispy_set_physical_size(pw, ph)
        self.events.resize(size=(w, h), physical_size=(pw, ph))

    def make_current(self) -> None:
        """Make this canvas's own GL context current (the hidden widget's is never valid;
        vispy keeps a context with an offscreen surface for it)."""
        native = self.native
        ctx, surface = getattr(native, "_secondary_context", None), getattr(native, "_surface",
                                                                              None)
        if ctx is not None and surface is not None:
            ctx.makeCurrent(surface)
        else:  # other vispy backends: their own way
            self.set_current()

    def render_rgba(self) -> np.ndarray:
        """(H, W, 4) uint8 RGBA of the scene at the physical size."""
        self.make_current()
        return self.render(size=tuple(self.physical_size), alpha=True)


class SceneView(QWidget):
    """Shows the offscreen canvas's picture and the ghost tags; passes the mouse to vispy."""

    def __init__(self, panel: Pose3DPanel) -> None:
        super().__init__(panel)
        self.setObjectName("view3d_canvas")
        self.panel = panel
        self.setMinimumSize(200, 200)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.frame: QImage | None = None
        self.dirty = True
        self.renders = 0  # how many times the scene was rendered (for tests and benchmarks)

    def sizeHint(self):  # noqa: N802
        from PySide6.QtCore import QSize

        return QSize(400, 400)

    def mark_dirty(self) -> None:
        """The scene changed: render it again on the next paint."""
        self.dirty = True
        self.update()

    def resizeEvent(self, ev) -> None:  # noqa: N802
        self.panel.canvas.set_logical_size(self.width(), self.height(),
                                           self.devicePixelRatioF())
        self.mark_dirty()
        super().resizeEvent(ev)

    def current_frame(self) -> QImage | None:
        """The scene's picture, rendered now if it changed (None where GL cannot render)."""
        if not can_render():
            return None
        if self.dirty or self.frame is None:
            self.panel.canvas.set_logical_size(self.width(), self.height(),
                                               self.devicePixelRatioF())
            rgba = np.ascontiguousarray(self.panel.canvas.render_rgba())
            h, w = rgba.shape[:2]
            img = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
            img.setDevicePixelRatio(self.devicePixelRatioF())
            self.frame = img
            self.dirty = False
            self.renders += 1
        return self.frame

    def paintEvent(self, ev) -> None:  # noqa: N802
        painter = QPainter(self)
        try:
            frame = None
            try:
                frame = self.current_frame()
            except Exception as exc:  # a GL failure is a message in the panel, not a crash
                self.panel.render_error = f"{type(exc).__name__}: {exc}"
            if frame is None:
                painter.fillRect(self.rect(), QColor.fromRgbF(*BACKGROUND))
                painter.setPen(QColor(200, 200, 200))
                why = self.panel.render_error or "needs OpenGL on a real display"
                painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                                 f"3D view unavailable: {why}")
            else:
                painter.drawImage(QPointF(0, 0), frame)
            self.panel.paint_tags(painter)
        finally:
            painter.end()

    # the camera is vispy's: hand it the mouse (positions are the same: same size)
    def mousePressEvent(self, ev) -> None:  # noqa: N802
        self.panel.canvas.native.mousePressEvent(ev)

    def mouseMoveEvent(self, ev) -> None:  # noqa: N802
        self.panel.canvas.native.mouseMoveEvent(ev)

    def mouseReleaseEvent(self, ev) -> None:  # noqa: N802
        self.panel.canvas.native.mouseReleaseEvent(ev)

    def mouseDoubleClickEvent(self, ev) -> None:  # noqa: N802
        self.panel.canvas.native.mouseDoubleClickEvent(ev)

    def wheelEvent(self, ev) -> None:  # noqa: N802
        self.panel.canvas.native.wheelEvent(ev)


def layout_tags(anchors: np.ndarray, sizes: np.ndarray, bounds: QRectF,
                gap: float = 2.0) -> list[QRectF]:
    """Place one label per anchor (x, y), just above-right of it, moving labels up (then
    down) until none overlaps another; kept inside ``bounds`` where possible."""
    placed: list[QRectF] = []
    order = np.argsort(-np.asarray(anchors, float).reshape(-1, 2)[:, 1], kind="stable")
    out: list[QRectF | None] = [None] * len(anchors)
    for i in order:  # lowest anchor first: the others stack upwards above it
        (x, y), (w, h) = anchors[i], sizes[i]
        x = float(min(max(x + 4.0, bounds.left()), bounds.right() - w))
        rect = QRectF(x, float(y) - h - 4.0, float(w), float(h))
        for _ in range(len(placed) + 1):
            hit = [r for r in placed if r.adjusted(-gap, -gap, gap, gap).intersects(rect)]
            if not hit:
                break
            rect.moveBottom(min(r.top() for r in hit) - gap)
        if rect.top() < bounds.top():  # no room above: stack below the lowest instead
            rect.moveTop(max([bounds.top()] + [r.bottom() + gap for r in placed]))
        placed.append(rect)
        out[i] = rect
    return [r for r in out if r is not None]


class Pose3DPanel(QWidget):
    """Rotatable 3D view of the selected stage's fit."""

    def __init__(self, state: Selection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("view3d_panel")
        self.state = state
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.render_error: str | None = None
        self.scene_view = SceneView(self)
        self.canvas = OffscreenCanvas(self.scene_view.mark_dirty, keys=None,
                                      bgcolor=BACKGROUND, size=(400, 400))
        lay.addWidget(self.scene_view, 1)
        bar = QHBoxLayout()
        self.reset_button = QPushButton("Reset view")
        self.reset_button.setObjectName("view3d_reset")
        self.reset_button.setToolTip("camera back to the front view (R); drag to rotate, "
                                     "wheel to zoom, shift-drag to pan")
        self.reset_button.clicked.connect(self.reset_view)
        bar.addWidget(self.reset_button)
        self.cov_check = QCheckBox("Uncertainty")
        self.cov_check.setObjectName("view3d_uncertainty")
        self.cov_check.setToolTip(
            f"draw each joint's {round(100 * ELLIPSOID_LEVEL)}% posterior ellipsoid of the "
            "solid component (the pose relative to its joint centroid)")
        self.cov_check.toggled.connect(self._on_cov_toggled)
        bar.addWidget(self.cov_check)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setObjectName("view3d_summary")
        bar.addWidget(self.summary, 1)
        lay.addLayout(bar)
        self.note = QLabel("")
        self.note.setObjectName("view3d_note")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #c90;")
        lay.addWidget(self.note)

        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(up="+z", center=(0, 0, 0),
                                                 **CAMERA_DEFAULTS)
        self.grid = scene.visuals.Line(pos=grid_lines(-1.0), connect="segments",
                                       color=(0.55, 0.55, 0.6, 0.45), width=1,
                                       parent=self.view.scene)
        self.ghosts = scene.visuals.Line(pos=np.zeros((2, 3), np.float32), connect="segments",
                                         width=2, parent=self.view.scene)
        self.bones = scene.visuals.Line(pos=np.zeros((2, 3), np.float32), connect="segments",
                                        width=5, parent=self.view.scene)
        self.joints = scene.visuals.Markers(parent=self.view.scene)
        self.selected = scene.visuals.Markers(parent=self.view.scene)
        self.ellipsoids = scene.visuals.Line(pos=np.zeros((2, 3), np.float32),
                                             connect="segments", width=1,
                                             color=(0.95, 0.85, 0.3, 0.35),
                                             parent=self.view.scene)
        #: the ellipsoid segments drawn (for tests), empty when hidden
        self.shown_ellipsoids = np.zeros((0, 3))
        self.ghosts.order = 1
        self.bones.order = 2
        self.joints.order = 3
        self._bone_rgba = np.repeat(
            np.concatenate([H36M17.bone_colours(), np.ones((16, 1))], axis=1), 2, axis=0
        ).astype(np.float32)
        self._joint_rgba = np.concatenate(
            [H36M17.joint_colours(), np.ones((H36M17.num_joints, 1))], axis=1).astype(np.float32)
        #: what is drawn, for tests: solid bone segments, ghost segments, ghost texts
        self.shown_bones = np.zeros((0, 3))
        self.shown_ghosts = np.zeros((0, 3))
        self.shown_labels: list[str] = []
        self._solid: np.ndarray | None = None  # the solid pose as drawn (17, 3)
        self._ghost_poses: list[np.ndarray] = []  # the ghosts as drawn
        #: height of the ground grid (display frame, m): under the lowest point drawn
        self.ground = -1.0
        #: ghost tags painted over the scene: (text, 3D anchor in the display frame)
        self.tags: list[tuple[str, np.ndarray]] = []
        self._tag_font = QFont()
        self._tag_font.setPointSizeF(7.5)
        self._clear()
        self._shown_component: int | None = None  # the component drawn last
        ev = state.events
        ev.result.connect(self._on_new_pose)
        ev.person.connect(self._on_new_pose)
        ev.stage.connect(self._on_stage)
        ev.component.connect(self._on_component)
        ev.joint.connect(self._on_joint)

    def reset_view(self) -> None:
        """Camera back to its defaults, looking down on the floor as the photo's camera
        did (the fit's elevation; the default elevation for a level camera)."""
        cam = self.view.camera
        for k, v in CAMERA_DEFAULTS.items():
            setattr(cam, k, v)
        cam.elevation = self.view_elevation()
        cam.center = (0.0, 0.0, 0.0)
        self.canvas.update()

    def fitted_elevation(self) -> float | None:
        """The shown component's fitted camera elevation (degrees), None without a fit."""
        fit, k = self.state.fit, self.state.component
        el = None if fit is None or k is None else getattr(fit.components, "elevation", None)
        if el is None:
            return None if fit is None or k is None else 0.0
        v = float(np.asarray(el)[0, k])
        return math.degrees(v) if math.isfinite(v) else None

    def view_elevation(self) -> float:
        """The reset view's elevation (degrees): the photo camera's (the fitted one) when
        it was tilted, else the default view's slight look down on the floor grid."""
        el = self.fitted_elevation()
        return CAMERA_DEFAULTS["elevation"] if not el else el

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) display-frame points -> (N, 2) widget pixels (logical), as the camera
        shows them now."""
        tr = self.view.scene.node_transform(self.canvas.scene)
        p = np.asarray(tr.map(np.asarray(points, dtype=np.float64).reshape(-1, 3)))
        return p[:, :2] / p[:, 3:4]

    def tag_rects(self) -> list[tuple[str, QRectF]]:
        """Where the ghost tags are painted (widget pixels), laid out without overlaps."""
        return [(t, r) for t, r, _ in self._placed_tags()]

    def pose_rect(self) -> QRectF:
        """The widget-pixel bounding box of every skeleton drawn (solid and ghosts)."""
        pts = [p for p in (self._solid, *self._ghost_poses) if p is not None]
        if not pts:
            return QRectF()
        xy = self.project(np.concatenate(pts))
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        return QRectF(float(x0), float(y0), float(x1 - x0), float(y1 - y0))

    def _placed_tags(self) -> list[tuple[str, QRectF, np.ndarray]]:
        """Each ghost's tag beside the poses (right of them, else left), at the height of
        that ghost's head, kept apart; a hairline joins it to the head."""
        if not self.tags:
            return []
        fm = QFontMetricsF(self._tag_font)
        heads = self.project(np.array([a for _, a in self.tags]))
        sizes = np.array([(fm.horizontalAdvance(t) + 4.0, fm.height()) for t, _ in self.tags])
        bounds = QRectF(self.scene_view.rect())
        poses = self.pose_rect()
        margin = 8.0
        if poses.right() + margin + sizes[:, 0].max() <= bounds.right():
            x = np.full(len(heads), poses.right() + margin - 4.0)  # layout adds 4 px
        else:
            x = poses.left() - margin - 4.0 - sizes[:, 0]
        anchors = np.stack([x, heads[:, 1] + sizes[:, 1] / 2 + 4.0], axis=1)  # centred
        rects = layout_tags(anchors, sizes, bounds)
        return [(t, r, a) for (t, _), r, a in zip(self.tags, rects, heads, strict=True)]

    def paint_tags(self, painter: QPainter) -> None:
        """Paint the ghost tags (and a hairline to the head they name when moved away)."""
        placed = self._placed_tags()
        if not placed:
            return
        painter.setFont(self._tag_font)
        for text, rect, (ax, ay) in placed:
            if not rect.adjusted(-12, -12, 12, 12).contains(QPointF(ax, ay)):
                near = rect.left() if ax < rect.left() else rect.right()
                painter.setPen(QPen(QColor(200, 200, 200, 110), 1))
                painter.drawLine(QPointF(ax, ay), QPointF(near, rect.center().y()))
            painter.setPen(QColor(220, 220, 220, 220))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)

    def _on_cov_toggled(self, _on: bool) -> None:
        self._draw_ellipsoids()
        self.canvas.update()

    def _draw_ellipsoids(self) -> None:
        """The solid component's joint ellipsoids when the toggle is on and the fit has
        covariances (``components.joint_cov``)."""
        fit, k = self.state.fit, self.state.component
        jc = None if fit is None else getattr(fit.components, "joint_cov", None)
        self.cov_check.setEnabled(jc is not None or fit is None)
        if jc is None:
            self.cov_check.setToolTip("this result carries no joint covariances")
        if not self.cov_check.isChecked() or jc is None or k is None or self._solid is None:
            self.ellipsoids.visible = False
            self.shown_ellipsoids = np.zeros((0, 3))
            self._place_ground()
            return
        cov = np.asarray(jc[0, k], dtype=np.float64)
        if not np.isfinite(cov).all():
            self.ellipsoids.visible = False
            self.shown_ellipsoids = np.zeros((0, 3))
            self._place_ground()
            return
        dof = getattr(fit.components, "joint_cov_dof", None)
        r2 = _CHI2_3_90 if dof is None else float(
            ellipsoid_d2(ELLIPSOID_LEVEL, float(np.asarray(dof)[0, k])))
        seg = ellipsoid_segments(self._solid, cov, chi2=r2)
        self.ellipsoids.set_data(pos=seg, connect="segments")
        self.ellipsoids.visible = True
        self.shown_ellipsoids = seg
        self._place_ground()

    def _place_ground(self) -> None:
        """The ground grid just under the lowest point drawn (every skeleton's feet, and the
        ellipsoids when shown), centred under the solid pose's feet."""
        pts = [p for p in (self._solid, *self._ghost_poses) if p is not None]
        if self.ellipsoids.visible and len(self.shown_ellipsoids):
            pts.append(self.shown_ellipsoids)
        if not pts:
            return
        allp = np.concatenate(pts)
        self.ground = float(allp[:, 2].min()) - 0.02
        feet = self._solid[[H36M17.index(n) for n in ("right_ankle", "left_ankle")]] \
            if self._solid is not None else allp
        cx, cy = (float(v) for v in feet[:, :2].mean(axis=0))
        half = max(1.0, float(np.abs(allp[:, :2] - [cx, cy]).max()) + 0.25)
        self.grid.set_data(pos=grid_lines(self.ground, half=half, centre=(cx, cy)))

    def _clear(self) -> None:
        for v in (self.bones, self.ghosts, self.joints, self.selected, self.ellipsoids):
            v.visible = False
        self.shown_ellipsoids = np.zeros((0, 3))
        self.shown_bones = np.zeros((0, 3))
        self.shown_ghosts = np.zeros((0, 3))
        self.shown_labels = []
        self.tags = []
        self._solid = None
        self._ghost_poses = []

    # ---- state -> view: the scene redrawn when the shown fit, component or joint changes
    def _on_new_pose(self, _value: object) -> None:
        """A new result or person: drawn from the default azimuth, looking as the camera
        did."""
        self._draw()
        self.view.camera.elevation = self.view_elevation()
        self.view.camera.azimuth = CAMERA_DEFAULTS["azimuth"]
        self.canvas.update()

    def _on_stage(self, _stage: int) -> None:
        """Another stage: the camera looks as the fit did when the shown component changed
        with it (the user follows each stage's best)."""
        before = self._shown_component
        self._draw()
        if self.state.component != before:
            self.view.camera.elevation = self.view_elevation()
        self.canvas.update()

    def _on_component(self, _component: object) -> None:
        self._draw()
        self.view.camera.elevation = self.view_elevation()
        self.canvas.update()

    def _on_joint(self, _joint: object) -> None:
        self._draw_selected()  # only the ring moves
        self.canvas.update()

    def _draw(self) -> None:
        fit, k = self.state.fit, self.state.component
        self._shown_component = k
        if fit is None or k is None:
            self._clear()
            s = self.state.stage_result
            self.summary.setText("" if s is None else "this stage was not lifted "
                                 "(too few visible joints)")
            self.note.setText("")
            self.note.setVisible(False)
            return
        comps = np.asarray(fit.components.pose_3d[0], dtype=np.float64)  # (K, 17, 3)
        scores = np.asarray(fit.components.score[0], dtype=np.float64)
        best = self.state.best_component
        n = comps.shape[0]
        centred = []
        far = []
        for c in range(n):
            pose, centroid = centred_pose(comps[c])
            centred.append(pose)
            if abs(centroid).max() > FAR_AWAY_M:
                far.append((c, centroid))
        centred = np.stack(centred)

        seg = segments(centred[k]).astype(np.float32)
        self.bones.set_data(pos=seg, color=self._bone_rgba, connect="segments")
        self.bones.visible = True
        self.joints.set_data(centred[k].astype(np.float32), face_color=self._joint_rgba,
                             edge_width=0, size=9)
        self.joints.visible = True
        self.shown_bones = seg

        others = [c for c in range(n) if c != k]
        if others:
            gseg = np.concatenate([segments(centred[c]) for c in others]).astype(np.float32)
            grgba = np.tile(self._bone_rgba, (len(others), 1))
            grgba[:, 3] = 0.22
            self.ghosts.set_data(pos=gseg, color=grgba, connect="segments")
            self.ghosts.visible = True
            # a short tag at each ghost's head, painted over the scene without overlaps
            # (paint_tags); the scores go in the legend below
            head = H36M17.index("head")
            self.tags = [(f"#{c + 1}", centred[c][head]) for c in others]
            self._ghost_poses = [centred[c] for c in others]
            self.shown_ghosts = gseg
            self.shown_labels = [f"#{c + 1} score {scores[c]:.4g}"
                                 + (" (best)" if c == best else "") for c in others]
        else:
            self.ghosts.visible = False
            self.shown_ghosts = np.zeros((0, 3))
            self.shown_labels = []
            self.tags = []
            self._ghost_poses = []

        self._solid = centred[k]
        self._draw_selected()
        self._draw_ellipsoids()

        tag = " (best)" if k == best else ""
        ghosts = "; ghosts: " + ", ".join(self.shown_labels) if self.shown_labels else ""
        el = self.fitted_elevation()
        model = getattr(self.state.result, "model", None) or {}
        if el is None:
            camera = ""
        elif model.get("elevation_search") is False:  # the fit assumed it: say so
            camera = "level camera assumed (Run > Search camera elevation); "
        else:
            camera = f"camera elevation {el:.0f}\N{DEGREE SIGN}; "
        self.summary.setText(f"{camera}solid: #{k + 1}{tag}, score {scores[k]:.4g}{ghosts} "
                             "(lower is better; each pose centred for display)")
        note = ""
        if far:
            parts = [f"#{c + 1} is {np.linalg.norm(cen):.1f} m away" for c, cen in far]
            note = (", ".join(parts) + " in the model's output (release-exact mode: the "
                    "release's capped refit): centred here, exports keep the real values")
        self.note.setText(note)
        self.note.setVisible(bool(note))

    def _draw_selected(self) -> None:
        """The ring on the selected joint of the solid pose."""
        h36 = _cpm_joint_to_h36m(self.state.joint)
        if h36 is None or self._solid is None:
            self.selected.visible = False
            return
        self.selected.set_data(self._solid[h36:h36 + 1].astype(np.float32),
                               face_color=(0, 0, 0, 0), edge_color=(1, 1, 0, 1),
                               edge_width=2, size=20)
        self.selected.visible = True

    def render_image(self) -> np.ndarray:
        """The panel's picture as shown, tags included: (H, W, 4) uint8 RGBA at device
        pixels (needs a real display)."""
        if not can_render():
            raise RuntimeError("the 3D view can only be rendered on a real display "
                               "(Qt platform is 'offscreen')")
        self.scene_view.dirty = True  # e.g. the camera was set directly
        img = QImage(self.scene_view.current_frame())
        painter = QPainter(img)
        self.paint_tags(painter)
        painter.end()
        img = img.convertToFormat(QImage.Format.Format_RGBA8888)
        w, h = img.width(), img.height()
        return np.array(img.constBits(), dtype=np.uint8).reshape(h, img.bytesPerLine())[
            :, :4 * w].reshape(h, w, 4).copy()


def _cpm_joint_to_h36m(j: int | None) -> int | None:
    """The H36M-17 joint that CPM-14 joint ``j`` is observed as (None for no joint)."""
    if j is None or not 0 <= j < len(CPM_TO_H36M):
        return None
    return int(CPM_TO_H36M[j])

