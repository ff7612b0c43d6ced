"""Per-frame estimation of a video: the Estimator on each frame, people followed over time
(:mod:`poseviewer.video.track`), optional One Euro smoothing of the 2D joints before
lifting (:mod:`poseviewer.video.smooth`), gathered into a
:class:`~poseviewer.result.ResultSequence` (one ``EstimateResult`` per frame, frame numbers
and times from the video, ``PersonResult.track_id`` on every person).

Smoothing (on by default for video; photos are never smoothed) filters the last stage's
2D joints of each person id (:class:`PoseSmoother`: the pose relative to the person's box
centre, in units of the person's height, so that the person moving through the picture
causes no lag; the centre itself is not filtered) and lifts the filtered joints again with
the Estimator's 3D model; the joints as read stay in ``StageResult.raw_joints_2d``. Earlier
stages are left as the network gave them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from poseviewer.errors import check_cancel
from poseviewer.result import EstimateResult, Fit, ResultSequence
from poseviewer.video.smooth import OneEuroFilter, OneEuroParams
from poseviewer.video.source import Frame, FrameSource, VideoError, iter_frames
from poseviewer.video.track import Tracker

#: on_frame(done, total or None, result): after each frame
FrameCallback = Callable[[int, "int | None", EstimateResult], None]

#: The default smoothing of video (``None`` turns it off).
DEFAULT_SMOOTHING = OneEuroParams()


class PoseSmoother:
    """One person's 2D joints over time: a One Euro filter on the joints relative to the
    box centre, divided by the person's height when first seen (so the parameters suit any
    resolution); the box centre passes unfiltered (the 3D lifting does not depend on it).
    Invisible joints pass unfiltered and keep their filter state."""

    def __init__(self, params: OneEuroParams, height: float) -> None:
        self.filter = OneEuroFilter(params)
        self.height = height if height > 1.0 else 1.0

    def __call__(self, joints: np.ndarray, visible: np.ndarray, box: np.ndarray,
                 t: float) -> np.ndarray:
        centre = (np.asarray(box[:2], dtype=np.float64) + np.asarray(box[2:], np.float64)) / 2
        rel = (np.asarray(joints, dtype=np.float64) - centre) / self.height
        return self.filter(rel, t, np.asarray(visible, dtype=bool)[:, None]) * self.height \
            + centre


class VideoAnalyzer:
    """Estimates frames one after another, keeping the ids and the filters' state.

    ``estimator``: a :class:`~poseviewer.estimator.Estimator` (anything with ``estimate(
    image, on_stage=, cancel=)`` and a ``pose_model`` with ``lift``); ``smoothing``: the One
    Euro parameters, or None for none.
    """

    def __init__(self, estimator: Any, smoothing: OneEuroParams | None = DEFAULT_SMOOTHING,
                 tracker: Tracker | None = None) -> None:
        self.estimator = estimator
        self.smoothing = smoothing
        self.tracker = tracker if tracker is not None else Tracker()
        self._filters: dict[int, PoseSmoother] = {}

    def step(self, frame: Frame, on_stage: Any = None, cancel: Any = None) -> EstimateResult:
        """Estimate ``frame`` (frames must come in time order), set the people's ids and
        smooth their joints."""
        result = self.estimator.estimate(frame.rgb, on_stage=on_stage, cancel=cancel)
        persons = result.persons
        if not persons:
            self.tracker.update(np.zeros((0, 4)))
            return result
        boxes = np.stack([p.box for p in persons])
        joints = np.stack([p.final.joints_2d for p in persons])
        ids = self.tracker.update(boxes, joints)
        for p, i in zip(persons, ids, strict=True):
            p.track_id = int(i)
        live = {t.id for t in self.tracker.tracks}
        self._filters = {k: v for k, v in self._filters.items() if k in live}
        if self.smoothing is not None:
            self._smooth(result, frame.time)
        return result

    def _smooth(self, result: EstimateResult, t: float) -> None:
        persons = result.persons
        raw = np.stack([p.final.joints_2d for p in persons]).astype(np.float64)
        vis = np.stack([np.asarray(p.final.visible, dtype=bool) for p in persons])
        smoothed = raw.copy()
        for i, p in enumerate(persons):
            if p.track_id not in self._filters:
                self._filters[p.track_id] = PoseSmoother(self.smoothing,
                                                         float(p.box[3] - p.box[1]))
            smoothed[i] = self._filters[p.track_id](raw[i], vis[i], p.box, t)
        model = getattr(self.estimator, "pose_model", None)
        fit = None
        if model is not None:
            fit = Fit.from_lift(model.lift(smoothed, vis, as_numpy=True))
        for i, p in enumerate(persons):
            final = p.stages[-1]
            p.stages[-1] = dataclasses.replace(
                final, joints_2d=smoothed[i], raw_joints_2d=raw[i],
                fit=final.fit if fit is None else fit.select([i]))
        if fit is None:
            result.messages.append("joints smoothed over time but not lifted again (no 3D "
                                   "model)")


def _total(src: FrameSource, every: int, max_frames: int | None) -> int | None:
    n = None if src.frame_count is None else math.ceil(src.frame_count / every)
    if max_frames is not None:
        n = max_frames if n is None else min(n, max_frames)
    return n


def estimate_video(estimator: Any, source: FrameSource, every: int = 1,
                   max_frames: int | None = None,
                   smoothing: OneEuroParams | None = DEFAULT_SMOOTHING,
                   tracker: Tracker | None = None, on_frame: FrameCallback | None = None,
                   cancel: Any = None) -> ResultSequence:
    """Estimate every ``every``-th frame of ``source`` (at most ``max_frames``) in order.

    Returns the :class:`ResultSequence` (frame numbers, times, fps, the smoothing used, the
    source's notes). ``cancel`` (a ``CancelToken``) stops with ``Cancelled``; a source that
    gives no frame raises :class:`VideoError`.
    """
    if every < 1:
        raise ValueError(f"--every must be at least 1, not {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be at least 1, not {max_frames}")
    analyzer = VideoAnalyzer(estimator, smoothing, tracker)
    total = _total(source, every, max_frames)
    frames: list[EstimateResult] = []
    indices: list[int] = []
    times: list[float] = []
    for frame in iter_frames(source, every, max_frames):
        check_cancel(cancel)
        result = analyzer.step(frame, cancel=cancel)
        frames.append(result)
        indices.append(frame.index)
        times.append(frame.time)
        if on_frame is not None:
            on_frame(len(frames), total, result)
    if not frames:
        raise VideoError(f"{source.name}: no frames could be read")
    return ResultSequence(frames=frames, times=times, source=source.name, indices=indices,
                          fps=source.fps, messages=list(source.messages),
                          smoothing=None if smoothing is None else smoothing.as_dict())
