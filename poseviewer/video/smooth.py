"""The One Euro filter (Casiez, Roussel, Vogel, CHI 2012), vectorised over arrays.

For each value x at time t (seconds), with dt since the value's previous sample::

    alpha(fc) = 1 / (1 + tau / dt),   tau = 1 / (2 pi fc)
    dx   = (x - x_prev) / dt,   dx_hat = alpha(d_cutoff) dx + (1 - alpha(d_cutoff)) dx_prev
    fc   = min_cutoff + beta |dx_hat|
    x_hat = alpha(fc) x + (1 - alpha(fc)) x_hat_prev

A slowly moving value is smoothed hard (cut-off ``min_cutoff``); a fast one follows with
little lag (the cut-off rises by ``beta`` per unit of speed). The first sample passes
unchanged. Values masked out (an invisible joint) pass unchanged and leave that value's
state as it was, so a joint that reappears continues from where it was last seen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    """Parameters of the One Euro filter as the video pipeline uses it on 2D joints.

    The pipeline filters joints in units of the person's height (the box height when the
    person was first seen), so the same parameters suit any resolution.
    """

    min_cutoff: float = 1.5
    """Hz: the cut-off frequency at rest (lower: smoother, more lag when slow)."""
    beta: float = 2.0
    """Hz per (person height / second): how fast the cut-off rises with speed (higher:
    less lag when fast, more jitter)."""
    d_cutoff: float = 1.0
    """Hz: the cut-off of the speed estimate."""

    def __post_init__(self) -> None:
        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise ValueError("One Euro filter: min_cutoff and d_cutoff must be > 0 and "
                             f"beta >= 0 (got {self})")

    def as_dict(self) -> dict[str, Any]:
        return {"filter": "one_euro", **asdict(self)}


def _alpha(cutoff: np.ndarray | float, dt: np.ndarray) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """A One Euro filter over arrays of one fixed shape (each element filtered alone)."""

    def __init__(self, params: OneEuroParams | None = None) -> None:
        self.params = params or OneEuroParams()
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: np.ndarray | None = None
        """Per element: time of its last sample (NaN: never seen)."""

    def __call__(self, x: Any, t: float, mask: Any = None) -> np.ndarray:
        """The filtered ``x`` at time ``t`` (seconds, increasing). ``mask`` (broadcast to
        ``x``): False elements pass unchanged and keep their state; non-finite values too."""
        x = np.asarray(x, dtype=np.float64)
        use = np.isfinite(x)
        if mask is not None:
            use &= np.broadcast_to(np.asarray(mask, dtype=bool), x.shape)
        if self.x is None:
            self.x = np.where(use, x, np.nan)
            self.dx = np.zeros_like(x)
            self.t = np.where(use, float(t), np.nan)
            return x.copy()
        if x.shape != self.x.shape:
            raise ValueError(f"One Euro filter: shape {x.shape}, expected {self.x.shape}")
        p = self.params
        seen = use & np.isfinite(self.t)
        first = use & ~np.isfinite(self.t)
        out = x.copy()
        if seen.any():
            dt = np.maximum(float(t) - self.t[seen], 1e-6)
            dx = (x[seen] - self.x[seen]) / dt
            dx_hat = _alpha(p.d_cutoff, dt) * dx + (1.0 - _alpha(p.d_cutoff, dt)) * self.dx[seen]
            a = _alpha(p.min_cutoff + p.beta * np.abs(dx_hat), dt)
            out[seen] = a * x[seen] + (1.0 - a) * self.x[seen]
            self.dx[seen] = dx_hat
        self.x[use] = out[use]
        self.t[use] = float(t)
        self.dx[first] = 0.0
        return out
