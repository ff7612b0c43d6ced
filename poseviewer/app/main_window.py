"""The main window: image panel (centre), belief maps and 3D view (docks), controls
(toolbar), menus, status bar with progress, timings and cancel; settings remembered."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QImage, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QToolBar,
    QWidget,
)

from poseviewer.app.controls import ControlsBar
from poseviewer.app.image_view import ImagePanel
from poseviewer.app.maps_view import BeliefMapPanel
from poseviewer.app.view3d import Pose3DPanel
from poseviewer.app.worker import ErrorKind, RunSettings, WorkerController
from poseviewer.atomic import atomic_write_with
from poseviewer.export.registry import EXPORTERS, ExportOptions
from poseviewer.imageio import IMAGE_EXTENSIONS
from poseviewer.selection import MAP_KIND_LABELS, MAP_KINDS, Selection

IMAGE_FILTER = ("Images (" + " ".join(f"*{s}" for s in sorted(IMAGE_EXTENSIONS))
                + ");;All files (*)")
MAX_RECENT = 10

#: Export formats: key -> (menu label, file filter, default suffix), from the registry.
EXPORT_FORMATS: dict[str, tuple[str, str, str]] = {
    key: (e.label, e.file_filter, e.suffix) for key, e in EXPORTERS.items()}


def default_estimator_factory() -> Any:
    """The bundled default model (raises a clear error while it is missing)."""
    from poseviewer import Estimator

    return Estimator.default()


def write_qimage_atomic(image: QImage, path: str | os.PathLike[str]) -> Path:
    """Save ``image`` as PNG atomically (``poseviewer.atomic``: temp file + os.replace)."""
    buf = QBuffer()
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    if image.isNull() or not image.save(buf, "PNG"):
        raise ValueError(f"could not encode the picture for {path} as PNG (empty picture?)")
    data = bytes(buf.data())
    return atomic_write_with(path, lambda fh: fh.write(data))


def rgba_to_qimage(rgba: np.ndarray) -> QImage:
    """(H, W, 4) uint8 array -> a QImage that owns a copy of the data."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    h, w = rgba.shape[:2]
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()


