"""Runs the estimator off the GUI thread: photos, files, and the frames of videos and
cameras, with one estimator (one set of loaded models) and one error path.

``EstimateWorker`` (a QObject moved to a ``QThread``) receives requests through a queued
signal and reports back with signals; ``WorkerController`` (GUI thread) owns the thread,
numbers the requests, cancels the running one when a new one arrives, drops stale answers
and shuts the thread down cleanly (cancel, ``quit()``, ``wait()``). Every request carries
the window's :class:`RunSettings` (the Run menu), applied to the estimator before it runs;
every failure is reported once, with an :class:`ErrorKind` found from the exception's class.

Signals are connected to methods of QObjects living in the GUI thread (never lambdas: a
lambda has no thread affinity and would run in the worker thread).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from poseviewer.errors import (
    Cancelled,
    CancelToken,
    ImageError,
    ImportFormatError,
    ModelError,
    PoseviewerError,
)
from poseviewer.video.source import VideoError


class ErrorKind(str, Enum):
    """What failed, for the window's message box (its title) and ``MainWindow.last_error``.
    A ``str`` enum: ``ErrorKind.IMAGE == "image"``; ``ErrorKind("imgae")`` raises."""

    IMAGE = "image"
    MODEL = "model"
    IMPORT = "import"
    VIDEO = "video"
    NO_PERSON = "no person"
    EXPORT = "export"
    SCREENSHOT = "screenshot"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    @property
    def title(self) -> str:
        """The message box's title."""
        return _TITLES[self]

    @classmethod
    def of(cls, exc: BaseException) -> ErrorKind:
        """The kind of a worker failure, by the exception's class (never its name)."""
        for klass, kind in ((ImageError, cls.IMAGE), (ModelError, cls.MODEL),
                            (ImportFormatError, cls.IMPORT), (VideoError, cls.VIDEO)):
            if isinstance(exc, klass):
                return kind
        return cls.ERROR


_TITLES = {
    ErrorKind.IMAGE: "Cannot use this image",
    ErrorKind.MODEL: "Cannot load the model",
    ErrorKind.IMPORT: "Cannot import this file",
    ErrorKind.VIDEO: "Cannot use this video or camera",
    ErrorKind.NO_PERSON: "No person found",
    ErrorKind.EXPORT: "Export failed",
    ErrorKind.SCREENSHOT: "Screenshot failed",
    ErrorKind.ERROR: "Unexpected error",
}


