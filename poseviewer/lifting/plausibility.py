"""Is a lifted pose believable? (issue 22)

Two checks on the best component's fit:

- **Bone proportions.** Each bone's length over the pose's own size (the median over its
  16 bones of length / the bone's mean Human3.6M training length: one broken bone does
  not move it) is compared with its range over the Human3.6M training poses (subjects 1,
  5, 6, 7, 8), the data the 3D model was learnt from, for the limb bones (thigh, shin,
  upper arm, forearm: the bones the 2D joints span directly). Too long and too short are
  judged apart (a limb pointing at the camera often comes out short; a too long one is the
  sign of a joint on the wrong person): the largest factor by which a limb bone is longer
  than its range, over ``long_limit``, and shorter, over ``short_limit``; the larger of
  the two is ``bone_excess`` (above 1: implausible).
- **Fit residual.** The best component's least-squares residual (scale-normalised, so the
  same for any image size) over ``residual_limit`` is ``residual_excess`` (above 1:
  implausible).

The limits are not chosen by hand: ``scripts/derive_plausibility.py`` lifts the labelled 2D
joints of the LSP-extended validation split (real people) and sets each limit at the
``quantile`` of those fits (0.99: one real person in 100 is flagged by each check), and
stores them with the training ranges in ``resources/models/plausibility.json`` (the test
re-derives them). Lifted real LSP-extended people already stray far from the Human3.6M
proportions (median bone excess 1.1-1.3, 95th percentile 1.6-2.2 per bone), so only poses
beyond what real people give are flagged.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from poseviewer.paths import MODELS_DIR
from poseviewer.skeleton import H36M17

#: The stored limits (for the default 3D model).
PLAUSIBILITY_FILE = MODELS_DIR / "plausibility.json"
#: Human3.6M subjects the 3D model's training poses come from.
TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
_BONES = np.array(H36M17.bones, dtype=np.int64)


#: The limb bones judged (indices into ``H36M17.bones``): thighs, shins, upper arms,
#: forearms.
LIMB_BONES = tuple(k for k, (_, c) in enumerate(H36M17.bones) if H36M17.joints[c] in (
    "right_knee", "right_ankle", "left_knee", "left_ankle", "right_elbow", "right_wrist",
    "left_elbow", "left_wrist"))


def bone_lengths(pose_3d: np.ndarray) -> np.ndarray:
    """(..., 17, 3) H36M-17 poses -> (..., 16) bone lengths (``H36M17.bones`` order)."""
    p = np.asarray(pose_3d, dtype=np.float64)
    return np.linalg.norm(p[..., _BONES[:, 1], :] - p[..., _BONES[:, 0], :], axis=-1)


def bone_ratios(pose_3d: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """(..., 17, 3) poses -> (..., 16) bone length / the pose's size, the size being the
    median over the bones of length / ``typical`` (16,) (robust to a few broken bones)."""
    length = bone_lengths(pose_3d)
    size = np.median(length / typical, axis=-1, keepdims=True)
    return length / np.maximum(size, 1e-12)


def bone_excess(ratios: np.ndarray, lo: np.ndarray, hi: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(..., 16) ratios -> ((...) the largest factor by which a limb bone is longer than
    [lo, hi], (...) shorter; 1 when every limb bone is inside)."""
    idx = list(LIMB_BONES)
    r = np.maximum(np.asarray(ratios, dtype=np.float64), 1e-12)[..., idx]
    lo, hi = np.asarray(lo)[idx], np.asarray(hi)[idx]
    return np.maximum(r / hi, 1.0).max(-1), np.maximum(lo / r, 1.0).max(-1)


