"""People followed over time: each person keeps an id from frame to frame.

The people of a new frame are matched to the tracks (the people of earlier frames) by the
Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on

    cost = (1 - IoU of the boxes) + joint_weight * min(1, mean joint distance / box diagonal)

A pair is allowed only when its boxes overlap by at least ``min_iou``. Unmatched people
start new ids (0, 1, 2, ... in order of appearance); a track unmatched for more than
``max_missing`` frames ends, so a person who leaves and returns later gets a new id.

Track birth (``birth_frames``, ``birth_score``): an unmatched person starts a track only
when its detection score is at least ``birth_score``; the track is *tentative* until it
has been matched in ``birth_frames`` consecutive frames (then *confirmed*), and a tentative
track ends at its first miss. Confirmed tracks live through up to ``max_missing`` misses.
:class:`TrackGate` then drops, from exports, the people of tracks that lasted fewer than
``min_frames`` frames (a flickering false detection) and numbers the kept tracks 0, 1, 2...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) boxes (x0, y0, x1, y1) -> (N, M) intersection over union."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass
class _Track:
    id: int
    box: np.ndarray
    joints: np.ndarray | None
    missing: int = 0
    streak: int = 1
    """Consecutive frames matched up to now."""
    confirmed: bool = True

    def state(self) -> dict[str, Any]:
        return {"id": self.id, "box": self.box.tolist(), "missing": self.missing,
                "joints": None if self.joints is None else self.joints.tolist(),
                "streak": self.streak, "confirmed": self.confirmed}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> _Track:
        return cls(int(d["id"]), np.array(d["box"], dtype=np.float64),
                   None if d["joints"] is None else np.array(d["joints"], dtype=np.float64),
                   int(d["missing"]), int(d["streak"]), bool(d["confirmed"]))


@dataclass
class Tracker:
    """Assigns ids to the people of consecutive frames (see the module docstring)."""

    min_iou: float = 0.2
    """Boxes overlapping less than this are never the same person."""
    joint_weight: float = 0.5
    """Weight of the joint distance in the cost."""
    max_missing: int = 2
    """Frames a confirmed track may go unmatched (a missed detection) before it ends."""
    birth_frames: int = 1
    """Consecutive frames a new track must be matched in before it is confirmed."""
    birth_score: float = 0.0
    """Lowest detection score that starts a track (lower ones may only continue one)."""
    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 0

    def state(self) -> dict[str, Any]:
        """The tracker's state as JSON types (:meth:`load_state` restores it)."""
        return {"tracks": [t.state() for t in self.tracks], "next_id": self.next_id}

    def load_state(self, d: dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""
        self.tracks = [_Track.from_state(t) for t in d["tracks"]]
        self.next_id = int(d["next_id"])

    def update(self, boxes: np.ndarray, joints: np.ndarray | None = None,
               scores: np.ndarray | None = None) -> list[int | None]:
        """Ids for the people of the next frame: ``boxes`` (P, 4), ``joints`` (P, J, 2) in
        image pixels (NaN allowed) or None, ``scores`` (P,) detection scores (None: all
        1). A person whose score is below ``birth_score`` and who continues no track gets
        None."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        scores = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64)
        ids: list[int | None] = [-1] * n
        if self.tracks and n:
            prev = np.stack([t.box for t in self.tracks])
            iou = box_iou(prev, boxes)
            cost = 1.0 - iou
            if joints is not None and self.joint_weight > 0:
                cost = cost + self.joint_weight * self._joint_cost(boxes, joints)
            cost = np.where(iou >= self.min_iou, cost, 1e6)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] < 1e6:
                    ids[c] = self.tracks[r].id
        matched = set(ids)
        for t in self.tracks:
            if t.id in matched:
                t.missing = 0
                t.streak += 1
                t.confirmed = t.confirmed or t.streak >= self.birth_frames
            else:
                t.missing += 1
                t.streak = 0
        self.tracks = [t for t in self.tracks
                       if t.missing <= (self.max_missing if t.confirmed else 0)]
        by_id = {t.id: t for t in self.tracks}
        for i in range(n):
            if ids[i] == -1:
                if scores[i] < self.birth_score:
                    ids[i] = None
                    continue
                ids[i] = self.next_id
                self.next_id += 1
                by_id[ids[i]] = _Track(ids[i], boxes[i], None,
                                       confirmed=self.birth_frames <= 1)
                self.tracks.append(by_id[ids[i]])
            t = by_id[ids[i]]
            t.box = boxes[i]
            t.joints = None if joints is None else np.asarray(joints[i], dtype=np.float64)
        return ids

    def _joint_cost(self, boxes: np.ndarray, joints: np.ndarray) -> np.ndarray:
        out = np.zeros((len(self.tracks), len(boxes)))
        diag = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        for r, t in enumerate(self.tracks):
            if t.joints is None:
                continue
            d = np.linalg.norm(np.asarray(joints, dtype=np.float64) - t.joints[None], axis=-1)
            with np.errstate(invalid="ignore"):
                mean = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan
                                 for row in d])
            out[r] = np.where(np.isfinite(mean), np.minimum(1.0, mean / np.maximum(diag, 1.0)),
                              0.0)
        return out


@dataclass
class TrackGate:
    """Holds the last ``window`` frames back and drops, from what it passes on, the people
    whose track was seen in fewer than ``min_frames`` frames by the time their frame leaves
    (at the end of the clip: fewer than ``min(min_frames, frames in the clip)``). The kept
    tracks are numbered 0, 1, 2, ... in order of appearance. Counts what it did
    (:meth:`report`).

    Items are ``(result, index, time, state)``; ``state`` is a dict (JSON types) the gate
    adds its own counters to (``gate``) so that a resumed run continues exactly.
    """

    min_frames: int = 10
    window: int | None = None
    """Frames held back (default ``2 * min_frames``)."""
    handoff_frames: int = 5
    """A kept track that starts within this many frames of another's end, where that one
    was last seen (box IoU >= 0.3), counts as a suspected id switch."""
    counts: dict[int, int] = field(default_factory=dict)
    public: dict[int, int] = field(default_factory=dict)
    last_seen: dict[int, tuple[int, list[float]]] = field(default_factory=dict)
    pushed: int = 0
    emitted: int = 0
    people_dropped: int = 0
    id_switches: int = 0
    _held: list[tuple[Any, int, float, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, not {self.min_frames}")

    @property
    def _window(self) -> int:
        return self.window if self.window is not None else 2 * self.min_frames

    def push(self, result: Any, index: int, time: float, state: dict[str, Any] | None = None
             ) -> list[tuple[Any, int, float, Any]]:
        """Take the next frame; returns the frames that leave the window (oldest first)."""
        for p in result.persons:
            if p.track_id is not None:
                self.counts[p.track_id] = self.counts.get(p.track_id, 0) + 1
        self.pushed += 1
        state = dict(state or {})
        state["gate_counts"] = {str(k): v for k, v in self.counts.items()}
        state["gate_pushed"] = self.pushed
        self._held.append((result, index, time, state))
        out = []
        while len(self._held) > self._window:
            out.append(self._emit(self.min_frames))
        return out

    def flush(self) -> list[tuple[Any, int, float, Any]]:
        """The frames still held (the end of the clip)."""
        need = min(self.min_frames, self.pushed)
        return [self._emit(need) for _ in range(len(self._held))]

    def _emit(self, need: int) -> tuple[Any, int, float, Any]:
        result, index, time, state = self._held.pop(0)
        pos = self.emitted
        kept = []
        for p in result.persons:
            if p.track_id is None or self.counts.get(p.track_id, 0) < need:
                self.people_dropped += 1
                continue
            tid = p.track_id
            if tid not in self.public:
                self._note_birth(pos, p.box)
                self.public[tid] = len(self.public)
            p.track_id = self.public[tid]
            self.last_seen[p.track_id] = (pos, [float(v) for v in p.box])
            kept.append(p)
        result.persons = kept
        self.emitted += 1
        state = dict(state)
        state["gate_emit"] = self._emit_state()
        return result, index, time, state

    def _note_birth(self, pos: int, box: Any) -> None:
        for last, lbox in self.last_seen.values():
            if 0 < pos - last <= self.handoff_frames and \
                    box_iou(np.array(lbox), np.asarray(box))[0, 0] >= 0.3:
                self.id_switches += 1
                return

    def _emit_state(self) -> dict[str, Any]:
        return {"public": {str(k): v for k, v in self.public.items()},
                "last_seen": {str(k): v for k, v in self.last_seen.items()},
                "emitted": self.emitted, "people_dropped": self.people_dropped,
                "id_switches": self.id_switches}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue after the frame whose (emitted) ``state`` this is."""
        self.counts = {int(k): int(v) for k, v in state["gate_counts"].items()}
        self.pushed = int(state["gate_pushed"])
        e = state["gate_emit"]
        self.public = {int(k): int(v) for k, v in e["public"].items()}
        self.last_seen = {int(k): (int(v[0]), list(v[1])) for k, v in e["last_seen"].items()}
        self.emitted = int(e["emitted"])
        self.people_dropped = int(e["people_dropped"])
        self.id_switches = int(e["id_switches"])
        self._held = []

    def report(self) -> dict[str, int]:
        """Track counts: ids the tracker gave, ids exported, ids dropped (too short),
        people dropped from frames, suspected id switches."""
        return {"tracks_seen": len(self.counts), "tracks_exported": len(self.public),
                "tracks_dropped": len(self.counts) - len(self.public),
                "people_dropped": self.people_dropped, "id_switches": self.id_switches}
