"""3D pose error metrics (millimetres in, millimetres out), batched over leading axes.

Every function takes ``pred`` and ``gt`` of shape (..., J, 3) and returns the per-pose
error (...,): the mean over joints of the Euclidean joint distance after an alignment.

- ``mpjpe``: no alignment.
- ``root_mpjpe``: both poses translated so that joint ``root`` is at the origin.
- ``scaled_mpjpe``: root centred, then ``pred`` scaled by the least-squares factor
  ``<pred, gt> / <pred, pred>`` (the "N-MPJPE" of Rhodin et al. 2018).
- ``p_mpjpe``: similarity Procrustes: ``pred`` rotated (proper rotation, no reflection),
  uniformly scaled and translated to best fit ``gt`` in least squares (Umeyama 1991).
"""

from __future__ import annotations

import numpy as np


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape; got {p.shape} and {g.shape}")
    if p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"poses must have shape (..., J, 3); got {p.shape}")
    return p, g


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean per-joint position error without alignment, (...,)."""
    p, g = _check(pred, gt)
    return np.linalg.norm(p - g, axis=-1).mean(axis=-1)


def root_mpjpe(pred: np.ndarray, gt: np.ndarray, root: int = 0) -> np.ndarray:
    """MPJPE after translating both poses so that joint ``root`` is at the origin."""
    p, g = _check(pred, gt)
    return mpjpe(p - p[..., root : root + 1, :], g - g[..., root : root + 1, :])


def align_scale(pred: np.ndarray, gt: np.ndarray, root: int = 0) -> np.ndarray:
    """Root-centre both poses and scale ``pred`` to best fit ``gt``; returns aligned pred
    (the root-centred gt is ``gt - gt[..., root]``)."""
    p, g = _check(pred, gt)
    p = p - p[..., root : root + 1, :]
    g = g - g[..., root : root + 1, :]
    num = (p * g).sum(axis=(-1, -2))
    den = (p * p).sum(axis=(-1, -2))
    s = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return p * s[..., None, None]


def scaled_mpjpe(pred: np.ndarray, gt: np.ndarray, root: int = 0) -> np.ndarray:
    """MPJPE after root centring and least-squares scale alignment (N-MPJPE), (...,)."""
    p, g = _check(pred, gt)
    return mpjpe(align_scale(p, g, root), g - g[..., root : root + 1, :])


def align_similarity(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` after the similarity transform (rotation, scale, translation) that best
    fits it to ``gt`` in least squares (Umeyama; reflections excluded)."""
    p, g = _check(pred, gt)
    mp = p.mean(axis=-2, keepdims=True)
    mg = g.mean(axis=-2, keepdims=True)
    p0, g0 = p - mp, g - mg
    cov = np.swapaxes(p0, -1, -2) @ g0  # (..., 3, 3): sum_j p_j g_j^T
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    fix = np.ones(s.shape)
    fix[..., -1] = d
    rot = (u * fix[..., None, :]) @ vt  # p0 @ rot best matches g0
    var_p = (p0**2).sum(axis=(-1, -2))
    scale = (s * fix).sum(axis=-1) / np.where(var_p > 0, var_p, 1.0)
    return scale[..., None, None] * (p0 @ rot) + mg


def p_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """MPJPE after similarity Procrustes alignment of ``pred`` onto ``gt``, (...,)."""
    p, g = _check(pred, gt)
    return mpjpe(align_similarity(p, g), g)
