"""Video and camera in the viewer: a timeline dock (slider, frame number and time,
play/pause, one-frame steps with ',' and '.'), frames estimated in order in a worker
thread with progress, cancel and a cache (the frame on screen estimated first, as a
preview, when the ordered pass has not reached it), and a live camera mode that estimates
the newest frame only, drops frames while busy and shows the rate achieved.

``install_video(window, estimator_factory)`` adds the File menu entries, the dock and the
shortcuts to a :class:`~poseviewer.app.main_window.MainWindow`; the stage and component
controls work on any frame as on a photo (the shared selection's ``frame``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPushButton,
    QSlider,
    QWidget,
)

from poseviewer.errors import Cancelled, CancelToken
from poseviewer.result import EstimateResult, ResultSequence

VIDEO_FILTER = ("Videos (*.mp4 *.m4v *.avi *.mov *.mkv *.webm *.mpg *.mpeg *.wmv);;"
                "All files (*)")
#: Decoded frames kept in memory at most (bytes); longer videos are cut with a message.
MAX_CACHE_BYTES = 1_500_000_000
NOT_ESTIMATED = "frame not estimated yet"


@dataclass
class VideoJob:
    """One video or camera run, shared between the GUI and the worker thread."""

    id: int
    source: Any
    """A path (file mode) or a callable returning a live ``FrameSource`` (camera mode)."""
    live: bool = False
    token: CancelToken = field(default_factory=CancelToken)
    frames: list[np.ndarray] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    wanted: int | None = None
    """The frame on screen (set by the GUI): estimated first when the pass is behind."""
    fps: float | None = None
    notes: list[str] = field(default_factory=list)
    """Notes from reading (the file ended early, too many frames for the memory cap)."""


class VideoWorker(QObject):
    """Lives in the video thread; ``run`` is invoked by a queued signal."""

    decoded = Signal(int, int)
    """job id, frames decoded (all of them: decoding ends before estimating starts)."""
    frame_done = Signal(int, int, object, bool)
    """job id, position, EstimateResult, preview (estimated alone, no ids/smoothing)."""
    progress = Signal(int, int, int)
    """job id, frames estimated in order, total."""
    live_frame = Signal(int, object, object, object)
    """job id, RGB frame, EstimateResult, LiveStats."""
    failed = Signal(int, str)
    finished = Signal(int, bool)
    """job id, cancelled."""

    def __init__(self, estimator_factory: Callable[[], Any]) -> None:
        super().__init__()
        self._factory = estimator_factory
        self._estimator: Any = None

    def estimator(self) -> Any:
        if self._estimator is None:
            self._estimator = self._factory()
        return self._estimator

    @Slot(object)
    def run(self, job: VideoJob) -> None:
        try:
            if job.live:
                self._camera(job)
            else:
                self._file(job)
        except Cancelled:
            self.finished.emit(job.id, True)
        except Exception as exc:  # every error becomes a message, never a crash
            self.failed.emit(job.id, str(exc) or type(exc).__name__)
        else:
            self.finished.emit(job.id, job.token.cancelled)

    def _file(self, job: VideoJob) -> None:
        from poseviewer.video import Frame, VideoAnalyzer, VideoFileSource, iter_frames

        with VideoFileSource(job.source) as src:
            job.fps = src.fps
            w, h = src.size
            cap = max(1, MAX_CACHE_BYTES // max(1, w * h * 3))
            for frame in iter_frames(src, max_frames=cap):
                if job.token.cancelled:
                    raise Cancelled("cancelled")
                job.frames.append(frame.rgb)
                job.times.append(frame.time)
                job.indices.append(frame.index)
            if len(job.frames) == cap and src.read() is not None:
                job.notes.append(f"only the first {cap} frames fit in the viewer's memory "
                                 "('poseviewer estimate' reads any length)")
            job.notes += src.messages
        self.decoded.emit(job.id, len(job.frames))
        est = self.estimator()
        analyzer = VideoAnalyzer(est)
        previewed: set[int] = set()
        n = len(job.frames)
        for i in range(n):
            w = job.wanted
            if w is not None and i < w < n and w not in previewed:
                previewed.add(w)
                res = est.estimate(job.frames[w], cancel=job.token)
                res.messages.append("preview: estimated alone (ids and smoothing follow "
                                    "when the ordered pass gets here)")
                self.frame_done.emit(job.id, w, res, True)
            res = analyzer.step(Frame(job.indices[i], job.times[i], job.frames[i]),
                                cancel=job.token)
            self.frame_done.emit(job.id, i, res, False)
            self.progress.emit(job.id, i + 1, n)

    def _camera(self, job: VideoJob) -> None:
        from poseviewer.video import LatestFrame, VideoAnalyzer, run_live

        src = job.source()
        grabber = LatestFrame(src)
        try:
            run_live(VideoAnalyzer(self.estimator()), grabber,
                     lambda frame, res, stats: self.live_frame.emit(job.id, frame.rgb, res,
                                                                   stats),
                     cancel=job.token)
        finally:
            grabber.stop()


def _placeholder(size: tuple[int, int]) -> EstimateResult:
    return EstimateResult(image_size=size, persons=[], timings={}, model={}, device="",
                          messages=[NOT_ESTIMATED])


class VideoPanel(QWidget):
    """The timeline and the video/camera runs of one window."""

    requested = Signal(object)

    def __init__(self, window: Any, estimator_factory: Callable[[], Any]) -> None:
        super().__init__()
        self.setObjectName("video_panel")
        self.window_ = window
        self.state = window.state
        self.job: VideoJob | None = None
        self.sequence: ResultSequence | None = None
        self.stats: Any = None
        self._next_id = 0
        self._thread = QThread()
        self._thread.setObjectName("poseviewer-video")
        self.worker = VideoWorker(estimator_factory)
        self.worker.moveToThread(self._thread)
        self.requested.connect(self.worker.run)
        self.worker.decoded.connect(self._on_decoded)
        self.worker.frame_done.connect(self._on_frame_done)
        self.worker.progress.connect(self._on_progress)
        self.worker.live_frame.connect(self._on_live_frame)
        self.worker.failed.connect(self._on_failed)
        self.worker.finished.connect(self._on_finished)
        self._thread.start()

        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        self.play_button = QPushButton("Play")
        self.play_button.setObjectName("play_button")
        self.play_button.setToolTip("play / pause (Space)")
        self.play_button.clicked.connect(self.toggle_play)
        lay.addWidget(self.play_button)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("frame_slider")
        self.slider.setToolTip("frame (',' and '.' step one frame)")
        self.slider.setRange(0, 0)
        self.slider.valueChanged.connect(self.show_frame)
        lay.addWidget(self.slider, 1)
        self.frame_label = QLabel("no video")
        self.frame_label.setObjectName("frame_label")
        self.frame_label.setMinimumWidth(190)
        lay.addWidget(self.frame_label)
        self.status_label = QLabel("")
        self.status_label.setObjectName("video_status")
        self.status_label.setMinimumWidth(220)
        lay.addWidget(self.status_label)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("video_stop")
        self.stop_button.setToolTip("stop estimating (the frames done stay)")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        lay.addWidget(self.stop_button)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)

    # ---- runs ----------------------------------------------------------------------------
    def _start(self, source: Any, live: bool) -> VideoJob:
        self.stop()
        self.timer.stop()
        self.play_button.setText("Play")
        self._next_id += 1
        self.job = VideoJob(self._next_id, source, live=live)
        self.sequence = None
        self.stats = None
        self.slider.blockSignals(True)
        self.slider.setRange(0, 0)
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.slider.setEnabled(not live)
        self.play_button.setEnabled(not live)
        self.stop_button.setEnabled(True)
        self.status_label.setText("opening camera..." if live else "reading the video...")
        self.frame_label.setText("camera" if live else "")
        self.requested.emit(self.job)
        return self.job

    def open_video(self, path: str) -> VideoJob:
        """Decode ``path`` and estimate its frames in order (file mode)."""
        return self._start(str(path), live=False)

    def open_camera(self, source_factory: Callable[[], Any]) -> VideoJob:
        """Live mode on the source ``source_factory()`` makes (in the worker thread)."""
        return self._start(source_factory, live=True)

    def stop(self) -> None:
        """Cancel the running estimation (frames already estimated stay in the cache)."""
        if self.job is not None:
            self.job.token.cancel()

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        self.stop()
        self._thread.quit()
        return bool(self._thread.wait(timeout_ms))

    def _mine(self, jid: int) -> bool:
        return self.job is not None and jid == self.job.id

    @Slot(int, int)
    def _on_decoded(self, jid: int, n: int) -> None:
        if not self._mine(jid) or not n:
            return
        job = self.job
        h, w = job.frames[0].shape[:2]
        self.sequence = ResultSequence(frames=[_placeholder((w, h)) for _ in range(n)],
                                       times=list(job.times), indices=list(job.indices),
                                       source=str(job.source), fps=job.fps)
        self.state.set_sequence(self.sequence)
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.show_frame(0)
        self.status_label.setText(f"estimating 0/{n}")
        for note in job.notes:
            self.window_.statusBar().showMessage(note)

    @Slot(int, int, object, bool)
    def _on_frame_done(self, jid: int, i: int, result: Any, preview: bool) -> None:
        if not self._mine(jid) or self.sequence is None:
            return
        self.sequence.frames[i] = result
        if i == self.state.frame:
            self.state.set_frame(i, self.job.frames[i])

    @Slot(int, int, int)
    def _on_progress(self, jid: int, done: int, total: int) -> None:
        if self._mine(jid):
            self.status_label.setText(f"estimated {done}/{total}")

    @Slot(int, object, object, object)
    def _on_live_frame(self, jid: int, rgb: Any, result: Any, stats: Any) -> None:
        if not self._mine(jid):
            return
        self.stats = stats
        self.state.set_result(result, rgb)
        self.status_label.setText(f"{stats.rate:.1f} frames/s estimated, "
                                  f"{stats.dropped} dropped")
        self.frame_label.setText(f"camera frame {stats.read}")

    @Slot(int, str)
    def _on_failed(self, jid: int, message: str) -> None:
        if not self._mine(jid):
            return
        self.stop_button.setEnabled(False)
        self.status_label.setText("failed")
        self.window_.report_error("video", message)

    @Slot(int, bool)
    def _on_finished(self, jid: int, cancelled: bool) -> None:
        if not self._mine(jid):
            return
        self.stop_button.setEnabled(False)
        if cancelled:
            self.status_label.setText(self.status_label.text() + " (stopped)")
        elif self.job.live:
            self.status_label.setText(self.status_label.text() + " (camera ended)")

    # ---- the timeline ---------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return 0 if self.sequence is None else len(self.sequence)

    def show_frame(self, i: int) -> None:
        """Show frame ``i`` (from the cache; the worker estimates it first when missing)."""
        if self.sequence is None or self.job is None:
            return
        i = int(np.clip(i, 0, self.num_frames - 1))
        self.job.wanted = i
        if self.slider.value() != i:
            self.slider.blockSignals(True)
            self.slider.setValue(i)
            self.slider.blockSignals(False)
        self.state.set_frame(i, self.job.frames[i])
        t = self.sequence.frame_time(i)
        self.frame_label.setText(f"frame {self.sequence.frame_index(i)}  "
                                 f"({i + 1}/{self.num_frames})  {t:.2f} s")

    def step(self, delta: int) -> None:
        """One frame forwards (+1) or backwards (-1)."""
        if self.sequence is not None:
            self.show_frame(self.state.frame + delta)

    def toggle_play(self) -> None:
        """Play from the frame on screen at the video's rate, or pause."""
        if self.timer.isActive():
            self.timer.stop()
            self.play_button.setText("Play")
            return
        if self.sequence is None:
            return
        fps = self.sequence.fps or 25.0
        self.timer.start(max(1, int(round(1000.0 / fps))))
        self.play_button.setText("Pause")

    def _tick(self) -> None:
        if self.sequence is None or self.state.frame >= self.num_frames - 1:
            self.toggle_play()
            return
        self.step(+1)


