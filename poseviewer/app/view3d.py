"""3D panel (vispy SceneCanvas in Qt, turntable camera): the chosen mixture component's
pose solid (bones coloured left/right, joints), the other components as faint ghosts with
their scores, and a ground grid.

Display frame: x = image right, y = depth away from the camera, z = up, metres. Every
pose is centred on its own joint centroid for display: the lifting's capped-scale quirk can
put a component tens of metres away in depth (exports keep the faithful values); the panel
says so when it happens.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget
from vispy import scene

from poseviewer.app.state import ViewerState
from poseviewer.skeleton import CPM_TO_H36M, H36M17

#: Default camera of the 3D panel (reset view returns here).
CAMERA_DEFAULTS = {"elevation": 12.0, "azimuth": 0.0, "distance": 3.6, "fov": 35.0}
#: A component whose centroid is farther than this (metres) from the origin gets a note.
FAR_AWAY_M = 1.0
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


def grid_lines(z: float, half: float = 1.0, step: float = 0.25) -> np.ndarray:
    """Segment end points of a square ground grid at height ``z``."""
    ticks = np.arange(-half, half + 1e-9, step)
    pts = []
    for t in ticks:
        pts += [(t, -half, z), (t, half, z), (-half, t, z), (half, t, z)]
    return np.array(pts, dtype=np.float32)


class Pose3DPanel(QWidget):
    """Rotatable 3D view of the selected stage's fit."""

    KEYS = frozenset({"result", "person", "stage", "component", "joint"})

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("view3d_panel")
        self.state = state
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.canvas = scene.SceneCanvas(keys=None, show=False, bgcolor=BACKGROUND,
                                        size=(400, 400))
        self.canvas.native.setObjectName("view3d_canvas")
        self.canvas.native.setMinimumSize(200, 200)
        lay.addWidget(self.canvas.native, 1)
        bar = QHBoxLayout()
        self.reset_button = QPushButton("Reset view")
        self.reset_button.setObjectName("view3d_reset")
        self.reset_button.setToolTip("camera back to the front view (R); drag to rotate, "
                                     "wheel to zoom, shift-drag to pan")
        self.reset_button.clicked.connect(self.reset_view)
        bar.addWidget(self.reset_button)
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
        self.ghost_labels = scene.visuals.Text("", color=(0.85, 0.85, 0.85, 0.8),
                                               font_size=7, anchor_x="left",
                                               parent=self.view.scene)
        self.bones = scene.visuals.Line(pos=np.zeros((2, 3), np.float32), connect="segments",
                                        width=5, parent=self.view.scene)
        self.joints = scene.visuals.Markers(parent=self.view.scene)
        self.selected = scene.visuals.Markers(parent=self.view.scene)
        self.ghosts.order = 1
        self.bones.order = 2
        self.joints.order = 3
        self._bone_rgba = np.repeat(
            np.concatenate([H36M17.bone_colours(), np.ones((16, 1))], axis=1), 2, axis=0
        ).astype(np.float32)
        self._joint_rgba = np.concatenate(
            [H36M17.joint_colours(), np.ones((17, 1))], axis=1).astype(np.float32)
        #: what is drawn, for tests: solid bone segments, ghost segments, ghost texts
        self.shown_bones = np.zeros((0, 3))
        self.shown_ghosts = np.zeros((0, 3))
        self.shown_labels: list[str] = []
        self._tags: list[str] = []
        self._clear()
        state.changed.connect(self.on_state_changed)

    def reset_view(self) -> None:
        """Camera back to its defaults."""
        cam = self.view.camera
        for k, v in CAMERA_DEFAULTS.items():
            setattr(cam, k, v)
        cam.center = (0.0, 0.0, 0.0)
        self.canvas.update()

    def _clear(self) -> None:
        for v in (self.bones, self.ghosts, self.joints, self.selected, self.ghost_labels):
            v.visible = False
        self.shown_bones = np.zeros((0, 3))
        self.shown_ghosts = np.zeros((0, 3))
        self.shown_labels = []

    def on_state_changed(self, keys: frozenset) -> None:
        """Redraw the 3D scene when the shown fit, component or joint changes."""
        if not keys & self.KEYS:
            return
        self._draw()
        self.canvas.update()

    def _draw(self) -> None:
        fit, k = self.state.fit, self.state.component
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
        ground = float(centred[:, :, 2].min()) - 0.02
        self.grid.set_data(pos=grid_lines(ground))

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
            # in the scene: a short tag at each ghost's head (re-laying out text with
            # changing digits costs ~20 ms per redraw); the scores go in the legend below
            tags = [f"#{c + 1}" for c in others]
            head = H36M17.index("head")
            pos = np.array([centred[c][head] + (0.06, 0.0, 0.08 + 0.08 * i)
                            for i, c in enumerate(others)], dtype=np.float32)
            if tags != self._tags:
                self.ghost_labels.text = tags
                self._tags = tags
            self.ghost_labels.pos = pos
            self.ghost_labels.visible = True
            self.shown_ghosts = gseg
            self.shown_labels = [f"#{c + 1} score {scores[c]:.4g}"
                                 + (" (best)" if c == best else "") for c in others]
        else:
            self.ghosts.visible = False
            self.ghost_labels.visible = False
            self.shown_ghosts = np.zeros((0, 3))
            self.shown_labels = []

        jt = self.state.joint
        h36 = _cpm_joint_to_h36m(jt)
        if h36 is None:
            self.selected.visible = False
        else:
            self.selected.set_data(centred[k][h36:h36 + 1].astype(np.float32),
                                   face_color=(0, 0, 0, 0), edge_color=(1, 1, 0, 1),
                                   edge_width=2, size=20)
            self.selected.visible = True

        tag = " (best)" if k == best else ""
        ghosts = "; ghosts: " + ", ".join(self.shown_labels) if self.shown_labels else ""
        self.summary.setText(f"solid: #{k + 1}{tag}, score {scores[k]:.4g}{ghosts} "
                             "(lower is better; each pose centred for display)")
        note = ""
        if far:
            parts = [f"#{c + 1} is {np.linalg.norm(cen):.1f} m away" for c, cen in far]
            note = (", ".join(parts) + " in the model's output (capped-scale quirk of the "
                    "3D model): centred here, exports keep the real values")
        self.note.setText(note)
        self.note.setVisible(bool(note))

    def render_image(self) -> np.ndarray:
        """Render the scene offscreen: (H, W, 4) uint8 RGBA (needs a real display)."""
        if not can_render():
            raise RuntimeError("the 3D view can only be rendered on a real display "
                               "(Qt platform is 'offscreen')")
        return self.canvas.render()


def _cpm_joint_to_h36m(j: int | None) -> int | None:
    """The H36M-17 joint that CPM-14 joint ``j`` is observed as (None for no joint)."""
    if j is None or not 0 <= j < len(CPM_TO_H36M):
        return None
    return int(CPM_TO_H36M[j])