class MainWindow(QMainWindow):
    """The poseviewer window. ``estimator_factory`` is called (once, in the worker thread)
    to build the estimator (default: the bundled model); ``settings`` defaults to the
    user's QSettings; ``file_functions`` maps 'lift' / 'load' to the worker-side file jobs
    (called with the path, the image on screen and the Run menu's ``RunSettings``;
    default: ``poseviewer.app.loaders``)."""

    def __init__(
        self,
        estimator_factory: Callable[[], Any] | None = None,
        settings: QSettings | None = None,
        file_functions: dict[str, Callable[[Any, Any, Any], Any]] | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("poseviewer")
        self.setObjectName("poseviewer_main")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings()
        self.state = Selection()
        """What every panel shows and follows (its ``events``: one signal per field)."""
        self.image_panel = ImagePanel(self.state)
        self.maps_panel = BeliefMapPanel(self.state)
        self.view3d = Pose3DPanel(self.state)
        self.controls = ControlsBar(self.state)
        self.setCentralWidget(self.image_panel)
        self.maps_dock = self._dock("Belief maps", "maps_dock", self.maps_panel,
                                    Qt.DockWidgetArea.RightDockWidgetArea)
        self.view3d_dock = self._dock("3D pose", "view3d_dock", self.view3d,
                                      Qt.DockWidgetArea.RightDockWidgetArea)
        tb = QToolBar("Controls")
        tb.setObjectName("controls_toolbar")
        tb.addWidget(self.controls)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)

        if estimator_factory is None:
            estimator_factory = default_estimator_factory
        if file_functions is None:
            from poseviewer.app.loaders import FileJobs

            file_functions = FileJobs().functions()
        self.worker = WorkerController(estimator_factory, file_functions, parent=self)
        """The one worker: photos, files and the frames of videos and cameras."""
        self.worker.settings = RunSettings(flip_test=None, elevation_search=True)
        self.worker.progress.connect(self.on_progress)
        self.worker.succeeded.connect(self.on_succeeded)
        self.worker.failed.connect(self.on_failed)
        self.worker.cancelled.connect(self.on_cancelled)
        self.worker.busy_changed.connect(self.on_busy_changed)
        self.worker.image_loaded.connect(self.on_image_loaded)

        # status bar: message, progress, timings, cancel
        sb = self.statusBar()
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("progress")
        self.progress_bar.setMaximumWidth(160)
        self.progress_bar.setFormat("stage %v/%m")
        self.progress_bar.hide()
        self.timing_label = QLabel("")
        self.timing_label.setObjectName("timings")
        self.timing_label.setMinimumWidth(240)
        self.timing_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancel_button")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        sb.addPermanentWidget(self.timing_label)
        sb.addPermanentWidget(self.progress_bar)
        sb.addPermanentWidget(self.cancel_button)

        self.image_path: str | None = None
        self._rerun_path: str | None = None
        self._opening: str | None = None  # a photo file being opened, not yet read
        self._shut_down = False
        self.last_error: tuple[ErrorKind, str] | None = None
        self._t_submit = 0.0
        self.first_result_seconds: float | None = None
        self._build_menus()
        from poseviewer.app.video import install_video

        self.video_panel = install_video(self)  # timeline, video, camera
        self.image_panel.boxes_edited.connect(self.on_boxes_edited)
        self._restore_settings()
        app = QApplication.instance()
        if app is not None:  # quitting without closing the window still stops the worker
            app.aboutToQuit.connect(self._on_about_to_quit)

    # ---- construction ----------------------------------------------------------------------
    def _dock(self, title: str, name: str, widget: QWidget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(name)
        d.setWidget(widget)
        self.addDockWidget(area, d)
        return d

    def _action(self, text: str, slot, shortcut=None, name: str | None = None) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        a.triggered.connect(slot)
        if name:
            a.setObjectName(name)
        self.addAction(a)
        return a

    def _build_menus(self) -> None:
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        fm.setObjectName("file_menu")
        self.file_menu = fm
        fm.addAction(self._action("&Open image...", self.open_dialog, QKeySequence.StandardKey.Open,
                                  "action_open"))
        self.recent_menu = fm.addMenu("Open &recent")
        fm.addAction(self._action("Open saved &result (JSON/NPZ)...", self.open_result_dialog,
                                  "Ctrl+Shift+O", "action_open_result"))
        fm.addAction(self._action("&Import 2D joints and lift...", self.import_dialog,
                                  "Ctrl+I", "action_import"))
        fm.addSeparator()
        em = fm.addMenu("&Export")
        self.export_actions: dict[str, QAction] = {}
        for key, (label, _, _) in EXPORT_FORMATS.items():
            a = self._action(label, self._export_slot(key), name=f"action_export_{key}")
            em.addAction(a)
            self.export_actions[key] = a
        sm = fm.addMenu("&Screenshot")
        for key, label in (("window", "Window"), ("image", "Image panel"),
                           ("maps", "Belief-map panel"), ("3d", "3D panel")):
            sm.addAction(self._action(f"{label} as PNG...", self._screenshot_slot(key),
                                      name=f"action_shot_{key}"))
        fm.addSeparator()
        fm.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))

        vm = mb.addMenu("&View")
        for kind in MAP_KINDS:
            vm.addAction(self._action(f"{MAP_KIND_LABELS[kind]} maps", self._kind_slot(kind),
                                      name=f"action_maps_{kind}"))
        vm.addSeparator()
        vm.addAction(self._action("Reset 3D view", self.view3d.reset_view, "R",
                                  "action_reset_view"))
        vm.addAction(self.maps_dock.toggleViewAction())
        vm.addAction(self.view3d_dock.toggleViewAction())

        rm = mb.addMenu("&Run")
        self.action_next_stage = self._action("Next stage", self.next_stage, Qt.Key.Key_Right)
        self.action_prev_stage = self._action("Previous stage", self.prev_stage,
                                              Qt.Key.Key_Left)
        self.action_next_comp = self._action("Next component", self.next_component,
                                             Qt.Key.Key_Down)
        self.action_prev_comp = self._action("Previous component", self.prev_component,
                                             Qt.Key.Key_Up)
        for a in (self.action_prev_stage, self.action_next_stage, self.action_prev_comp,
                  self.action_next_comp):
            rm.addAction(a)
        rm.addSeparator()
        self.action_flip_test = QAction("Mirror pass (more accurate, about 2x the network's "
                                        "time)", self)
        self.action_flip_test.setObjectName("action_flip_test")
        self.action_flip_test.setCheckable(True)
        self.action_flip_test.setToolTip(
            "Every stage also runs on the mirrored crop and averages the two (the default "
            "network's setting). Changing it re-runs the current image.")
        self.action_flip_test.toggled.connect(self.set_flip_test)
        rm.addAction(self.action_flip_test)
        self.action_elevation = QAction("Search camera elevation (photos from above or "
                                        "below)", self)
        self.action_elevation.setObjectName("action_elevation_search")
        self.action_elevation.setCheckable(True)
        self.action_elevation.setToolTip(
            "The 3D fit also finds how far the camera looks down or up (shown in the 3D "
            "view); on by default, off fits the release's level camera (yaw only). "
            "Changing it re-runs the current image; imported 2D joints use it too.")
        self.action_elevation.setChecked(bool(self.elevation_search))
        self.action_elevation.toggled.connect(self.set_elevation_search)
        rm.addAction(self.action_elevation)
        self.action_first_stage = QAction("First stage only (faster, e.g. for video)", self)
        self.action_first_stage.setObjectName("action_first_stage")
        self.action_first_stage.setCheckable(True)
        self.action_first_stage.setToolTip(
            "Stop the 2D network after its first stage: the refinement stages, their "
            "fusion and lifting are skipped (about 0.4 PCK points less; see docs/video.md). "
            "Changing it re-runs the current image; a video's run takes it at its start.")
        self.action_first_stage.toggled.connect(self.set_first_stage_only)
        rm.addAction(self.action_first_stage)
        rm.addAction(self._action("Re-run on this image", self.rerun, "F5", "action_rerun"))
        rm.addAction(self._action("Cancel", self.cancel, Qt.Key.Key_Escape, "action_cancel"))
        self._rebuild_recent_menu()

    def _export_slot(self, key: str):
        def slot() -> None:
            self.export_dialog(key)
        return slot

    def _screenshot_slot(self, key: str):
        def slot() -> None:
            self.screenshot_dialog(key)
        return slot

    def _kind_slot(self, kind: str):
        def slot() -> None:
            self.state.set_map_kind(kind)
        return slot

    # ---- keyboard -----------------------------------------------------------------------
    def next_stage(self) -> None:
        """Right arrow."""
        self.state.step_stage(+1)

    def prev_stage(self) -> None:
        """Left arrow."""
        self.state.step_stage(-1)

    def next_component(self) -> None:
        """Down arrow: next component in the list."""
        self.state.step_component(+1)

    def prev_component(self) -> None:
        """Up arrow."""
        self.state.step_component(-1)

    # ---- opening ----------------------------------------------------------------------------
    def last_folder(self) -> str:
        """Folder of the last opened/saved file (home when none)."""
        return str(self.settings.value("last_folder", str(Path.home())))

    def _remember_folder(self, path: str | Path) -> None:
        self.settings.setValue("last_folder", str(Path(path).resolve().parent))

    def open_dialog(self) -> None:
        """File > Open."""
        path, _ = QFileDialog.getOpenFileName(self, "Open image", self.last_folder(),
                                              IMAGE_FILTER)
        if path:
            self.open_image(path)

    def open_image(self, path: str | os.PathLike[str], boxes: np.ndarray | None = None) -> int:
        """Run the estimator on ``path`` in the worker (cancelling a running one). The
        window takes the file as its current one (title, recent files, export names) only
        once the photo has been read: a file that cannot be opened changes nothing but
        shows the message."""
        path = str(path)
        from poseviewer.video.source import is_video_path

        panel = getattr(self, "video_panel", None)
        if panel is not None and is_video_path(path) and boxes is None:  # a video: timeline
            self._remember_folder(path)
            self.setWindowTitle(f"poseviewer - {Path(path).name}")
            panel.open_video(path)
            return -1
        rid = self._submit("estimate", image=path, boxes=boxes,
                           message=f"Analysing {Path(path).name}...")
        self._opening = path if rid >= 0 else None
        return rid

    def _take_opened_file(self) -> None:
        """The photo being opened was read: make it the window's current file."""
        path, self._opening = self._opening, None
        if path is None:
            return
        self.image_path = path
        self._remember_folder(path)
        self.add_recent(path)
        self.setWindowTitle(f"poseviewer - {Path(path).name}")

    def open_array(self, rgb: np.ndarray, boxes: np.ndarray | None = None) -> int:
        """Run the estimator on an RGB array (no file)."""
        self.image_path = None
        return self._submit("estimate", image=rgb, boxes=boxes, message="Analysing image...")

    def _submit(self, kind: str, message: str, rerun_of: str | None = None,
                **kwargs: Any) -> int:
        if self._shut_down:  # closing: keyboard shortcuts may still fire
            return -1
        self._rerun_path = rerun_of
        self._opening = None
        self._t_submit = time.perf_counter()
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        self.statusBar().showMessage(message)
        return self.worker.submit(kind, **kwargs)

    @property
    def flip_test(self) -> bool | None:
        """The network's mirror pass as the user set it (None: as the weights say); every
        request carries it (``RunSettings``), photos and videos alike."""
        return self.worker.settings.flip_test

    @flip_test.setter
    def flip_test(self, on: bool | None) -> None:
        self.worker.settings = replace(self.worker.settings, flip_test=on)

    @property
    def elevation_search(self) -> bool | None:
        """Whether the 3D fit searches the camera's elevation (Run menu; on by default);
        photos, videos and imported 2D joints alike."""
        return self.worker.settings.elevation_search

    @elevation_search.setter
    def elevation_search(self, on: bool | None) -> None:
        self.worker.settings = replace(self.worker.settings, elevation_search=on)

    @Slot(bool)
    def set_flip_test(self, on: bool) -> None:
        """Turn the network's mirror test-time pass on or off; re-runs the current image."""
        if self.flip_test == bool(on):
            return
        self.flip_test = bool(on)
        self.rerun()

    @property
    def first_stage_only(self) -> bool | None:
        """Whether the 2D network stops after its first stage (Run menu; off by default)."""
        return self.worker.settings.first_stage_only

    @first_stage_only.setter
    def first_stage_only(self, on: bool | None) -> None:
        self.worker.settings = replace(self.worker.settings, first_stage_only=on)

    @Slot(bool)
    def set_first_stage_only(self, on: bool) -> None:
        """Stop the network after its first stage, or run all; re-runs the current image."""
        if bool(self.first_stage_only) == bool(on):
            return
        self.first_stage_only = bool(on)
        self.rerun()

    @Slot(bool)
    def set_elevation_search(self, on: bool) -> None:
        """Turn the 3D fit's search of the camera elevation on or off; re-runs the image."""
        if self.elevation_search == bool(on):
            return
        self.elevation_search = bool(on)
        self.rerun()

    def rerun(self) -> None:
        """Run again on the current image with the current boxes."""
        if self.state.image is not None:
            self.on_boxes_edited(self.image_panel.current_boxes())

    @Slot(object)
    def on_boxes_edited(self, boxes: np.ndarray) -> None:
        """Re-run the current image with user boxes (drawn or adjusted)."""
        img = self.state.image
        if img is None:
            return
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        res = self.state.result
        if (res is not None and self.image_path is not None
                and tuple(res.image_size) != (img.shape[1], img.shape[0])):
            img = self.image_path  # the shown copy is downscaled: boxes are in file pixels
        self._submit("estimate", image=img, boxes=boxes if len(boxes) else None,
                     message=f"Re-running with {len(boxes)} box(es)...",
                     rerun_of=self.image_path)

    def cancel(self) -> None:
        """Cancel the running request (it stops at the next stage boundary)."""
        if self.worker.busy:
            self.worker.cancel()
            self.statusBar().showMessage("Cancelling...")

    def import_dialog(self) -> None:
        """File > Import 2D joints: lift joints from COCO or our JSON without the CNN."""
        path, _ = QFileDialog.getOpenFileName(
            self, "Import 2D joints", self.last_folder(),
            "Joints JSON (COCO keypoints or poseviewer JSON) (*.json);;All files (*)")
        if path:
            self.import_joints(path)

    def import_joints(self, path: str | os.PathLike[str]) -> int:
        """Lift the 2D joints in ``path`` (COCO keypoints or our JSON) in the worker."""
        self._remember_folder(path)
        return self._submit("lift", joints=str(path), image=self.state.image,
                            message=f"Lifting joints from {Path(path).name}...")

    def open_result_dialog(self) -> None:
        """File > Open saved result."""
        path, _ = QFileDialog.getOpenFileName(
            self, "Open saved result", self.last_folder(),
            "poseviewer results (*.json *.npz);;All files (*)")
        if path:
            self.open_result(path)

    def open_result(self, path: str | os.PathLike[str]) -> int:
        """Show a result saved as our JSON or NPZ (no CNN run)."""
        self._remember_folder(path)
        return self._submit("load", joints=str(path), image=self.state.image,
                            message=f"Reading {Path(path).name}...")

    # ---- recent files -----------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        """Recently opened images, newest first."""
        v = self.settings.value("recent_files", [])
        if isinstance(v, str):
            v = [v]
        return [str(x) for x in (v or [])]

    def add_recent(self, path: str) -> None:
        """Put ``path`` at the top of the recent files."""
        path = str(Path(path).resolve())
        files = [f for f in self.recent_files() if f != path]
        self.settings.setValue("recent_files", [path, *files][:MAX_RECENT])
        self._rebuild_recent_menu()

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        for i, f in enumerate(files):
            a = self.recent_menu.addAction(f"&{(i + 1) % 10} {Path(f).name}")
            a.setToolTip(f)
            a.setData(f)
            a.triggered.connect(self._open_recent)
        self.recent_menu.setEnabled(bool(files))

    def _open_recent(self) -> None:
        a = self.sender()
        if a is not None:
            self.open_image(a.data())

    # ---- drag and drop ----------------------------------------------------------------------
    def dragEnterEvent(self, ev) -> None:  # noqa: N802
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()
        else:
            ev.ignore()

    def dropEvent(self, ev) -> None:  # noqa: N802
        files = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if files:
            ev.acceptProposedAction()
            f = files[0]
            if f.lower().endswith(".json"):
                self.import_joints(f)
            else:
                self.open_image(f)

    # ---- worker answers ---------------------------------------------------------------------
    @Slot(int, int)
    def on_progress(self, stage: int, num: int) -> None:
        """A stage finished in the worker (for every person at once)."""
        self.progress_bar.setRange(0, max(num, 1))
        self.progress_bar.setValue(stage + 1)
        self.statusBar().showMessage(f"Running: stage {stage + 1}/{num}")

    @Slot(object)
    def on_image_loaded(self, rgb: Any) -> None:
        """The photo is read: show it (without overlays) while the CNN runs."""
        self._take_opened_file()
        self.state.set_result(None, rgb)

    @Slot(object, object, float)
    def on_succeeded(self, result: Any, image: Any, seconds: float) -> None:
        """Show a new result."""
        if image is None:
            image = self.state.image
        self._take_opened_file()
        if getattr(result, "image_path", None) is None and self._rerun_path:
            result.image_path = self._rerun_path  # a re-run on the photo of that file
        self.image_path = getattr(result, "image_path", None) or self.image_path
        self.last_error = None
        flip = (getattr(result, "model", None) or {}).get("flip_test")
        if flip is not None:  # the network's setting as it ran: the menu follows
            self.flip_test = bool(flip)
            self.action_flip_test.blockSignals(True)
            self.action_flip_test.setChecked(bool(flip))
            self.action_flip_test.blockSignals(False)
        self.state.set_result(result, image)
        if self.first_result_seconds is None:
            self.first_result_seconds = time.perf_counter() - self._t_submit
        t = {k: v for k, v in (getattr(result, "timings", {}) or {}).items()
             if isinstance(v, (int, float))}

        def fmt(k: str, v: float) -> str:
            return f"{k} {v * 1000:.0f} ms" if v < 1 else f"{k} {v:.2f} s"

        short = [fmt(k, t[k]) for k in ("cnn", "lift", "total") if k in t]
        self.timing_label.setText(", ".join(short) if short else fmt("total", seconds))
        self.timing_label.setToolTip("\n".join(fmt(k, v) for k, v in t.items()))
        msgs = list(getattr(result, "messages", []) or [])
        n = len(result.persons)
        if n == 0:
            self.report_error(ErrorKind.NO_PERSON, "No person was found in this image. "
                              "Draw a box around a person (drag on the photo) to try again.")
            return
        text = f"Done in {seconds:.2f} s: {n} person{'s' if n != 1 else ''}"
        if msgs:
            text += " - " + "; ".join(msgs)
        self.statusBar().showMessage(text)

    @Slot(object, str)
    def on_failed(self, kind: ErrorKind, message: str) -> None:
        """Show a worker error (a file that could not be opened changes nothing)."""
        self._opening = None
        self.report_error(kind, message)

    @Slot()
    def on_cancelled(self) -> None:
        """The running request stopped."""
        self._opening = None
        self.statusBar().showMessage("Cancelled.")

    @Slot(bool)
    def on_busy_changed(self, busy: bool) -> None:
        """Show/hide the progress bar and the cancel button."""
        self.progress_bar.setVisible(busy)
        self.cancel_button.setVisible(busy)

    def report_error(self, kind: ErrorKind | str, message: str) -> None:
        """Status text + a warning box titled by ``kind`` (an :class:`ErrorKind` or its
        value; any other string is a ValueError: a misspelt kind fails loudly)."""
        kind = ErrorKind(kind)
        title = kind.title
        self.last_error = (kind, message)
        self.statusBar().showMessage(f"{title}: {message}")
        QMessageBox.warning(self, title, message)

    # ---- export ------------------------------------------------------------------------------
    def _default_name(self, suffix: str) -> str:
        stem = Path(self.image_path).stem if self.image_path else "pose"
        return str(Path(self.last_folder()) / f"{stem}{suffix}")

    def export_dialog(self, key: str) -> None:
        """File > Export > format."""
        if self.state.result is None:
            self.report_error(ErrorKind.EXPORT, "Nothing to export yet: open an image first.")
            return
        label, filt, suffix = EXPORT_FORMATS[key]
        path, _ = QFileDialog.getSaveFileName(self, f"Export {key.upper()}",
                                              self._default_name(suffix), filt)
        if path:
            self.export(key, path)

    def export(self, key: str, path: str | os.PathLike[str]) -> Path | None:
        """Write the current result as ``key`` to ``path`` (atomic, via the exporters)."""
        if self.state.result is None:
            self.report_error(ErrorKind.EXPORT, "Nothing to export yet: open an image first.")
            return None
        st = self.state
        try:  # BVH: the pose on screen; COCO: the stage on screen; NPZ: with the maps
            opts = ExportOptions(save_maps=True, person=st.person, stage=st.stage,
                                 component=st.component)
            out = EXPORTERS[key].write(st.result, path, opts)
        except Exception as exc:
            self.report_error(ErrorKind.EXPORT, f"{key.upper()} to {path}: {exc}")
            return None
        self._remember_folder(path)
        self.statusBar().showMessage(f"Exported {key.upper()} to {path}")
        return Path(out) if out is not None else Path(path)

    def panel_image(self, key: str) -> QImage:
        """A picture of one panel ('window', 'image', 'maps', '3d')."""
        if key == "3d":
            return rgba_to_qimage(self.view3d.render_image())
        # the 3D panel is a plain widget showing its offscreen render: a grab includes it
        widget = {"window": self, "image": self.image_panel, "maps": self.maps_panel}[key]
        return widget.grab().toImage()

    def screenshot_dialog(self, key: str) -> None:
        """File > Screenshot > panel."""
        path, _ = QFileDialog.getSaveFileName(
            self, "Save screenshot", self._default_name(f"-{key}.png"), "PNG (*.png)")
        if path:
            self.save_screenshot(key, path)

    def save_screenshot(self, key: str, path: str | os.PathLike[str]) -> Path | None:
        """Save a PNG of one panel (atomic write)."""
        try:
            out = write_qimage_atomic(self.panel_image(key), path)
        except Exception as exc:
            self.report_error(ErrorKind.SCREENSHOT, str(exc))
            return None
        self._remember_folder(path)
        self.statusBar().showMessage(f"Saved {out}")
        return out

    # ---- settings / close -----------------------------------------------------------------
    def _restore_settings(self) -> None:
        s = self.settings
        geo = s.value("geometry")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        else:
            self.resize(1400, 860)
        st = s.value("window_state")
        if isinstance(st, QByteArray) and not st.isEmpty():
            self.restoreState(st)
        kind = str(s.value("map_kind", "fused"))
        if kind in MAP_KINDS:
            self.state.set_map_kind(kind)

    def save_settings(self) -> None:
        """Write geometry, dock layout, map kind (recent files and folder are live)."""
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("window_state", self.saveState())
        s.setValue("map_kind", self.state.map_kind)
        s.sync()

    #: How long a close waits for the running stage to end before the window stays open
    #: and retries (ms); retries wait ``close_retry_ms`` each, with the event loop running.
    close_wait_ms = 1500
    close_retry_ms = 100

    def shutdown(self, timeout_ms: int | None = None) -> bool:
        """Save the settings (once), cancel the running request and stop the worker; wait
        up to ``timeout_ms`` (None: until it ends). True when the worker thread finished."""
        if not self._shut_down:
            self._shut_down = True
            self.save_settings()
            for w in (self.menuBar(), self.image_panel, self.maps_dock, self.view3d_dock,
                      self.controls, self.cancel_button):
                w.setEnabled(False)  # no new work while closing
        self.video_panel.stop()
        self.worker.stop()
        if not self.worker.running:
            return True
        self.statusBar().showMessage("Waiting for the model to stop (it stops after the "
                                     "running stage)...")
        self.statusBar().repaint()  # visible before the blocking wait
        return self.worker.shutdown(timeout_ms)

    @Slot()
    def _on_about_to_quit(self) -> None:
        self.shutdown(None)  # the application is ending: the thread must be finished

    def closeEvent(self, ev) -> None:  # noqa: N802
        first = not self._shut_down
        if self.shutdown(self.close_wait_ms if first else self.close_retry_ms):
            super().closeEvent(ev)
            return
        # never destroy a running QThread (Qt aborts): stay open and try again shortly
        ev.ignore()
        QTimer.singleShot(self.close_retry_ms, self, self.close)

    def show_message_later(self, text: str) -> None:
        """Status message once the event loop runs (used at start-up)."""
        QTimer.singleShot(0, self, lambda: self.statusBar().showMessage(text))