@dataclass(frozen=True)
class PlausibilityLimits:
    """The training ranges and the two limits (see the module docstring)."""

    typical: tuple[float, ...]
    """Per H36M-17 bone (``H36M17.bones`` order): its mean training length (mm)."""
    ratio_lo: tuple[float, ...]
    """Per bone: the smallest training ratio (:func:`bone_ratios`)."""
    ratio_hi: tuple[float, ...]
    long_limit: float
    """A pose with a limb bone this many times longer than its range is implausible."""
    short_limit: float
    """... or this many times shorter."""
    residual_limit: float
    """A pose whose best residual is above this is implausible."""
    quantile: float
    source: dict

    @classmethod
    def load(cls, path: str | os.PathLike[str] = PLAUSIBILITY_FILE) -> PlausibilityLimits:
        """Read the stored limits (a clear error when missing or malformed)."""
        p = Path(path)
        try:
            d = json.loads(p.read_text())
            lim = cls(typical=tuple(map(float, d["typical"])),
                      ratio_lo=tuple(map(float, d["ratio_lo"])),
                      ratio_hi=tuple(map(float, d["ratio_hi"])),
                      long_limit=float(d["long_limit"]),
                      short_limit=float(d["short_limit"]),
                      residual_limit=float(d["residual_limit"]),
                      quantile=float(d["quantile"]), source=dict(d.get("source", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the plausibility limits {p}: {exc}") from exc
        if not len(lim.typical) == len(lim.ratio_lo) == len(lim.ratio_hi) == len(_BONES):
            raise ValueError(f"{p}: need {len(_BONES)} bone ranges")
        return lim

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({**asdict(self), "bones": [list(map(int, b)) for b in _BONES]},
                          indent=1)

    def judge(self, pose_3d: np.ndarray, residual: np.ndarray, lifted: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 17, 3) poses, (N,) best residuals, (N,) lifted -> (plausible (N,) bool,
        bone excess over its limit (N,), residual over its limit (N,)); not lifted: not
        plausible, NaN."""
        lifted = np.asarray(lifted, bool)
        long, short = bone_excess(bone_ratios(pose_3d, np.asarray(self.typical)),
                                  np.asarray(self.ratio_lo), np.asarray(self.ratio_hi))
        ex = np.maximum(long / self.long_limit, short / self.short_limit)
        res = np.asarray(residual, np.float64) / self.residual_limit
        ex = np.where(lifted, ex, np.nan)
        res = np.where(lifted, res, np.nan)
        ok = lifted & (ex <= 1.0) & (res <= 1.0)
        return ok, ex, res


def judge_fit(fit: Any, limits: PlausibilityLimits | None) -> Any:
    """Fill a :class:`poseviewer.result.Fit`'s ``plausible``, ``bone_excess`` and
    ``residual_excess`` (the best component's pose and residual); returns it (unchanged
    when ``limits`` is None)."""
    if limits is None or fit is None:
        return fit
    best = np.clip(np.asarray(fit.component, dtype=np.int64), 0, None)
    res = np.take_along_axis(np.asarray(fit.components.residual, np.float64),
                             best[:, None], 1)[:, 0]
    fit.plausible, fit.bone_excess, fit.residual_excess = limits.judge(
        fit.pose_3d, res, fit.lifted)
    return fit


def judge_result(result: Any, limits: PlausibilityLimits | None) -> None:
    """:func:`judge_fit` every stage's fit of every person of an ``EstimateResult``."""
    for person in result.persons:
        for stage in person.stages:
            judge_fit(stage.fit, limits)


def training_ranges(h36m_poses: np.ndarray, subject: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bone mean length and (lo, hi) ratio over the training subjects' poses
    (N, 17, 3)."""
    keep = np.isin(subject, TRAIN_SUBJECTS)
    typical = bone_lengths(h36m_poses[keep]).mean(0)
    r = bone_ratios(h36m_poses[keep], typical)
    return typical, r.min(0), r.max(0)


def derive_limits(typical: np.ndarray, lo: np.ndarray, hi: np.ndarray, pose_3d: np.ndarray,
                  residual: np.ndarray, quantile: float = 0.99,
                  source: dict | None = None) -> PlausibilityLimits:
    """Limits at ``quantile`` of the bone excess and residual of fits of real people
    (``pose_3d`` (N, 17, 3), ``residual`` (N,), lifted ones only)."""
    long, short = bone_excess(bone_ratios(pose_3d, typical), lo, hi)
    return PlausibilityLimits(
        typical=tuple(float(v) for v in typical),
        ratio_lo=tuple(float(v) for v in lo), ratio_hi=tuple(float(v) for v in hi),
        long_limit=float(np.quantile(long, quantile)),
        short_limit=float(np.quantile(short, quantile)),
        residual_limit=float(np.quantile(residual, quantile)), quantile=quantile,
        source=dict(source or {}))
