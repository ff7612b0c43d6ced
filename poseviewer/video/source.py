"""Frame sources: a video file (whatever OpenCV's bundled FFmpeg reads), a camera, and a
source of given arrays (tests, scripts). No Qt, no torch.

Every source yields :class:`Frame` objects (RGB uint8, the frame number in the source and
its time in seconds) and raises :class:`VideoError` with a message for the user when the
input cannot be used: a missing, empty, corrupt or truncated file, a video without frames,
a camera that is absent or busy.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from poseviewer.errors import PoseviewerError

#: File suffixes treated as videos (anything else goes to the image reader).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg",
                              ".mpeg", ".wmv", ".flv", ".ogv", ".3gp"})


class VideoError(PoseviewerError):
    """A video or camera cannot be used; the message says why."""


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has a video suffix (see :data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class Frame:
    """One decoded frame."""

    index: int
    """Frame number in the source (0-based)."""
    time: float
    """Seconds from the start (the container's timestamps for files; wall time for
    cameras)."""
    rgb: np.ndarray
    """(H, W, 3) uint8."""


@runtime_checkable
class FrameSource(Protocol):
    """What the video pipeline and the viewer need from a source of frames."""

    name: str
    """A path or 'camera 0', for messages and results."""
    fps: float | None
    """Nominal frames per second (None: unknown)."""
    frame_count: int | None
    """Frames the source announces (None: unknown or live). A file may hold fewer."""
    size: tuple[int, int]
    """(width, height)."""
    live: bool
    """A camera: frames arrive in real time and cannot be sought."""
    messages: list[str]
    """Notes gathered while reading (e.g. the file ended early)."""

    def read(self) -> Frame | None:
        """The next frame, or None at the end."""
        ...

    def skip(self, n: int) -> int:
        """Pass over ``n`` frames without decoding them; returns how many were skipped."""
        ...

    def close(self) -> None:
        """Release the file or camera."""
        ...


def iter_frames(src: FrameSource, every: int = 1, max_frames: int | None = None
                ) -> Iterator[Frame]:
    """Frames 0, every, 2 every, ... of ``src`` (at most ``max_frames`` of them)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, not {every}")
    n = 0
    while max_frames is None or n < max_frames:
        frame = src.read()
        if frame is None:
            return
        yield frame
        n += 1
        if every > 1 and src.skip(every - 1) < every - 1:
            return