@dataclass(frozen=True)
class RunSettings:
    """The Run menu's estimator settings; None: as the estimator is (its weights' own)."""

    flip_test: bool | None = None
    """The network's mirror test-time pass."""
    elevation_search: bool | None = None
    """The 3D fit's search of the camera elevation."""
    first_stage_only: bool | None = None
    """Stop the 2D network after its first stage (``Estimator.stages`` 1; False: all)."""

    def apply(self, estimator: Any) -> None:
        """Set every setting that is not None on ``estimator`` (where it has it)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "first_stage_only":
                if hasattr(estimator, "stages"):
                    try:
                        estimator.stages = 1 if value else None
                    except ValueError:  # a network that always runs all its stages: the
                        pass            # result's stage count shows it
            elif hasattr(estimator, f.name):
                setattr(estimator, f.name, value)


#: Request kinds of videos and cameras (answered to the timeline, not the window).
VIDEO_KINDS = frozenset({"video", "camera", "frame"})


@dataclass
class VideoJob:
    """One video or camera run, shared between the GUI and the worker thread."""

    id: int
    source: Any
    """A path (file mode) or a callable returning a live ``FrameSource`` (camera mode)."""
    live: bool = False
    token: CancelToken = field(default_factory=CancelToken)
    frames: dict[int, np.ndarray] = field(default_factory=dict)
    """Position -> decoded RGB frame, for the frames in the cache (the GUI evicts)."""
    ready: set[int] = field(default_factory=set)
    """Positions whose frame and maps are in the cache (kept by the GUI)."""
    done: int = 0
    """Frames of the ordered pass estimated so far."""
    wanted: int | None = None
    """The frame on screen (set by the GUI): decoded and estimated alone first when it is
    not ready (ahead of the pass, or evicted from the cache)."""
    fps: float | None = None
    notes: list[str] = field(default_factory=list)
    """Notes from reading (e.g. the file ended early)."""
    settings: RunSettings = field(default_factory=RunSettings)
    """The window's Run settings when the run started (its frames estimated again later
    use them too)."""


@dataclass
class Request:
    """One job for the worker."""

    id: int
    kind: str
    """'estimate' (run the CNN on ``image``), a file job of the window ('lift': lift the
    2D joints in file ``joints`` without the CNN; 'load': read a saved result file
    ``joints``), 'video' (the ordered pass over ``job``'s file), 'camera' (``job``'s live
    source) or 'frame' (``job``'s frame on screen, decoded and estimated alone)."""
    image: Any = None
    """A path or an (H, W, 3) uint8 RGB array."""
    boxes: np.ndarray | None = None
    joints: Any = None
    """For 'lift': whatever the lift function takes (e.g. a path to 2D joints)."""
    token: CancelToken = field(default_factory=CancelToken)
    settings: RunSettings = field(default_factory=RunSettings)
    """Applied to the estimator before it runs (every kind)."""
    job: VideoJob | None = None
    """For the video kinds."""


class EstimateWorker(QObject):
    """Lives in the worker thread; ``run`` is invoked by a queued signal. One estimator,
    made on first use, serves photos and the frames of videos and cameras."""

    progress = Signal(int, int, int)
    """request id, stage index (0-based, finished for every person), number of stages."""
    succeeded = Signal(int, object, object, float)
    """request id, EstimateResult (None for the video kinds), RGB image (or None), seconds."""
    failed = Signal(int, object, str)
    """request id, :class:`ErrorKind`, message. (A photo with nobody in it is not an error:
    it succeeds with no persons and the window says so.)"""
    cancelled = Signal(int)
    image_loaded = Signal(int, object)
    """request id, RGB image: the photo as it will be analysed (shown before the result)."""
    decoded = Signal(int, int)
    """video job id, frames the video announces (0: unknown); the pass then starts."""
    frame_done = Signal(int, int, object, object, bool)
    """video job id, position, EstimateResult, RGB frame, alone (estimated alone: a preview
    or a frame decoded again for its maps)."""
    frame_progress = Signal(int, int, int)
    """video job id, frames estimated in order, total."""
    live_frame = Signal(int, object, object, object)
    """video job id, RGB frame, EstimateResult, LiveStats."""

    def __init__(
        self,
        estimator_factory: Callable[[], Any],
        file_functions: dict[str, Callable[[Any, Any, Any], Any]] | None = None,
    ) -> None:
        super().__init__()
        self._factory = estimator_factory
        self._files = dict(file_functions or {})
        self._estimator: Any = None
        self._current: Request | None = None

    def estimator(self, settings: RunSettings | None = None) -> Any:
        """The estimator, created on first use (in the worker thread), with ``settings``
        applied. A failure to build it is a :class:`ModelError`."""
        if self._estimator is None:
            try:
                self._estimator = self._factory()
            except Exception as exc:
                raise _ModelError(_message(exc)) from exc
        if settings is not None:
            settings.apply(self._estimator)
        return self._estimator

    @Slot(object)
    def run(self, req: Request) -> None:
        """Handle one request; always ends with exactly one of the result signals."""
        if req.token.cancelled:
            self.cancelled.emit(req.id)
            return
        t0 = time.perf_counter()
        self._current = req
        try:
            result, image = None, None
            if req.kind == "estimate":
                result, image = self._estimate(req)
            elif req.kind == "video":
                self._video(req)
            elif req.kind == "camera":
                self._camera(req)
            elif req.kind == "frame":
                self._serve(req)
            elif req.kind in self._files:
                result, image = self._files[req.kind](req.joints, req.image, req.settings)
            else:
                raise ValueError(f"unknown request kind {req.kind!r}")
        except Cancelled:
            self.cancelled.emit(req.id)
        except Exception as exc:  # every error becomes a message, never a crash
            if req.token.cancelled:
                self.cancelled.emit(req.id)
            else:
                self.failed.emit(req.id, ErrorKind.of(exc), _message(exc))
        else:
            if req.token.cancelled and req.kind in VIDEO_KINDS:
                self.cancelled.emit(req.id)
            else:
                self.succeeded.emit(req.id, result, image, time.perf_counter() - t0)
        finally:
            self._current = None

    def _estimate(self, req: Request) -> tuple[Any, np.ndarray]:
        from poseviewer.imageio import MAX_PIXELS, load_image

        loaded = load_image(req.image, MAX_PIXELS)  # ImageError: a clear message
        if loaded.path is not None:  # a new photo: show it while the CNN runs
            self.image_loaded.emit(req.id, loaded.rgb)
        est = self.estimator(req.settings)
        # The estimator downscales to its own ``max_pixels`` itself and reports everything
        # in the pixels of what it is given: the full-resolution array (= the file's pixels),
        # or the file itself when the photo was too big even for display (then the shown
        # copy is stretched over the result's original-pixel frame).
        source = req.image if loaded.scale != 1.0 and loaded.path is not None else loaded.rgb
        result = est.estimate(source, boxes=req.boxes, on_stage=self._on_stage,
                              cancel=req.token)
        rgb = loaded.rgb
        if loaded.path is not None:
            result.image_path = loaded.path
        result.messages = list(loaded.messages) + [
            m for m in (result.messages or []) if m not in loaded.messages]
        return result, rgb

    def _on_stage(self, stage: int, num_stages: int) -> None:
        req = self._current
        if req is not None:
            self.progress.emit(req.id, int(stage), int(num_stages))

    # ---- videos and cameras ------------------------------------------------------------
    def _video(self, req: Request) -> None:
        """The ordered pass over a video file: every frame estimated in turn (ids and
        smoothing), the frame on screen served first when it is not ready."""
        from poseviewer.video import VideoAnalyzer, VideoFileSource, iter_frames

        job = req.job
        with VideoFileSource(job.source) as src:
            job.fps = src.fps
            total = src.frame_count or 0
            self.decoded.emit(job.id, total)
            analyzer = VideoAnalyzer(self.estimator(req.settings))
            for i, frame in enumerate(iter_frames(src)):
                self._serve(req)
                if req.token.cancelled:
                    raise Cancelled("cancelled")
                res = analyzer.step(frame, cancel=req.token)
                job.done = i + 1
                job.ready.add(i)  # before the GUI hears of it: never estimated twice
                self.frame_done.emit(job.id, i, res, frame.rgb, False)
                self.frame_progress.emit(job.id, i + 1, max(total, i + 1))
            job.notes += src.messages
        if total and job.done < total:
            self.frame_progress.emit(job.id, job.done, job.done)

    def _serve(self, req: Request) -> None:
        """Decode and estimate alone the job's frame on screen when it is not ready."""
        job = req.job
        w = job.wanted
        if w is None or w in job.ready or req.token.cancelled:
            return
        job.ready.add(w)  # asked once; the GUI takes it out again when it evicts the frame
        rgb = _decode_at(str(job.source), w)
        if rgb is None:
            return
        res = self.estimator(req.settings).estimate(rgb, cancel=req.token)
        self.frame_done.emit(job.id, w, res, rgb, True)

    def _camera(self, req: Request) -> None:
        """Live mode: the newest frame estimated, frames dropped while busy."""
        from poseviewer.video import LatestFrame, VideoAnalyzer, run_live

        job = req.job
        analyzer = VideoAnalyzer(self.estimator(req.settings))
        grabber = LatestFrame(job.source())
        try:
            run_live(analyzer, grabber,
                     lambda frame, res, stats: self.live_frame.emit(job.id, frame.rgb, res,
                                                                   stats),
                     cancel=req.token)
        finally:
            grabber.stop()


def _decode_at(path: str, index: int) -> np.ndarray | None:
    """Frame ``index`` of the video at ``path`` (RGB), decoded by seeking; None if absent."""
    import cv2

    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, bgr = cap.read()
    finally:
        cap.release()
    if not ok or bgr is None:
        return None
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(bgr[..., ::-1])


class _ModelError(ModelError):
    """The estimator could not be built (its message is the cause's)."""


#: Expected failures whose message is shown as it is (no type name, no location).
_EXPECTED = (PoseviewerError, ValueError, FileNotFoundError)


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, _EXPECTED):
        return text
    # unexpected: keep the last frame for the report
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {text}{where}"


