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
from poseviewer.video.source import Frame, FrameSource, VideoError, iter_frames, prefetch
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
        """The filter's state as lists (NaN stays NaN: Python's json writes and reads it)."""
        f = self.filter

        def lst(a: np.ndarray | None) -> Any:
            return None if a is None else a.tolist()

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
    image, boxes=, on_stage=, cancel=)`` and a ``pose_model`` with ``lift``); ``smoothing``:
    the One Euro parameters, or None for none.

    ``detect_every`` (k > 1): follow the tracked people with their previous box instead of
    running the people detector, which then runs on every k-th frame only, and at once
    when a track was lost (a person missed, too few joints visible) or nobody is tracked.
    A followed box is the person's last box moved by its joints' centroid motion over the
    last frame; people entering the picture are found at the next detector frame.
    """

    #: a followed person needs this many visible joints, else the detector runs next frame
    FOLLOW_MIN_VISIBLE = 6

    def __init__(self, estimator: Any, smoothing: OneEuroParams | None = DEFAULT_SMOOTHING,
                 tracker: Tracker | None = None, detect_every: int = 1) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, not {detect_every}")
        self.estimator = estimator
        self.smoothing = smoothing
        self.tracker = tracker if tracker is not None else Tracker()
        self.detect_every = detect_every
        self._filters: dict[int, PoseSmoother] = {}
        self._follow: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] | None = None
        """Per followed person: box, joint centroid, centroid step, detection score."""
        self._since_detect = 0
        self._n = 0
        self._seen: dict[int, tuple[Any, ...]] = {}
        self._scores: dict[int, float] = {}
        self.detector_runs = 0
        """Frames on which the people detector ran."""

    def _followed_boxes(self, size: tuple[int, int]) -> np.ndarray | None:
        if self.detect_every <= 1 or not self._follow or \
                self._since_detect >= self.detect_every:
            return None
        w, h = size
        out = []
        for box, _, step, _ in self._follow:
            b = box + np.r_[step, step]
            if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
                return None  # leaving the picture: let the detector look
            out.append(b)
        return np.array(out)

    def _remember(self, persons: list[Any], followed: bool) -> None:
        """What the next frame needs to follow these people (None: run the detector).
        The detector runs again while a track is tentative (so that a new person can be
        seen in consecutive frames) or a confirmed one was missed."""
        self._n += 1
        tracks = self.tracker.tracks
        confirmed = {t.id for t in tracks if t.confirmed and t.missing == 0}
        lost = any(not t.confirmed or t.missing for t in tracks)
        follow = []
        for p in persons:
            if p.track_id is None or p.track_id not in confirmed:
                continue
            vis = np.asarray(p.final.visible, dtype=bool)
            if vis.sum() < self.FOLLOW_MIN_VISIBLE:
                lost = True
                continue
            c = np.asarray(p.final.joints_2d, dtype=np.float64)[vis].mean(axis=0)
            last = self._seen.get(p.track_id)  # (centroid, frame, detector centroid, frame)
            if last is None:
                step = np.zeros(2)
            elif followed:
                step = (c - last[0]) / max(1, self._n - last[1])
            else:  # over the frames since the last detection (no jump of the correction)
                step = (c - last[2]) / max(1, self._n - last[3])
            det = (last[2], last[3]) if followed and last is not None else (c, self._n)
            self._seen[p.track_id] = (c, self._n, *det)
            score = float(p.score) if p.source != "tracked" else self._scores.get(
                p.track_id, float(p.score))
            self._scores[p.track_id] = score
            follow.append((np.asarray(p.box, dtype=np.float64), c, step, score))
        live = {t.id for t in tracks}
        self._seen = {k: v for k, v in self._seen.items() if k in live}
        self._scores = {k: v for k, v in self._scores.items() if k in live}
        self._follow = None if lost or not follow else follow

    def step(self, frame: Frame, on_stage: Any = None, cancel: Any = None) -> EstimateResult:
        """Estimate ``frame`` (frames must come in time order), set the people's ids and
        smooth their joints."""
        h, w = frame.rgb.shape[:2]
        boxes = self._followed_boxes((w, h))
        followed = boxes is not None
        if followed:
            self._since_detect += 1
            result = self.estimator.estimate(frame.rgb, boxes=boxes, on_stage=on_stage,
                                             cancel=cancel)
            for p, f in zip(result.persons, self._follow, strict=False):
                p.source, p.score = "tracked", f[3]
        else:
            self._since_detect = 1
            self.detector_runs += 1
            result = self.estimator.estimate(frame.rgb, on_stage=on_stage, cancel=cancel)
        persons = result.persons
        if not persons:
            self.tracker.update(np.zeros((0, 4)))
            self._follow = None
            self._n += 1
            return result
        boxes = np.stack([p.box for p in persons])
        joints = np.stack([p.final.joints_2d for p in persons])
        ids = self.tracker.update(boxes, joints, np.array([p.score for p in persons]))
        for p, i in zip(persons, ids, strict=True):
            p.track_id = None if i is None else int(i)
        live = {t.id for t in self.tracker.tracks}
        self._filters = {k: v for k, v in self._filters.items() if k in live}
        if self.detect_every > 1:
            self._remember(persons, followed)
        if self.smoothing is not None:
            self._smooth(result, frame.time)
        return result

    def state(self) -> dict[str, Any]:
        """The tracker's and the filters' state after the last frame, as JSON types."""
        follow = None if self._follow is None else [
            [b.tolist(), c.tolist(), st.tolist(), sc] for b, c, st, sc in self._follow]
        return {"tracker": self.tracker.state(),
                "filters": {str(k): f.state() for k, f in self._filters.items()},
                "follow": follow, "since_detect": self._since_detect,
                "detector_runs": self.detector_runs, "n": self._n,
                "seen": {str(k): [np.asarray(v[0]).tolist(), v[1], np.asarray(v[2]).tolist(),
                                  v[3]] for k, v in self._seen.items()},
                "scores": {str(k): v for k, v in self._scores.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` (a resumed run)."""
        self.tracker.load_state(state["tracker"])
        follow = state.get("follow")
        self._follow = None if follow is None else [
            (np.array(b), np.array(c), np.array(st), float(sc)) for b, c, st, sc in follow]
        self._since_detect = int(state.get("since_detect", 0))
        self.detector_runs = int(state.get("detector_runs", 0))
        self._n = int(state.get("n", 0))
        self._seen = {int(k): (np.array(v[0]), int(v[1]), np.array(v[2]), int(v[3]))
                      for k, v in state.get("seen", {}).items()}
        self._scores = {int(k): float(v) for k, v in state.get("scores", {}).items()}
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
            lift_joints = getattr(self.estimator, "lift_joints", None)
            fit = lift_joints(smoothed, vis, result.image_size) if lift_joints else \
                Fit.from_lift(model.lift(smoothed, vis, as_numpy=True))
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
#: ``poseviewer estimate --detect-every``: the people detector on every K-th video frame
#: (see ``scripts/bench_video.py --speed`` and docs/video.md for the measurements).
DEFAULT_DETECT_EVERY = 1
#: ``poseviewer estimate --realtime``: the 2D network stopped after its first stage and
#: the people detector on every 10th frame (with the single pass videos run by default);
#: measured in docs/video.md (speed, and the validation PCK of stopping after stage 1).
REALTIME_STAGES = 1
REALTIME_DETECT_EVERY = 10


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
    person_frames: int = 0
    """People in the exported frames, counted once per frame they appear in."""
    implausible: int = 0
    """Of ``person_frames``, those whose 3D pose is implausible
    (``PersonResult.implausible``)."""