def prefetch(frames: Iterator[Frame], depth: int = 4) -> Iterator[Frame]:
    """``frames`` decoded ahead in a background thread (at most ``depth`` waiting), so that
    the network never waits for the file. Errors of the decoding come out here; closing
    the returned generator (or leaving it with an exception) stops the thread."""
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    end = object()

    def run() -> None:
        try:
            for f in frames:
                while not stop.is_set():
                    try:
                        q.put(f, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    t = threading.Thread(target=run, name="poseviewer-decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5.0)


class VideoFileSource:
    """A video file read through OpenCV's FFmpeg backend.

    Opening checks the file and decodes the first frame: a missing, empty or unreadable
    file, or one without a decodable frame, raises :class:`VideoError`. Frame times are the
    container's timestamps (``CAP_PROP_POS_MSEC`` after each frame, so variable frame rates
    keep their real times); where those are missing, index / fps. A file that ends before
    the frame count its header announces (truncated, damaged) adds a note to ``messages``.
    """

    live = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import cv2

        p = Path(path)
        self.name = str(p)
        self.messages: list[str] = []
        if not p.exists():
            raise VideoError(f"video not found: {p}")
        if p.is_dir():
            raise VideoError(f"{p} is a folder, not a video")
        if p.stat().st_size == 0:
            raise VideoError(f"{p} is empty (0 bytes)")
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise VideoError(f"cannot open {p}: not a video OpenCV's FFmpeg reads, or the "
                             "file is damaged or truncated")
        self._cap = cap
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float | None = fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: int | None = count if count > 0 else None
        self.size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._next = 0
        self._last_time = -math.inf
        self._first = self._decode()
        if self._first is None:
            self.close()
            raise VideoError(f"{p} holds no frames that can be decoded (an empty, damaged "
                             "or truncated video)")
        h, w = self._first.rgb.shape[:2]
        self.size = (w, h)

    def _time(self, index: int) -> float:
        import cv2

        ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        t = ms / 1000.0 if math.isfinite(ms) and (ms > 0.0 or index == 0) else math.nan
        if not math.isfinite(t) or t <= self._last_time:  # no or repeated timestamp
            t = index / self.fps if self.fps else float(index)
            t = max(t, self._last_time + 1e-6)
        self._last_time = t
        return t

    def _decode(self) -> Frame | None:
        import cv2

        ok, bgr = self._cap.read()
        if not ok or bgr is None or bgr.size == 0:
            return None
        index = self._next
        self._next += 1
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        return Frame(index, self._time(index), np.ascontiguousarray(bgr[..., ::-1]))

    def read(self) -> Frame | None:
        if self._cap is None:
            return None
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        frame = self._decode()
        if frame is None:
            self._note_end()
        return frame

    def skip(self, n: int) -> int:
        done = 0
        if self._first is not None and n > 0:
            self._first = None
            done = 1
        while done < n and self._cap is not None:
            if not self._cap.grab():
                self._note_end()
                break
            self._time(self._next)
            self._next += 1
            done += 1
        return done

    def _note_end(self) -> None:
        if self.frame_count is not None and self._next < self.frame_count - 1:
            note = (f"{self.name}: the video ended after {self._next} of the "
                    f"{self.frame_count} frames its header announces (truncated or damaged)")
            if note not in self.messages:
                self.messages.append(note)

    def close(self) -> None:
        if getattr(self, "_cap", None) is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> VideoFileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CameraSource:
    """A live camera through OpenCV (``cv2.VideoCapture(index)``).

    ``opener`` makes the capture object (default ``cv2.VideoCapture``; tests pass a fake).
    An absent camera, or one that opens but gives no frame (busy: used by another program),
    raises :class:`VideoError`. Frame times are wall-clock seconds since opening.
    """

    live = True
    frame_count = None

    def __init__(self, index: int = 0, opener: Callable[[int], Any] | None = None,
                 warmup_reads: int = 5) -> None:
        if opener is None:
            import cv2

            opener = cv2.VideoCapture
        self.name = f"camera {index}"
        self.messages: list[str] = []
        cap = opener(index)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise VideoError(f"no camera {index}: it is absent, unplugged, or this program "
                             "may not use it")
        self._cap = cap
        self._t0 = time.monotonic()
        self._next = 0
        first = None
        for _ in range(max(1, warmup_reads)):
            ok, bgr = cap.read()
            if ok and bgr is not None and bgr.size:
                first = bgr
                break
        if first is None:
            self.close()
            raise VideoError(f"camera {index} opened but gives no picture: it may be busy "
                             "(used by another program) or failing")
        self._first = first
        self.size = (int(first.shape[1]), int(first.shape[0]))
        fps = float(cap.get(5) or 0.0)  # cv2.CAP_PROP_FPS == 5
        self.fps: float | None = fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else None

    def read(self) -> Frame | None:
        if self._cap is None:
            return None
        if self._first is not None:
            bgr, self._first = self._first, None
        else:
            ok, bgr = self._cap.read()
            if not ok or bgr is None or not bgr.size:
                self.messages.append(f"{self.name} stopped giving pictures (disconnected "
                                     "or taken by another program)")
                return None
        frame = Frame(self._next, time.monotonic() - self._t0,
                      np.ascontiguousarray(_bgr_to_rgb(bgr)))
        self._next += 1
        return frame

    def skip(self, n: int) -> int:
        done = 0
        while done < n and self._cap is not None and self._cap.grab():
            done += 1
            self._next += 1
        return done

    def close(self) -> None:
        if getattr(self, "_cap", None) is not None:
            self._cap.release()
            self._cap = None


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return np.repeat(bgr[..., None], 3, axis=2)
    return bgr[..., 2::-1]


@dataclass
class ArraySource:
    """Frames from arrays (RGB uint8), e.g. for tests and scripts; ``times`` default to
    index / fps; ``live`` makes it act as a camera."""

    arrays: Sequence[np.ndarray]
    fps: float | None = 30.0
    times: Sequence[float] | None = None
    name: str = "frames"
    live: bool = False
    messages: list[str] = field(default_factory=list)
    _next: int = 0

    def __post_init__(self) -> None:
        if not len(self.arrays):
            raise VideoError(f"{self.name} holds no frames")
        self.frame_count: int | None = None if self.live else len(self.arrays)
        h, w = np.shape(self.arrays[0])[:2]
        self.size = (int(w), int(h))

    def read(self) -> Frame | None:
        if self._next >= len(self.arrays):
            return None
        i = self._next
        self._next += 1
        t = float(self.times[i]) if self.times is not None else \
            i / self.fps if self.fps else float(i)
        return Frame(i, t, np.asarray(self.arrays[i]))

    def skip(self, n: int) -> int:
        done = min(n, len(self.arrays) - self._next)
        self._next += done
        return done

    def close(self) -> None:
        pass


def open_source(spec: str | int | os.PathLike[str]) -> FrameSource:
    """A file path -> :class:`VideoFileSource`; an int or 'camera:N' -> :class:`CameraSource`."""
    if isinstance(spec, int):
        return CameraSource(spec)
    text = str(spec)
    if text.startswith("camera:"):
        try:
            return CameraSource(int(text.split(":", 1)[1] or 0))
        except ValueError:
            raise VideoError(f"{text!r}: expected camera:N with a camera number N") from None
    return VideoFileSource(text)
