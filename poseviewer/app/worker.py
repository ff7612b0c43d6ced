"""Runs the estimator off the GUI thread.

``EstimateWorker`` (a QObject moved to a ``QThread``) receives requests through a queued
signal and reports back with signals; ``WorkerController`` (GUI thread) owns the thread,
numbers the requests, cancels the running one when a new one arrives, drops stale answers
and shuts the thread down cleanly (cancel, ``quit()``, ``wait()``).

Signals are connected to methods of QObjects living in the GUI thread (never lambdas: a
lambda has no thread affinity and would run in the worker thread).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class Request:
    """One job for the worker."""

    id: int
    kind: str
    """'estimate' (run the CNN on ``image``), 'lift' (lift the 2D joints in file ``joints``
    without the CNN) or 'load' (read a saved result file ``joints``)."""
    image: Any = None
    """A path or an (H, W, 3) uint8 RGB array."""
    boxes: np.ndarray | None = None
    joints: Any = None
    """For 'lift': whatever the lift function takes (e.g. a path to 2D joints)."""
    token: CancelToken = field(default_factory=CancelToken)
    flip_test: bool | None = None
    """For 'estimate': the network's mirror test-time pass on/off (None: as it is)."""
    elevation_search: bool | None = None
    """For 'estimate': the 3D fit's search of the camera elevation (None: as it is)."""


class EstimateWorker(QObject):
    """Lives in the worker thread; ``run`` is invoked by a queued signal."""

    progress = Signal(int, int, int)
    """request id, stage index (0-based, finished for every person), number of stages."""
    succeeded = Signal(int, object, object, float)
    """request id, EstimateResult, RGB image (or None), seconds."""
    failed = Signal(int, str, str)
    """request id, error kind ('image', 'model', 'import' or 'error'), message. (A photo
    with nobody in it is not an error: it succeeds with no persons and the window says so.)"""
    cancelled = Signal(int)
    image_loaded = Signal(int, object)
    """request id, RGB image: the photo as it will be analysed (shown before the result)."""

    def __init__(
        self,
        estimator_factory: Callable[[], Any],
        file_functions: dict[str, Callable[[Any, Any], Any]] | None = None,
    ) -> None:
        super().__init__()
        self._factory = estimator_factory
        self._files = dict(file_functions or {})
        self._estimator: Any = None
        self._current: Request | None = None

    def estimator(self) -> Any:
        """The estimator, created on first use (in the worker thread)."""
        if self._estimator is None:
            self._estimator = self._factory()
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
            if req.kind == "estimate":
                result, image = self._estimate(req)
            elif req.kind in self._files:
                result, image = self._files[req.kind](req.joints, req.image)
            else:
                raise ValueError(f"unknown request kind {req.kind!r}")
        except Cancelled:
            self.cancelled.emit(req.id)
        except Exception as exc:  # every error becomes a message, never a crash
            if req.token.cancelled:
                self.cancelled.emit(req.id)
            else:
                self.failed.emit(req.id, _error_kind(exc), _message(exc))
        else:
            self.succeeded.emit(req.id, result, image, time.perf_counter() - t0)
        finally:
            self._current = None

    def _estimate(self, req: Request) -> tuple[Any, np.ndarray]:
        from poseviewer.imageio import MAX_PIXELS, load_image

        loaded = load_image(req.image, MAX_PIXELS)  # ImageError: a clear message
        if loaded.path is not None:  # a new photo: show it while the CNN runs
            self.image_loaded.emit(req.id, loaded.rgb)
        try:
            est = self.estimator()
        except Exception as exc:
            raise _ModelError(_message(exc)) from exc
        if req.flip_test is not None and hasattr(est, "flip_test"):
            est.flip_test = req.flip_test
        if req.elevation_search is not None and hasattr(est, "elevation_search"):
            est.elevation_search = req.elevation_search
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


def _error_kind(exc: BaseException) -> str:
    """'image', 'model', 'import' or 'error', by the exception's class."""
    if isinstance(exc, ImageError):
        return "image"
    if isinstance(exc, ModelError):
        return "model"
    if isinstance(exc, ImportFormatError):
        return "import"
    return "error"


class WorkerController(QObject):
    """GUI-thread owner of the worker thread. Forwards the worker's answers for the
    current request only (stale ones are dropped)."""

    requested = Signal(object)
    progress = Signal(int, int)
    """stage (0-based, finished), number of stages."""
    succeeded = Signal(object, object, float)
    failed = Signal(str, str)
    cancelled = Signal()
    busy_changed = Signal(bool)
    image_loaded = Signal(object)

    def __init__(
        self,
        estimator_factory: Callable[[], Any],
        file_functions: dict[str, Callable[[Any, Any], Any]] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("poseviewer-worker")
        self.worker = EstimateWorker(estimator_factory, file_functions)
        self.worker.moveToThread(self._thread)
        self.requested.connect(self.worker.run)
        self.worker.progress.connect(self._on_progress)
        self.worker.succeeded.connect(self._on_succeeded)
        self.worker.failed.connect(self._on_failed)
        self.worker.cancelled.connect(self._on_cancelled)
        self.worker.image_loaded.connect(self._on_image_loaded)
        self._thread.start()
        self._next_id = 0
        self._current: Request | None = None
        self._pending = 0  # requests handed to the worker and not answered yet
        self._shut = False

    @property
    def busy(self) -> bool:
        """True while the current request is running."""
        return self._current is not None

    def submit(self, kind: str, **kwargs: Any) -> int:
        """Queue a request (cancelling the running one); returns its id."""
        if self._shut:
            raise RuntimeError("the worker has been shut down")
        self.cancel()
        self._next_id += 1
        req = Request(id=self._next_id, kind=kind, **kwargs)
        was_busy = self.busy
        self._current = req
        self._pending += 1
        self.requested.emit(req)
        if not was_busy:
            self.busy_changed.emit(True)
        return req.id

    def cancel(self) -> None:
        """Ask the running request to stop at the next stage boundary."""
        if self._current is not None:
            self._current.token.cancel()

    def _settle(self, rid: int) -> bool:
        self._pending -= 1
        if self._current is None or rid != self._current.id:
            return False
        self._current = None
        self.busy_changed.emit(False)
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
        current = self._current is not None and rid == self._current.id
        cancelled = current and self._current.token.cancelled
        if self._settle(rid):
            if cancelled:
                self.cancelled.emit()
            else:
                self.succeeded.emit(result, image, seconds)

    @Slot(int, str, str)
    def _on_failed(self, rid: int, kind: str, message: str) -> None:
        if self._settle(rid):
            self.failed.emit(kind, message)

    @Slot(int)
    def _on_cancelled(self, rid: int) -> None:
        if self._settle(rid):
            self.cancelled.emit()

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