def default_tracker() -> Tracker:
    """The tracker of streamed exports (track birth on)."""
    return Tracker(birth_frames=DEFAULT_BIRTH_FRAMES, birth_score=DEFAULT_BIRTH_SCORE)


def export_video(estimator: Any, source: FrameSource, out_dir: Any, stem: str,
                 formats: Any = ("json",), frame: str = "pelvis", *, every: int = 1,
                 max_frames: int | None = None,
                 smoothing: OneEuroParams | None = DEFAULT_SMOOTHING,
                 tracker: Tracker | None = None,
                 min_track_frames: int = DEFAULT_MIN_TRACK_FRAMES, keep_maps: bool = False,
                 stage_fits: bool = False, detect_every: int = 1,
                 decode_thread: bool = True, resume: bool = False, checkpoint_every: int = 50,
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
    continues such a run from its last checkpoint. ``detect_every``: see
    :class:`VideoAnalyzer`. ``decode_thread``: decode ahead in a thread
    (:func:`~poseviewer.video.source.prefetch`). ``on_frame(done, total, result)`` after
    each estimated frame."""
    from poseviewer.export.stream import SequenceStreamWriter

    if every < 1:
        raise ValueError(f"--every must be at least 1, not {every}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be at least 1, not {max_frames}")
    analyzer = VideoAnalyzer(estimator, smoothing,
                             tracker if tracker is not None else default_tracker(),
                             detect_every=detect_every)
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
    counts = {"person_frames": 0, "implausible": 0}
    if writer.resumed and writer.resume_state is not None:
        counts.update({k: int(writer.resume_state.get(k, 0)) for k in counts})

    def emit(items: list[tuple[Any, int, float, Any]]) -> None:
        nonlocal max_people
        for result, index, time, state in items:
            max_people = max(max_people, len(result.persons))
            counts["person_frames"] += len(result.persons)
            counts["implausible"] += sum(p.implausible for p in result.persons)
            state.update(counts)
            writer.add(result, index, time, state)

    done = start
    try:
        if budget is None or budget > 0:
            frames = iter_frames(source, every, budget)
            for fr in prefetch(frames) if decode_thread else frames:
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
                       max_people=max_people, tracks=gate.report(), messages=messages,
                       **counts)
