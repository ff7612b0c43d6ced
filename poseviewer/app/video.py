"""Video and camera in the viewer: a timeline dock (slider, frame number and time,
play/pause, one-frame steps with ',' and '.'), frames decoded and estimated in order in a
worker thread with progress and cancel, and a live camera mode that estimates the newest
frame only, drops frames while busy and shows the rate achieved.

The frames are estimated by the window's one worker (``app.worker``: the same estimator,
Run settings and error path as photos); a photo opened while a video is estimated stops
the video's run (the frames done stay on the timeline).

Videos of any length: the decoded frames and the results' belief maps are kept in a cache
with a memory budget (``video/cache_mb`` in the settings, default
:data:`DEFAULT_CACHE_MB`); beyond it the least recently shown frames give up their pixels
and maps (their joints, fits and ids stay). Showing such a frame again decodes it again
and re-estimates it alone for its maps (the ids, smoothed joints and fits of the ordered
pass stay); a frame the pass has not reached yet is estimated alone first, as a preview.
The status bar shows the frame's people, ids and timings, and why a person is not lifted.

``install_video(window)`` adds the File menu entries (after *Open image...*), the dock and
the shortcuts to a :class:`~poseviewer.app.main_window.MainWindow`; the stage and component
controls work on any frame as on a photo (the shared selection's ``frame``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, QTimer, Slot
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

from poseviewer.app.worker import ErrorKind, VideoJob
from poseviewer.result import EstimateResult, ResultSequence
from poseviewer.video.source import VIDEO_EXTENSIONS

VIDEO_FILTER = ("Videos (" + " ".join(f"*{s}" for s in sorted(VIDEO_EXTENSIONS))
                + ");;All files (*)")
#: The memory budget of a video's cache of frames and maps (MB), unless the settings'
#: ``video/cache_mb`` says otherwise.
DEFAULT_CACHE_MB = 1024
NOT_ESTIMATED = "frame not estimated yet"
AGAIN = "re-estimated alone for its maps (ids, smoothed joints and fits from the ordered pass)"


def _maps_bytes(result: EstimateResult) -> int:
    """Bytes held by the belief maps of ``result`` (zero-stride views hold none)."""
    n = 0
    for p in result.persons:
        for s in p.stages:
            for m in (s.cnn_maps, s.fused_maps, s.projected_maps):
                if m is not None and 0 not in m.strides:
                    n += m.nbytes
    return n


def _take_maps(into: EstimateResult, src: EstimateResult) -> bool:
    """Put ``src``'s maps into ``into`` (the same frame estimated again): same people (by
    box) and stages, else nothing is changed and False is returned."""
    if len(into.persons) != len(src.persons):
        return False
    for a, b in zip(into.persons, src.persons, strict=True):
        if len(a.stages) != len(b.stages) or not np.allclose(a.box, b.box, atol=1.0):
            return False
    for a, b in zip(into.persons, src.persons, strict=True):
        for sa, sb in zip(a.stages, b.stages, strict=True):
            sa.cnn_maps, sa.fused_maps, sa.projected_maps = (sb.cnn_maps, sb.fused_maps,
                                                             sb.projected_maps)
    return True


def frame_status(result: EstimateResult, frame_text: str, selection: Any = None) -> str:
    """The status bar's line for a video frame: its people and ids, its timings, notes,
    and why the selected person is not lifted."""
    n = len(result.persons)
    ids = [p.track_id for p in result.persons if p.track_id is not None]
    parts = [f"{frame_text}: {n} person{'s' if n != 1 else ''}"
             + (f" (ids {', '.join(str(i) for i in ids)})" if ids else "")]
    t = {k: v for k, v in (result.timings or {}).items() if isinstance(v, (int, float))}
    if t:
        parts.append(", ".join(f"{k} {1000 * v:.0f} ms" for k, v in t.items()))
    why = None if selection is None else selection.not_lifted_reason
    if why:
        parts.append(why)
    parts += [m for m in result.messages if m != NOT_ESTIMATED or n == 0]
    return " - ".join(parts)


def _placeholder(size: tuple[int, int]) -> EstimateResult:
    return EstimateResult(image_size=size, persons=[], timings={}, model={}, device="",
                          messages=[NOT_ESTIMATED])


class VideoPanel(QWidget):
    """The timeline and the video/camera runs of one window."""

    def __init__(self, window: Any) -> None:
        super().__init__()
        self.setObjectName("video_panel")
        self.window_ = window
        self.state = window.state
        self.worker = window.worker
        """The window's :class:`~poseviewer.app.worker.WorkerController` (one worker)."""
        self.job: VideoJob | None = None
        self.sequence: ResultSequence | None = None
        self.stats: Any = None
        self._next_id = 0
        self.cache_bytes = int(float(window.settings.value("video/cache_mb", DEFAULT_CACHE_MB))
                               * 1e6)
        """The cache's memory budget (bytes) for decoded frames and belief maps."""
        self._lru: dict[int, int] = {}
        """Position -> bytes held, least recently shown first."""
        self._announced = 0
        w = self.worker
        w.decoded.connect(self._on_decoded)
        w.frame_done.connect(self._on_frame_done)
        w.frame_progress.connect(self._on_progress)
        w.live_frame.connect(self._on_live_frame)
        w.video_failed.connect(self._on_failed)
        w.video_finished.connect(self._on_finished)

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
        self.job = VideoJob(self._next_id, source, live=live, settings=self.worker.settings)
        self.sequence = None
        self._lru = {}
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
        self._submit("camera" if live else "video")
        return self.job

    def _submit(self, kind: str) -> None:
        job = self.job
        self.worker.submit(kind, job=job, token=job.token, settings=job.settings)

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

    def _mine(self, jid: int) -> bool:
        return self.job is not None and jid == self.job.id

    @Slot(int, int)
    def _on_decoded(self, jid: int, n: int) -> None:
        if not self._mine(jid):
            return
        self._lru = {}
        self._announced = n
        self.status_label.setText("estimating 0" + (f"/{n}" if n else ""))

    def _grow(self, n: int, size: tuple[int, int]) -> None:
        """Make the timeline ``n`` frames long (placeholders for frames not estimated)."""
        job = self.job
        if self.sequence is None:
            self.sequence = ResultSequence(frames=[], times=[], indices=[],
                                           source=str(job.source), fps=job.fps)
            first = True
        else:
            first = False
        seq = self.sequence
        while len(seq.frames) < n:
            i = len(seq.frames)
            seq.frames.append(_placeholder(size))
            seq.times.append(i / job.fps if job.fps else float(i))
            seq.indices.append(i)
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(seq.frames) - 1)
        self.slider.blockSignals(False)
        if first:
            self.state.set_sequence(seq)
            self.show_frame(0)

    @Slot(int, int, object, object, bool)
    def _on_frame_done(self, jid: int, i: int, result: Any, rgb: Any, alone: bool) -> None:
        if not self._mine(jid):
            return
        job = self.job
        h, w = rgb.shape[:2]
        self._grow(max(i + 1, self.num_frames, self._announced), (w, h))
        seq = self.sequence
        old = seq.frames[i]
        if alone and NOT_ESTIMATED not in old.messages:  # an evicted frame: its maps again
            if _take_maps(old, result):
                if AGAIN not in old.messages:
                    old.messages.append(AGAIN)
            else:  # the frame gave other people this time: show the new result
                result.messages.append("preview: estimated alone (the ordered pass found "
                                       "other people here)")
                seq.frames[i] = result
        elif alone:
            result.messages.append("preview: estimated alone (ids and smoothing follow "
                                   "when the ordered pass gets here)")
            seq.frames[i] = result
        else:
            seq.frames[i] = result
        job.frames[i] = rgb
        job.ready.add(i)
        self._account(i)
        if i == self.state.frame:
            self.state.set_frame(i, rgb)
            self._show_status(i)

    def _account(self, i: int) -> None:
        """Count frame ``i``'s bytes in the cache and evict the least recently shown
        frames (never the one on screen) while over the budget."""
        job, seq = self.job, self.sequence
        self._lru.pop(i, None)
        rgb = job.frames.get(i)
        self._lru[i] = (0 if rgb is None else rgb.nbytes) + _maps_bytes(seq.frames[i])
        from poseviewer.video.pipeline import drop_maps

        while sum(self._lru.values()) > self.cache_bytes and len(self._lru) > 1:
            victim = next((k for k in self._lru if k != self.state.frame), None)
            if victim is None:
                break
            del self._lru[victim]
            job.frames.pop(victim, None)
            job.ready.discard(victim)
            drop_maps(seq.frames[victim])

    @property
    def cached_bytes(self) -> int:
        """Bytes the cache holds now (frames and maps)."""
        return sum(self._lru.values())

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

    @Slot(int, object, str)
    def _on_failed(self, jid: int, kind: ErrorKind, message: str) -> None:
        if not self._mine(jid):
            return
        self.stop_button.setEnabled(False)
        self.status_label.setText("failed")
        self.window_.report_error(kind, message)

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
        """Show frame ``i`` (from the cache; the worker decodes and estimates it alone first
        when it is not there: ahead of the ordered pass, or evicted)."""
        if self.sequence is None or self.job is None:
            return
        i = int(np.clip(i, 0, self.num_frames - 1))
        job = self.job
        job.wanted = i
        if self.slider.value() != i:
            self.slider.blockSignals(True)
            self.slider.setValue(i)
            self.slider.blockSignals(False)
        rgb = job.frames.get(i)
        if i in self._lru:  # most recently shown last
            self._lru[i] = self._lru.pop(i)
        self.state.set_frame(i, rgb)
        if i not in job.ready and not job.live and not job.token.cancelled:
            self._submit("frame")  # served by the pass when it runs, else after it
        t = self.sequence.frame_time(i)
        self.frame_label.setText(f"frame {self.sequence.frame_index(i)}  "
                                 f"({i + 1}/{self.num_frames})  {t:.2f} s")
        self._show_status(i)

    def _show_status(self, i: int) -> None:
        if self.sequence is None:
            return
        text = frame_status(self.sequence[i], f"frame {self.sequence.frame_index(i)}",
                            self.state)
        if i not in self.job.ready:
            text += " - decoding and estimating this frame again..."
        self.window_.statusBar().showMessage(text)

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


def install_video(window: Any) -> VideoPanel:
    """Add 'Open video...' and 'Open camera...' to the File menu (``window.file_menu``,
    after its 'Open image...'), the timeline dock and the frame shortcuts (',' '.' and
    Space) to ``window``; returns the panel."""
    panel = VideoPanel(window)
    dock = QDockWidget("Timeline", window)
    dock.setObjectName("timeline_dock")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    file_menu = window.file_menu
    first = window.recent_menu.menuAction()  # the entries go before 'Open recent'

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


__all__ = ["VideoJob", "VideoPanel", "install_video"]
