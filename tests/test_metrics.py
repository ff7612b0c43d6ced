"""3D pose metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from poseviewer.metrics import (
    align_similarity,
    mpjpe,
    p_mpjpe,
    root_mpjpe,
    scaled_mpjpe,
)


def _poses(n: int = 6, j: int = 17, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=300.0, size=(n, j, 3))


def test_mpjpe_hand_computed() -> None:
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]])  # distances 5 and 2
    np.testing.assert_allclose(mpjpe(pred, gt), [3.5])
    # a translated copy: MPJPE is the shift, root MPJPE is zero
    g = _poses()
    shift = np.array([10.0, -20.0, 5.0])
    np.testing.assert_allclose(mpjpe(g + shift, g), np.linalg.norm(shift))
    np.testing.assert_allclose(root_mpjpe(g + shift, g), 0.0, atol=1e-9)


def test_p_mpjpe_of_rotated_scaled_translated_copy_is_zero() -> None:
    g = _poses()
    rot = Rotation.random(len(g), random_state=1).as_matrix()
    pred = 0.37 * np.einsum("nij,nkj->nki", rot, g) + np.array([100.0, -50.0, 900.0])
    assert (mpjpe(pred, g) > 50).all()
    np.testing.assert_allclose(p_mpjpe(pred, g), 0.0, atol=1e-8)
    np.testing.assert_allclose(align_similarity(pred, g), g, atol=1e-8)


def test_p_mpjpe_excludes_reflections() -> None:
    # a mirrored copy of a non-planar, asymmetric pose cannot be aligned by a rotation
    g = _poses(1)
    pred = g * np.array([-1.0, 1.0, 1.0])
    assert p_mpjpe(pred, g)[0] > 10.0


def test_p_mpjpe_hand_computed_two_points_scale() -> None:
    # best similarity maps a segment onto any segment exactly; for 3 collinear points
    # with uneven spacing the residual is computable by hand.
    gt = np.array([[[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]]])
    pred = np.array([[[0.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0]]])
    # 1D least squares: centred gt (-4/3, -1/3, 5/3), pred (-5/3, 1/3, 4/3);
    # s = <p,g>/<p,p> = (20/9 - 1/9 + 20/9) / (25/9 + 1/9 + 16/9) = 39/42
    s = 39 / 42
    p = np.array([-5 / 3, 1 / 3, 4 / 3]) * s
    gc = np.array([-4 / 3, -1 / 3, 5 / 3])
    np.testing.assert_allclose(p_mpjpe(pred, gt), [np.abs(p - gc).mean()], atol=1e-12)


def test_scaled_mpjpe() -> None:
    g = _poses()
    pred = 2.5 * (g - g[:, :1]) + 7.0
    np.testing.assert_allclose(scaled_mpjpe(pred, g), 0.0, atol=1e-9)
    # a rotated copy is not aligned by scale alone
    rot = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    assert (scaled_mpjpe(g @ rot.T, g) > 10).all()
    # hand-computed: root at origin, one more joint; pred (2,0,0) vs gt (1,1,0):
    # s = 2/4 -> (1,0,0), error |(0,1,0)| = 1 at that joint, 0 at the root -> 0.5
    gt = np.array([[[0.0, 0, 0], [1.0, 1.0, 0]]])
    pred = np.array([[[0.0, 0, 0], [2.0, 0, 0]]])
    np.testing.assert_allclose(scaled_mpjpe(pred, gt), [0.5])


def test_batch_shapes_and_errors() -> None:
    g = _poses(12).reshape(3, 4, 17, 3)
    assert p_mpjpe(g, g).shape == (3, 4)
    with pytest.raises(ValueError, match="same shape"):
        mpjpe(g, g[:, :2])
    with pytest.raises(ValueError, match=r"\(\.\.\., J, 3\)"):
        mpjpe(np.zeros((3, 2)), np.zeros((3, 2)))