class WorkerController(QObject):
    """GUI-thread owner of the worker thread. Forwards the worker's answers: a photo's for
    the current request only (stale ones are dropped), to the window; a video's or a
    camera's always, with its job id, to the timeline (which knows its own job)."""

    requested = Signal(object)
    progress = Signal(int, int)
    """stage (0-based, finished), number of stages."""
    succeeded = Signal(object, object, float)
    """EstimateResult, RGB image (or None), seconds."""
    failed = Signal(object, str)
    """:class:`ErrorKind`, message."""
    cancelled = Signal()
    busy_changed = Signal(bool)
    """True while a photo (or file) request runs."""
    image_loaded = Signal(object)
    decoded = Signal(int, int)
    """video job id, frames the video announces (0: unknown)."""
    frame_done = Signal(int, int, object, object, bool)
    """video job id, position, EstimateResult, RGB frame, estimated alone."""
    frame_progress = Signal(int, int, int)
    """video job id, frames estimated in order, total."""
    live_frame = Signal(int, object, object, object)
    """video job id, RGB frame, EstimateResult, LiveStats."""
    video_failed = Signal(int, object, str)
    """video job id, :class:`ErrorKind`, message."""
    video_finished = Signal(int, bool)
    """video job id, cancelled: the ordered pass or the camera ended."""

    def __init__(
        self,
        estimator_factory: Callable[[], Any],
        file_functions: dict[str, Callable[[Any, Any, Any], Any]] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("poseviewer-worker")
        self.worker = EstimateWorker(estimator_factory, file_functions)
        self.worker.moveToThread(self._thread)
        self.requested.connect(self.worker.run)
        w = self.worker
        w.progress.connect(self._on_progress)
        w.succeeded.connect(self._on_succeeded)
        w.failed.connect(self._on_failed)
        w.cancelled.connect(self._on_cancelled)
        w.image_loaded.connect(self._on_image_loaded)
        for name in ("decoded", "frame_done", "frame_progress", "live_frame"):
            getattr(w, name).connect(getattr(self, name))  # signal to signal: forwarded
        self._thread.start()
        self.settings = RunSettings()
        """The Run settings every new request carries (the window keeps them current)."""
        self._next_id = 0
        self._current: Request | None = None
        self._video: dict[int, Request] = {}  # video requests not answered yet
        self._shut = False

    @property
    def busy(self) -> bool:
        """True while the current request is a photo (or file) request and runs."""
        return self._current is not None and self._current.kind not in VIDEO_KINDS

    def _set_current(self, req: Request | None) -> None:
        was_busy = self.busy
        self._current = req
        if self.busy != was_busy:
            self.busy_changed.emit(self.busy)

    def submit(self, kind: str, **kwargs: Any) -> int:
        """Queue a request, with :attr:`settings` unless it brings its own; returns its id.

        A request cancels the running one, except 'frame' (a video's frame on screen,
        estimated alone), which waits behind it and is cancelled with its job."""
        if self._shut:
            raise RuntimeError("the worker has been shut down")
        self._next_id += 1
        kwargs.setdefault("settings", self.settings)
        req = Request(id=self._next_id, kind=kind, **kwargs)
        if req.kind in VIDEO_KINDS:
            if req.job is None:
                raise ValueError(f"a {kind!r} request needs its video job")
            self._video[req.id] = req
        if kind != "frame":
            self.cancel()
            self._set_current(req)
        self.requested.emit(req)
        return req.id

    def cancel(self) -> None:
        """Ask the running request to stop at the next stage boundary (or frame)."""
        if self._current is not None:
            self._current.token.cancel()

    def _settle(self, rid: int) -> bool:
        """The answer to ``rid`` came: True when it is the current request's."""
        if self._current is None or rid != self._current.id:
            return False
        self._set_current(None)
        return True

    @Slot(int, int, int)
    def _on_progress(self, rid: int, stage: int, num: int) -> None:
        if self._current is not None and rid == self._current.id:
            self.progress.emit(stage, num)

    @Slot(int, object)
    def _on_image_loaded(self, rid: int, rgb: Any) -> None:
        if self._current is not None and rid == self._current.id:
            self.image_loaded.emit(rgb)

    @Slot(int, object, object, float)
    def _on_succeeded(self, rid: int, result: Any, image: Any, seconds: float) -> None:
        video = self._video.pop(rid, None)
        current = self._current is not None and rid == self._current.id
        cancelled = current and self._current.token.cancelled
        if not self._settle(rid) and video is None:
            return
        if video is not None:
            if video.kind != "frame":
                self.video_finished.emit(video.job.id, video.token.cancelled)
        elif cancelled:
            self.cancelled.emit()
        else:
            self.succeeded.emit(result, image, seconds)

    @Slot(int, object, str)
    def _on_failed(self, rid: int, kind: ErrorKind, message: str) -> None:
        video = self._video.pop(rid, None)
        if self._settle(rid) or video is not None:
            if video is not None:
                self.video_failed.emit(video.job.id, kind, message)
            else:
                self.failed.emit(kind, message)

    @Slot(int)
    def _on_cancelled(self, rid: int) -> None:
        video = self._video.pop(rid, None)
        if self._settle(rid) or video is not None:
            if video is None:
                self.cancelled.emit()
            elif video.kind != "frame":
                self.video_finished.emit(video.job.id, True)

    @property
    def running(self) -> bool:
        """True while the worker thread has not finished."""
        return self._thread.isRunning()

    def stop(self) -> None:
        """Cancel the running request and ask the thread to end (returns at once; no new
        requests are accepted afterwards). The thread ends after the running stage."""
        if not self._shut:
            self._shut = True
            self.cancel()
            self._thread.quit()

    def shutdown(self, timeout_ms: int | None = 30000) -> bool:
        """:meth:`stop`, then wait up to ``timeout_ms`` (None: until it ends; a CNN stage
        always ends) for the thread. True when it has finished; after a timeout the thread
        is still running and ``shutdown`` may be called again."""
        self.stop()
        ok = self._thread.wait() if timeout_ms is None else self._thread.wait(int(timeout_ms))
        if ok:
            self._current = None
        return bool(ok)
