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
from poseviewer.video.track import Tracker, TrackGate

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

    def state(self) -> dict[str, Any]:
        """The filter's state as JSON types (NaN kept as null)."""
        f = self.filter

        def lst(a: np.ndarray | None) -> Any:
            return None if a is None else np.where(np.isfinite(a), a, np.nan).tolist()

        return {"height": self.height, "x": lst(f.x), "dx": lst(f.dx), "t": lst(f.t)}

    def load_state(self, d: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""
        self.height = float(d["height"])

        def arr(v: Any) -> np.ndarray | None:
            return None if v is None else np.array(v, dtype=np.float64)

        self.filter.x, self.filter.dx, self.filter.t = arr(d["x"]), arr(d["dx"]), arr(d["t"])


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
        ids = self.tracker.update(boxes, joints, np.array([p.score for p in persons]))
        for p, i in zip(persons, ids, strict=True):
            p.track_id = None if i is None else int(i)
        live = {t.id for t in self.tracker.tracks}
        self._filters = {k: v for k, v in self._filters.items() if k in live}
        if self.smoothing is not None:
            self._smooth(result, frame.time)
        return result

    def state(self) -> dict[str, Any]:
        """The tracker's and the filters' state after the last frame, as JSON types."""
        return {"tracker": self.tracker.state(),
                "filters": {str(k): f.state() for k, f in self._filters.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` (a resumed run)."""
        self.tracker.load_state(state["tracker"])
        self._filters = {}
        if self.smoothing is not None:
            for k, d in state["filters"].items():
                f = PoseSmoother(self.smoothing, 1.0)
                f.load_state(d)
                self._filters[int(k)] = f

    def _smooth(self, result: EstimateResult, t: float) -> None:
        persons = result.persons
        raw = np.stack([p.final.joints_2d for p in persons]).astype(np.float64)
        vis = np.stack([np.asarray(p.final.visible, dtype=bool) for p in persons])
        smoothed = raw.copy()
        for i, p in enumerate(persons):
            if p.track_id is None:  # a low-score detection that starts no track
                continue
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


def drop_maps(result: EstimateResult) -> EstimateResult:
    """Free ``result``'s belief maps (in place): each becomes a read-only zero-stride view
    of the same shape (no memory), so the exports still state the map shape. Returns it."""
    zero = np.zeros((), dtype=np.float32)
    for p in result.persons:
        for s in p.stages:
            s.cnn_maps = np.broadcast_to(zero, np.shape(s.cnn_maps))
            s.fused_maps = np.broadcast_to(zero, np.shape(s.fused_maps))
            if s.projected_maps is not None:
                s.projected_maps = np.broadcast_to(zero, np.shape(s.projected_maps))
    return result


def drop_stage_fits(result: EstimateResult) -> EstimateResult:
    """Drop (in place) the 3D fits of every stage but the last (video exports by default:
    the last stage's fit is the result; earlier ones show how the stages refine). Returns
    ``result``."""
    for p in result.persons:
        for s in p.stages[:-1]:
            s.fit = None
    return result


#: The track settings of streamed video exports (chosen on the clips of
#: ``scripts/bench_video.py --tracks``; see docs): birth after 3 consecutive frames, a
#: detection score of at least 0.5 to start a track, 10 frames to be exported.
DEFAULT_BIRTH_FRAMES = 3
DEFAULT_BIRTH_SCORE = 0.5
DEFAULT_MIN_TRACK_FRAMES = 10


@dataclasses.dataclass
class VideoExport:
    """What :func:`export_video` did."""

    files: list[Any]
    frames: int
    """Frames in the exports (those of an earlier, resumed run included)."""
    resumed_at: int
    """Frames the partial output already held (0: a fresh start)."""
    max_people: int
    tracks: dict[str, int]
    """Track counts (:meth:`~poseviewer.video.track.TrackGate.report`)."""
    messages: list[str]


def default_tracker() -> Tracker:
    """The tracker of streamed exports (track birth on)."""
    return Tracker(birth_frames=DEFAULT_BIRTH_FRAMES, birth_score=DEFAULT_BIRTH_SCORE)


def export_video(estimator: Any, source: FrameSource, out_dir: Any, stem: str,
                 formats: Any = ("json",), frame: str = "pelvis", *, every: int = 1,
                 max_frames: int | None = None,
                 smoothing: OneEuroParams | None = DEFAULT_SMOOTHING,
                 tracker: Tracker | None = None,
                 min_track_frames: int = DEFAULT_MIN_TRACK_FRAMES, keep_maps: bool = False,
                 stage_fits: bool = False, resume: bool = False, checkpoint_every: int = 50,
                 on_frame: FrameCallback | None = None, cancel: Any = None) -> VideoExport:
    """Estimate ``source`` and write its exports as the frames come, in bounded memory
    (:class:`~poseviewer.export.stream.SequenceStreamWriter`): the same files as
    ``export_sequence(estimate_video(...))`` but without keeping the frames, people of
    tracks shorter than ``min_track_frames`` left out and ids numbered among the kept.

    Maps are dropped from each result once estimated unless ``keep_maps`` (then the NPZ
    holds them); the fits of stages before the last are dropped unless ``stage_fits``
    (each stage keeps its 2D joints: a one-person frame's JSON is ~30 kB instead of ~75).
    An interrupted run (an exception, ``KeyboardInterrupt``, ``Cancelled``)
    leaves its output in ``<out>/<stem>.partial`` and re-raises; ``resume=True``
    continues such a run from its last checkpoint. ``on_frame(done, total, result)``
    after each estimated frame."""
    from poseviewer.export.stream import SequenceStreamWriter

    if every < 1:
        raise ValueError(f"--every must be at least 1, not {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be at least 1, not {max_frames}")
    analyzer = VideoAnalyzer(estimator, smoothing,
                             tracker if tracker is not None else default_tracker())
    gate = TrackGate(min_frames=min_track_frames)
    writer = SequenceStreamWriter(
        out_dir, stem, formats, frame, source=source.name, fps=source.fps,
        smoothing=None if smoothing is None else smoothing.as_dict(),
        checkpoint_every=checkpoint_every, resume=resume, save_maps=keep_maps)
    start = writer.frames_done
    if writer.resumed and writer.resume_state is not None:
        st = writer.resume_state
        analyzer.load_state(st["analyzer"])
        gate.load_state(st)
        skip = int(st["index"]) + every
        if source.skip(skip) < skip:
            writer.abort()
            raise VideoError(f"{source.name}: shorter than the unfinished run's "
                             f"{start} frames: cannot resume")
    total = _total(source, every, max_frames)
    budget = None if max_frames is None else max_frames - start
    max_people = 0

    def emit(items: list[tuple[Any, int, float, Any]]) -> None:
        nonlocal max_people
        for result, index, time, state in items:
            max_people = max(max_people, len(result.persons))
            writer.add(result, index, time, state)

    done = start
    try:
        if budget is None or budget > 0:
            for fr in iter_frames(source, every, budget):
                check_cancel(cancel)
                result = analyzer.step(fr, cancel=cancel)
                if not keep_maps:
                    drop_maps(result)
                if not stage_fits:
                    drop_stage_fits(result)
                done += 1
                state = {"analyzer": analyzer.state(), "index": fr.index}
                emit(gate.push(result, fr.index, fr.time, state))
                if on_frame is not None:
                    on_frame(done, total, result)
        emit(gate.flush())
        if not writer.frames_done:
            raise VideoError(f"{source.name}: no frames could be read")
        messages = list(source.messages)
        files = writer.finish(messages)
    except BaseException:
        if writer.frames_done:
            writer.abort()
        else:
            writer.discard()
        raise
    return VideoExport(files=files, frames=writer.frames_done, resumed_at=start,
                       max_people=max_people, tracks=gate.report(), messages=messages)
