"""Whom to look at: a prior on a crop's belief maps from the target's box and the other
people's boxes (issue 22).

A person's crop also holds their neighbours, and the 2D network, trained on photos with one
labelled person, answers with whichever wrist is strongest. The prior is a log-weight per
map pixel, added to every joint's logits (so a softmax map is multiplied by its exp):

- ``outside``: minus ``outside`` x (distance outside the target's box, in units of the
  box's longer side);
- ``neighbour``: minus ``neighbour`` x max over the other people of
  max(0, rho_target - rho_other), rho_X the distance to box X's centre in units of its half
  sides (an ellipse norm): where a pixel belongs more to another person than to the target,
  the target's joints are less believed there.

The weights are logits. :data:`DEFAULT_PRIOR` was chosen on 40 composed crowded scenes
(``poseviewer eval-2d --crowd --scenes 40 --crowd-seed 7``, a seed apart from the reported
set's): the neighbour term took the wrong joints that lie on a neighbour's same joint from
13.6 % to 7.2 % (weights 0, 2, 4, 8, 16 tried: 13.6, 11.3, 9.2, 7.2, 6.1 %; limb joints
right 57.6, 58.2, 58.5, 58.2, 57.0 %); the outside term (5, 20) changed nothing measurable,
so it is off. Applying the prior at every residual stage instead of once lowered the limb
joints right (57.0 % at weight 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TargetPrior:
    """Weights of the prior's two terms (logits); both 0 switches it off."""

    outside: float = 0.0
    neighbour: float = 0.0

    @property
    def active(self) -> bool:
        """True when any term has a weight."""
        return self.outside > 0 or self.neighbour > 0


#: The Estimator's default: the neighbours' term only (see the module docstring).
DEFAULT_PRIOR = TargetPrior(outside=0.0, neighbour=8.0)


def _rho(xy: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Ellipse-normalised distance of points (..., 2) to a box's centre (1 on the inscribed
    ellipse)."""
    c = (box[:2] + box[2:]) / 2
    half = np.maximum((box[2:] - box[:2]) / 2, 1e-6)
    return np.linalg.norm((xy - c) / half, axis=-1)


def _outside(xy: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Distance of points (..., 2) outside a box (0 inside), in units of its longer side."""
    d = np.maximum(np.maximum(box[:2] - xy, xy - box[2:]), 0.0)
    return np.linalg.norm(d, axis=-1) / max(float((box[2:] - box[:2]).max()), 1e-6)


def log_prior(settings: TargetPrior, target: np.ndarray, others: np.ndarray,
              map_to_image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 log-weights on one crop's map grid.

    target: (4,) x0 y0 x1 y1 image pixels; others: (M, 4) the other people's boxes;
    map_to_image: (2, 3) map grid (x, y, 1) -> image pixels; shape: (h, w) of the maps.
    """
    h, w = shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    xy = np.stack([gx, gy], axis=-1) @ map_to_image[:, :2].T + map_to_image[:, 2]
    target = np.asarray(target, np.float64)
    out = np.zeros((h, w))
    if settings.outside > 0:
        out -= settings.outside * _outside(xy, target)
    others = np.asarray(others, np.float64).reshape(-1, 4)
    if settings.neighbour > 0 and len(others):
        rt = _rho(xy, target)
        worst = np.zeros((h, w))
        for b in others:
            worst = np.maximum(worst, rt - _rho(xy, b))
        out -= settings.neighbour * worst
    return out.astype(np.float32)
