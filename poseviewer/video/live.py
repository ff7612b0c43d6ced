"""Live (camera) mode: estimate the newest frame only, drop frames while busy, measure the
rate achieved. No Qt: the viewer drives it from its worker thread.

:class:`LatestFrame` reads a live source in a background thread and keeps only the newest
frame; :func:`run_live` estimates whatever is newest each time the estimator is free.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from poseviewer.errors import Cancelled, check_cancel
from poseviewer.result import EstimateResult
from poseviewer.video.pipeline import VideoAnalyzer
from poseviewer.video.source import Frame, FrameSource


class RateMeter:
    """Events per second over the last ``window`` seconds."""

    def __init__(self, window: float = 2.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.window = float(window)
        self.clock = clock
        self._times: deque[float] = deque()

    def tick(self) -> None:
        self._times.append(self.clock())

    @property
    def rate(self) -> float:
        """Events per second (0 with fewer than two events in the window)."""
        now = self.clock()
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class LatestFrame:
    """Reads ``source`` in a daemon thread and keeps only its newest frame.

    ``get`` returns the newest frame not yet taken (waiting up to ``timeout``); frames that
    arrived in between and were never taken are counted in ``dropped``. ``error`` holds
    the exception that stopped the reader, if any; ``ended`` is set when the source ends.
    """

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.read = 0
        self.dropped = 0
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._cv = threading.Condition()
        self._frame: Frame | None = None
        self._thread = threading.Thread(target=self._run, name="poseviewer-camera",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                with self._cv:
                    if self._frame is not None:
                        self.dropped += 1
                    self._frame = frame
                    self.read += 1
                    self._cv.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported to the consumer
            self.error = exc
        finally:
            self.ended.set()
            with self._cv:
                self._cv.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken, or None (timeout, or the source ended)."""
        with self._cv:
            if self._frame is None and not self.ended.is_set():
                self._cv.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading and release the source."""
        self._stop.set()
        self._thread.join(timeout)
        self.source.close()


@dataclass
class LiveStats:
    """What live mode shows: frames estimated, dropped, and the rates."""

    estimated: int = 0
    dropped: int = 0
    read: int = 0
    rate: float = 0.0
    """Frames estimated per second (recent)."""


def run_live(analyzer: VideoAnalyzer, grabber: LatestFrame,
             on_result: Callable[[Frame, EstimateResult, LiveStats], Any],
             cancel: Any = None, max_frames: int | None = None,
             meter: RateMeter | None = None) -> LiveStats:
    """Estimate the newest frame each time the analyzer is free, until ``cancel`` is set,
    the source ends or ``max_frames`` were estimated. ``on_result(frame, result, stats)``
    after each. A reader error is raised here."""
    meter = meter or RateMeter()
    stats = LiveStats()
    while max_frames is None or stats.estimated < max_frames:
        try:
            check_cancel(cancel)
        except Cancelled:
            break
        frame = grabber.get(timeout=0.5)
        if frame is None:
            if grabber.error is not None:
                raise grabber.error
            if grabber.ended.is_set():
                break
            continue
        result = analyzer.step(frame)
        meter.tick()
        stats.estimated += 1
        stats.dropped, stats.read, stats.rate = grabber.dropped, grabber.read, meter.rate
        on_result(frame, result, stats)
    return stats