def install_video(window: Any, estimator_factory: Callable[[], Any]) -> VideoPanel:
    """Add 'Open video...' and 'Open camera...' to the File menu, the timeline dock and the
    frame shortcuts (',' '.' and Space) to ``window``; returns the panel."""
    panel = VideoPanel(window, estimator_factory)
    dock = QDockWidget("Timeline", window)
    dock.setObjectName("timeline_dock")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    file_menu = window.menuBar().actions()[0].menu()
    first = file_menu.actions()[1] if len(file_menu.actions()) > 1 else None

    def open_video() -> None:
        path, _ = QFileDialog.getOpenFileName(window, "Open video", window.last_folder(),
                                              VIDEO_FILTER)
        if path:
            panel.open_video(path)

    def open_camera() -> None:
        index, ok = QInputDialog.getInt(window, "Open camera", "Camera number:", 0, 0, 63)
        if ok:
            from poseviewer.video import CameraSource

            panel.open_camera(lambda: CameraSource(index))

    for text, slot, name, key in (("Open &video...", open_video, "action_open_video",
                                   "Ctrl+Shift+V"),
                                  ("Open &camera...", open_camera, "action_open_camera",
                                   None)):
        a = QAction(text, window)
        a.setObjectName(name)
        if key:
            a.setShortcut(QKeySequence(key))
        a.triggered.connect(slot)
        file_menu.insertAction(first, a)
    for key, slot in ((".", lambda: panel.step(+1)), (",", lambda: panel.step(-1)),
                      ("Space", panel.toggle_play)):
        sc = QShortcut(QKeySequence(key), window)
        sc.setContext(Qt.ShortcutContext.WindowShortcut)
        sc.activated.connect(slot)
    window.video_panel = panel
    window.timeline_dock = dock
    return panel


__all__ = ["VideoJob", "VideoPanel", "VideoWorker", "install_video"]
