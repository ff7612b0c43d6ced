"""People followed over time: each person keeps an id from frame to frame.

The people of a new frame are matched to the tracks (the people of earlier frames) by the
Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on

    cost = (1 - IoU of the boxes) + joint_weight * min(1, mean joint distance / box diagonal)

A pair is allowed only when its boxes overlap by at least ``min_iou``. Unmatched people
start new ids (0, 1, 2, ... in order of appearance); a track unmatched for more than
``max_missing`` frames ends, so a person who leaves and returns later gets a new id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Tracker:
    """Assigns ids to the people of consecutive frames (see the module docstring)."""

    min_iou: float = 0.2
    """Boxes overlapping less than this are never the same person."""
    joint_weight: float = 0.5
    """Weight of the joint distance in the cost."""
    max_missing: int = 2
    """Frames a track may go unmatched (a missed detection) before it ends."""
    tracks: list[_Track] = field(default_factory=list)
    next_id: int = 0

    def update(self, boxes: np.ndarray, joints: np.ndarray | None = None) -> list[int]:
        """Ids for the people of the next frame: ``boxes`` (P, 4), ``joints`` (P, J, 2) in
        image pixels (NaN allowed) or None."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        ids = [-1] * n
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
            t.missing = 0 if t.id in matched else t.missing + 1
        self.tracks = [t for t in self.tracks if t.missing <= self.max_missing]
        by_id = {t.id: t for t in self.tracks}
        for i in range(n):
            if ids[i] < 0:
                ids[i] = self.next_id
                self.next_id += 1
                by_id[ids[i]] = _Track(ids[i], boxes[i], None)
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
